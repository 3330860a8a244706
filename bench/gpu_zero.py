"""GPU check: the bf16 InfoReg step under DeepSpeed ZeRO-2 with NCCL, one rank.

The trainer's own glue (`launch.zero`: `ZeroGradients`, the pre-step hook): DeepSpeed steps
flat fp32 master partitions, the regulator's Triton pass runs on this rank's partition in the
pre-step hook of the torch optimizer DeepSpeed wraps. The same proof as the one-GPU step
(`bench.gpu_proof`) on the flat partition: the pass changed the leading modality's master
gradients by exactly alpha (w - anchor), and SGD's momentum buffer took them. The CPU tests run
this path with gloo on a tiny model.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import torch
from torch import Tensor

from bench.cuda_time import spans_for
from bench.gpu_proof import Snapshot, prove
from bench.gpu_train import (
    StepConfig,
    StepReport,
    applied_alpha,
    inforeg_always,
    memory_batches,
    scored_loss,
)
from inforeg.groups import ModalityGroups
from inforeg.kernels import FlatGradients
from inforeg.model import MultimodalModel

ZERO2 = {  # deepspeed_configs/zero2.json (a test keeps them equal)
    "stage": 2,
    "contiguous_gradients": True,
    "overlap_comm": False,
    "reduce_scatter": True,
    "reduce_bucket_size": 50000000,
    "allgather_bucket_size": 50000000,
}


def ds_config(micro_batch: int, bf16: bool) -> dict[str, Any]:
    """zero2.json (+ bf16.json) as the trainer merges them (`launch.zero.deepspeed_config`)."""
    cfg: dict[str, Any] = {
        "zero_optimization": dict(ZERO2),
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if bf16:
        cfg["bf16"] = {"enabled": True}
    return cfg


def one_rank_env(accelerator: str) -> None:
    """What a launcher sets for a one-rank job (never overriding a launcher's values)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):  # fmt: skip
        os.environ.setdefault(key, value)
    os.environ.setdefault("DS_ACCELERATOR", accelerator)


class ZeroRun:
    """A DeepSpeed engine over `model` with InfoReg in the pre-step hook, and its timed steps."""

    def __init__(self, model: MultimodalModel, cfg: StepConfig, device: torch.device, bf16: bool):
        import deepspeed

        from launch.zero import ZeroGradients, add_pre_step_hook, base_optimizer, compute_dtype

        self.cfg, self.device = cfg, device
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=opt, config=ds_config(cfg.batch, bf16)
        )
        self.dtype = compute_dtype(self.engine)
        for buffer in model.buffers():  # as the trainer: BatchNorm statistics in the compute dtype
            if buffer.is_floating_point():
                buffer.data = buffer.data.to(self.dtype)
        self.groups = ModalityGroups.from_model(model)
        gradients = ZeroGradients.of(self.engine, model, self.groups)
        views, self.by_id = gradients.views, gradients.flat_by_id
        if not self.by_id:
            raise RuntimeError("ZeRO-2 gave no flat partitions to regulate")
        self.regulator = inforeg_always(self.groups, views, model.head)
        self.base = base_optimizer(self.engine)
        self.spans = spans_for(device)
        self.snap: dict[str, Any] | None = None  # filled by the hook on a proved step
        add_pre_step_hook(self.engine, self._before_step)

    def _before_step(self, opt: torch.optim.Optimizer) -> None:
        (flat,) = [p for g in opt.param_groups for p in g["params"]]
        view = self.by_id[id(flat)]
        assert flat.grad is not None
        view.bind(flat.grad)
        if self.snap is not None:
            self.snap.update(before=flat.grad.float().clone(), weight=flat.detach().clone())
        self.spans.start("pass")
        self.regulator.on_gradients()
        self.spans.stop("pass")
        if self.snap is not None:
            buf = opt.state.get(flat, {}).get("momentum_buffer")
            self.snap.update(after=flat.grad.float().clone(), view=view, flat=flat,
                             buf_old=None if buf is None else buf.clone())  # fmt: skip

    def step(self, batch: dict[str, Tensor], timed: bool) -> None:
        if timed:
            self.spans.start("step")
        cast = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in batch.items()}
        out = self.engine(cast)
        self.spans.start("loss")
        loss = scored_loss(self.regulator, out, batch["label"])
        self.spans.stop("loss")
        self.engine.backward(loss)
        self.engine.step()  # the regulator's pass runs in the pre-step hook
        if timed:
            self.spans.stop("step")

    def proved_step(self, batch: dict[str, Tensor]) -> tuple[bool, str]:
        self.snap = {}
        self.step(batch, timed=False)
        s, self.snap = self.snap, None
        view: FlatGradients = s["view"]
        buf_new = self.base.state[s["flat"]]["momentum_buffer"].float()
        assert view.anchor is not None
        snap = Snapshot(s["before"], s["after"], s["weight"], view.anchor, s["buf_old"], buf_new)
        alpha = applied_alpha(self.regulator)
        return prove(snap, view.segments, self.groups, alpha, self.cfg.momentum,
                     self.cfg.weight_decay)  # fmt: skip


def run_zero2(
    model: MultimodalModel, cfg: StepConfig, device: torch.device, bf16: bool
) -> StepReport:
    """Warm-up, timed steps, one proved step (torch.distributed already initialised)."""
    run = ZeroRun(model, cfg, device, bf16)
    batches = memory_batches(cfg, device)
    run.regulator.on_epoch_start(0)
    for i in range(cfg.warmup):
        run.step(batches[i % len(batches)], timed=False)
    run.spans = spans_for(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(cfg.steps):
        run.step(batches[i % len(batches)], timed=True)
    sync()
    wall = time.perf_counter() - t0
    ms = run.spans.total_ms()
    proved, proof = run.proved_step(batches[0])
    return StepReport(
        samples_per_s=cfg.batch * cfg.steps / wall,
        step_ms=ms["step"] / cfg.steps,
        pass_ms=ms["pass"] / run.spans.count("pass"),
        loss_ms=ms["loss"] / run.spans.count("loss"),
        proved=proved,
        proof=proof,
    )


def check_zero2() -> tuple[str, str]:
    try:
        import deepspeed
    except ImportError as e:
        return "FAIL", f"DeepSpeed cannot be imported ({e}): install the bundle"
    from bench.gpu_kernel import resnet18_pair

    one_rank_env("cuda")
    torch.cuda.set_device(0)
    deepspeed.init_distributed(dist_backend="nccl")
    backend = torch.distributed.get_backend()
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    cfg = StepConfig()
    report = run_zero2(resnet18_pair("cuda"), cfg, torch.device("cuda"), bf16=True)
    torch.distributed.destroy_process_group()
    ok = report.proved and backend == "nccl"
    return ("PASS" if ok else "FAIL"), (
        f"DeepSpeed {deepspeed.__version__} ZeRO-2 bf16, {backend} on 1 rank: "
        + report.line(cfg.batch)
    )
