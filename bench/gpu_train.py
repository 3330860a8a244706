"""GPU check: one GPU training the paper's audio-video ResNet-18 model in bf16 with InfoReg.

Fed from a few batches already on the device (the loaders are out of the measurement, so the
figure is the rate they must sustain). torch autocast in bf16 over fp32 weights, SGD 0.9 / 1e-4
/ 2e-3 (the official settings), InfoReg with ``schedule=always`` so that every step regulates
the leading modality, the contiguous gradient view so that the pass is the one Triton launch.

Reported: samples/s over the timed steps (host clock around synchronised steps: what training
gets), the regulator's share of the step's device time (its fused pass, and its loss() with the
scores), the loader rate this GPU needs, and the proof (`bench.gpu_proof`) that one step's
gradients were changed by exactly the pull and that SGD consumed them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench.cuda_time import spans_for
from bench.gpu_proof import Snapshot, prove
from inforeg.config import RegulatorConfig
from inforeg.groups import ModalityGroups
from inforeg.kernels import ParamGradients
from inforeg.model import ModelOutput, MultimodalModel
from inforeg.regulators import Regulator, build_regulator


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    batch: int = 64
    frames: int = 3
    size: int = 224
    audio: tuple[int, int] = (257, 188)  # log-STFT bins x frames of 3 s at 22.05 kHz
    classes: int = 6
    warmup: int = 5
    steps: int = 20
    in_memory: int = 4  # distinct batches, cycled
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class StepReport:
    samples_per_s: float
    step_ms: float  # device time per step
    pass_ms: float  # the regulator's fused pass per step
    loss_ms: float  # the regulator's loss() (CE + scores) per step
    proved: bool
    proof: str

    def line(self, batch: int) -> str:
        return (
            f"{self.samples_per_s:,.0f} samples/s (batch {batch}, {self.step_ms:.1f} ms/step); "
            f"regulator pass {self.pass_ms * 1e3:.0f} us = {self.pass_ms / self.step_ms:.2%} of "
            f"the step, loss()+scores {self.loss_ms * 1e3:.0f} us; loaders must sustain "
            f">= {self.samples_per_s:,.0f} samples/s per GPU; {self.proof}"
        )


def memory_batches(cfg: StepConfig, device: torch.device, seed: int = 0) -> list[dict[str, Tensor]]:
    """`cfg.in_memory` batches of the contract's shapes, on `device` (random, labelled)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for _ in range(cfg.in_memory):
        out.append({
            "audio": torch.randn(cfg.batch, 1, *cfg.audio, generator=gen, device=device),
            "video": torch.randn(cfg.batch, cfg.frames, 3, cfg.size, cfg.size, generator=gen,
                                 device=device),
            "label": torch.randint(0, cfg.classes, (cfg.batch,), generator=gen, device=device),
        })  # fmt: skip
    return out


def inforeg_always(groups: ModalityGroups, views: object, head: nn.Linear) -> Regulator:
    """InfoReg (paper) regulating the leading modality at every step."""
    cfg = RegulatorConfig(name="inforeg", schedule="always")
    return build_regulator(cfg, groups, views, head)  # type: ignore[arg-type]


def scored_loss(regulator: Regulator, out: ModelOutput, labels: Tensor) -> Tensor:
    """The regulator's loss on fp32 logits (the losses in fp32, as the trainer) and features in
    the head's dtype (its slices score each modality: fp32 under autocast, bf16 under ZeRO)."""
    dtype = regulator.head.weight.dtype
    cast = ModelOutput(
        logits=out.logits.float(), features={m: f.to(dtype) for m, f in out.features.items()}
    )
    return regulator.loss(cast, labels)


def applied_alpha(regulator: Regulator) -> Tensor:
    """(M,) this step's applied pull: alpha where the modality was regulated, else 0."""
    metrics = regulator.step_metrics()
    return torch.stack(
        [metrics[f"alpha.{m}"] * metrics[f"regulated.{m}"] for m in regulator.modalities]
    ).float()


def momentum_of(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> Tensor | None:
    """The SGD momentum buffers of `params`, flattened in order (None before the first step)."""
    bufs = [opt.state.get(p, {}).get("momentum_buffer") for p in params]
    if any(b is None for b in bufs):
        return None
    return torch.cat([b.reshape(-1) for b in bufs if b is not None]).float()


def train_plain(
    model: MultimodalModel, cfg: StepConfig, device: torch.device, dtype: torch.dtype
) -> StepReport:
    """Timed steps then one proved step; `dtype` bf16 (autocast) or fp32 (the CPU tests)."""
    groups = ModalityGroups.from_model(model)
    view = ParamGradients(groups, contiguous=True)
    regulator = inforeg_always(groups, view, model.head)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    batches = memory_batches(cfg, device)
    spans = spans_for(device)
    regulator.on_epoch_start(0)

    def step(b: dict[str, Tensor], timed: bool) -> None:
        if timed:
            spans.start("step")
        opt.zero_grad(set_to_none=False)  # in place: the gradients stay views of the buffer
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(b)
        spans.start("loss")
        loss = scored_loss(regulator, out, b["label"])
        spans.stop("loss")
        loss.backward()
        spans.start("pass")
        regulator.on_gradients()
        spans.stop("pass")
        opt.step()
        if timed:
            spans.stop("step")

    for i in range(cfg.warmup):
        step(batches[i % len(batches)], timed=False)
    spans = spans_for(device)  # warm-up spans dropped
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(cfg.steps):
        step(batches[i % len(batches)], timed=True)
    sync()
    wall = time.perf_counter() - t0
    ms = spans.total_ms()
    proved, proof = proved_step(model, regulator, view, opt, batches[0], dtype, cfg)
    return StepReport(
        samples_per_s=cfg.batch * cfg.steps / wall,
        step_ms=ms["step"] / cfg.steps,
        pass_ms=ms["pass"] / spans.count("pass"),
        loss_ms=ms["loss"] / spans.count("loss"),
        proved=proved,
        proof=proof,
    )


def proved_step(
    model: MultimodalModel,
    regulator: Regulator,
    view: ParamGradients,
    opt: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    dtype: torch.dtype,
    cfg: StepConfig,
) -> tuple[bool, str]:
    """One more step with snapshots around the pass and the optimizer step."""
    params = view.groups.parameters()
    device = batch["label"].device
    opt.zero_grad(set_to_none=False)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        out = model(batch)
    scored_loss(regulator, out, batch["label"]).backward()
    fset = view.flat_set()
    assert fset is not None and fset.anchor is not None
    before = fset.grad.float().clone()
    regulator.on_gradients()
    after, weight = fset.grad.float().clone(), fset.weight.float().clone()
    buf_old = momentum_of(opt, params)
    opt.step()
    buf_new = momentum_of(opt, params)
    assert buf_new is not None
    snap = Snapshot(before, after, weight, fset.anchor.clone(), buf_old, buf_new)
    alpha = applied_alpha(regulator)
    return prove(snap, fset.segments, view.groups, alpha, cfg.momentum, cfg.weight_decay)


def check_train_bf16() -> tuple[str, str]:
    from bench.gpu_kernel import resnet18_pair

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    cfg = StepConfig()
    report = train_plain(resnet18_pair(device), cfg, device, torch.bfloat16)
    return ("PASS" if report.proved else "FAIL"), "1 GPU, autocast bf16: " + report.line(cfg.batch)
