"""Two gloo processes with different local batches take identical decisions and keep identical
parameters, with full gradients on every rank (ZeRO 0 / DDP) and with each rank regulating its
own flat partition (ZeRO 1/2, emulated: averaged flat gradient, per-rank partition step,
all-gather); and both layouts train the same model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from inforeg.config import RegulatorConfig
from inforeg.groups import ModalityGroups
from inforeg.kernels import (
    FlatGradients,
    GradientView,
    HeadFragment,
    ModelGradients,
    ParamGradients,
)
from inforeg.regulators import build_regulator
from tests.conftest import free_port
from tests.inforeg.tiny import tiny_batch, tiny_model

WORLD = 2
EPOCHS, STEPS = 3, 2
CONFIGS = {
    "inforeg": RegulatorConfig(schedule="always", unimodal_loss=True),
    "inforeg_window": RegulatorConfig(threshold=-1.0),  # opens at epoch 2 from the traces
    "ogm": RegulatorConfig(name="ogm"),
    "ogm_ge": RegulatorConfig(name="ogm_ge"),
    "pmr": RegulatorConfig(name="pmr"),
    "agm": RegulatorConfig(name="agm"),
    # the clip fires at most steps: a low bound on the head's gradient, a small norm
    "agm_clip": RegulatorConfig(name="agm", agm_clip_threshold=0.01, agm_clip_norm=0.1),
    "gblending": RegulatorConfig(name="gblending", gblending_super_epoch=1),
    "mmpareto": RegulatorConfig(name="mmpareto"),
}


def run_case(rank: int, cfg: RegulatorConfig, layout: str) -> dict[str, Any]:
    model = tiny_model(seed=0)  # identical initial weights on every rank
    params = list(model.parameters())
    groups = ModalityGroups.from_model(model)
    sizes = [p.numel() for p in params]
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    total = offsets[-1]
    if layout == "zero0":
        view: GradientView = ParamGradients(groups, contiguous=True)
        whole = ModelGradients.of_model(view, model, model.head.weight)
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    else:  # this rank's partition of one flat fp32 master copy; cut inside a parameter
        cut = (total + 1) // 2  # DeepSpeed-style equal partitions (the last one padded)
        if layout == "zero2_head":  # the cut inside the head weight: each rank holds a part
            head = next(i for i, p in enumerate(params) if p is model.head.weight)
            cut = offsets[head] + params[head].numel() // 2 + 1
        size = max(cut, total - cut)  # the padded partition size
        lo, hi = (0, cut) if rank == 0 else (cut, total)
        master = torch.cat([p.detach().flatten() for p in params])
        part = torch.nn.Parameter(master[lo:hi].clone())
        segments = []
        for p, a, b in zip(params, offsets, offsets[1:], strict=False):
            s, e = max(a, lo), min(b, hi)
            seg = groups.segment(p, start=s - lo, length=e - s, offset=s - a) if s < e else None
            if seg is not None:
                segments.append(seg)
        part.grad = torch.zeros_like(part)
        view = FlatGradients(part.grad, part.detach(), segments, groups)
        whole = ModelGradients.over_flat(
            [view], tuple(model.head.weight.shape), head_fragments(params, offsets, lo, hi, model)
        )
        opt = torch.optim.SGD([part], lr=0.05, momentum=0.9)
    reg = build_regulator(
        cfg, groups, view, model.head, encoders=model.encoders, model_gradients=whole
    )
    decisions = []
    for epoch in range(EPOCHS):
        reg.on_epoch_start(epoch)
        for step in range(STEPS):
            data = tiny_batch(model, 4, seed=100 * (epoch * STEPS + step) + rank)  # local batch
            loss = reg.loss(model(data), data["label"])
            for p in params:
                p.grad = None
            loss.backward()
            if layout == "zero0":
                for p in params:  # what DDP / ZeRO 0 leave: the averaged full gradient
                    dist.all_reduce(p.grad)
                    p.grad /= WORLD
            else:
                flat = torch.cat([p.grad.flatten() for p in params])
                dist.all_reduce(flat)
                flat /= WORLD
                part.grad.copy_(flat[lo:hi])  # this rank's partition of the averaged gradient
            reg.on_gradients()
            opt.step()
            if layout != "zero0":  # all-gather the partitions into the working weights
                pieces = [torch.zeros(size) for _ in range(WORLD)]
                padded = torch.zeros(size)
                padded[: hi - lo] = part.detach()
                dist.all_gather(pieces, padded)
                full = torch.cat([pieces[0][:cut], pieces[1][: total - cut]])
                with torch.no_grad():
                    for p, a, b in zip(params, offsets, offsets[1:], strict=False):
                        p.copy_(full[a:b].view_as(p))
            decisions.append({k: float(v) for k, v in reg.step_metrics().items()})
        reg.on_epoch_end(epoch)
    return {
        "decisions": decisions,
        "history": reg.history,
        "windows": reg.windows,
        "params": torch.cat([p.detach().flatten() for p in params]),
        "buffers": torch.cat([b.flatten().float() for b in model.buffers()]),
    }


def head_fragments(
    params: list[torch.nn.Parameter], offsets: list[int], lo: int, hi: int, model: Any
) -> list[HeadFragment]:
    """Where this rank's partition [lo, hi) holds the head weight (none if elsewhere)."""
    i = next(i for i, p in enumerate(params) if p is model.head.weight)
    s, e = max(offsets[i], lo), min(offsets[i + 1], hi)
    return (
        [HeadFragment(view=0, start=s - lo, length=e - s, offset=s - offsets[i])] if s < e else []
    )


def worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        results = {
            (name, layout): run_case(rank, cfg, layout)
            for name, cfg in CONFIGS.items()
            for layout in ("zero0", "zero2", *(("zero2_head",) if name.startswith("agm") else ()))
        }
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_gloo_ranks_decide_identically_and_stay_identical(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for key in r0:
        a, b = r0[key], r1[key]
        assert a["decisions"] == b["decisions"], key  # scores, gaps, alpha: global batch
        assert a["history"] == b["history"] and a["windows"] == b["windows"], key
        assert torch.equal(a["params"], b["params"]), key
    for name in CONFIGS:
        if name == "ogm_ge":  # GE noise is drawn per partition: the runs part after one step
            continue
        full = r0[(name, "zero0")]
        for layout in ("zero2", "zero2_head") if name.startswith("agm") else ("zero2",):
            part = r0[(name, layout)]
            # partial sums all-reduced across ranks give the full-gradient traces (sum order)
            for m in full["history"]:
                assert part["history"][m] == pytest.approx(full["history"][m], rel=1e-5)
            assert part["windows"] == full["windows"]
            torch.testing.assert_close(part["params"], full["params"], rtol=0, atol=1e-5)
            for d, e in zip(part["decisions"], full["decisions"], strict=True):
                assert d.keys() == e.keys()
                for k in d:  # the clip's head abs-max, norm and factor from the partitions
                    if k.split(".")[0] in ("head_absmax", "grad_norm", "clip"):
                        assert d[k] == pytest.approx(e[k], rel=1e-5), (name, layout, k)
    clips = [d["clip.audio"] for d in r0[("agm_clip", "zero2_head")]["decisions"]]
    assert min(clips) < 1.0  # it fired
    regulated = [d["regulated.audio"] + d["regulated.video"] for d in r0[("inforeg", "zero2")]
                 ["decisions"]]  # fmt: skip
    assert sum(regulated) > 0
    assert any(any(w) for w in r0[("inforeg_window", "zero0")]["windows"])
