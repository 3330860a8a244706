"""The one training loop: every method (joint, OGM-GE, InfoReg, InfoReg*) runs through it.

The regulator reacts to the loop's events (`inforeg.regulators.Event`); the loop itself only
moves batches, logs, evaluates and checkpoints. One epoch, in order::

    data.train.set_epoch(epoch); regulator.on_epoch_start(epoch)    # fit
    for batch in data.train:                                        # run_epoch
        out = engine(batch)                                         # train_step: forward
        loss = regulator.loss(out, labels)                          #   scores, decision
        engine.backward(loss)                                       #   gradients reduced (ZeRO)
        engine.step() -> before_optimizer_step(optimizer)           #   pre-step hook:
                           gradients.bind(optimizer)                #     this step's ZeRO grads
                           regulator.on_gradients()                 #     the one fused pass
                      -> optimizer.step()                           #   the update
        every log_every steps: write_step_record()                  # one host sync
    regulator.on_epoch_end(epoch); evaluate(); EpochRecord; save()  # end_epoch

Host syncs: one per log line (the step record), one per checkpoint and per epoch end; none per
step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from inforeg.functional import unimodal_logits
from inforeg.metrics import confusion_matrix, summarize
from inforeg.model import ModelOutput, MultimodalModel
from inforeg.regulators import Regulator
from launch import checkpoint
from launch.config import TrainConfig, lr_at
from launch.data import Data
from launch.distributed import DistInfo
from launch.flops import ModelFlops
from launch.logs import RunLog
from launch.profiling import PhaseClock, Tracer
from launch.records import EpochRecord, StepRecord, modality_fields, per_modality
from launch.zero import ZeroGradients, add_pre_step_hook, compute_dtype

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops, keeping the last good checkpoint."""


@dataclass
class Window:
    """What the next step record reports, kept on device until it is written.

    ``sums``: the loss (and non-finite count) summed over the window's steps (logged as means);
    ``last``: the regulator's decision at the window's last step (score, gap, alpha, regulated),
    logged as it was, so a record can be checked against METHOD.md on its own.
    """

    steps: int = 0
    samples: int = 0
    data_wait_s: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    sums: dict[str, Tensor] = field(default_factory=dict)
    last: dict[str, Tensor] = field(default_factory=dict)

    def add(self, values: dict[str, Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().to(torch.float64)
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps, "samples": self.samples, "sums": self.sums, "last": self.last}

    @staticmethod
    def restore(state: dict[str, Any], device: torch.device) -> Window:
        w = Window(steps=state["steps"], samples=state["samples"])
        w.sums = {k: v.to(device) for k, v in state["sums"].items()}
        w.last = {k: v.to(device) for k, v in state["last"].items()}
        return w


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        engine: DeepSpeedEngine,
        model: MultimodalModel,
        regulator: Regulator,
        gradients: ZeroGradients,
        data: Data,
        dist_info: DistInfo,
        out_dir: Path,
        flops: ModelFlops | None = None,
        peak_tflops: float | None = None,
    ):
        self.cfg = cfg
        self.engine = engine
        self.model = model
        self.regulator = regulator
        self.gradients = gradients
        self.data = data
        self.dist = dist_info
        self.out_dir = out_dir
        self.ckpt_root = out_dir / "checkpoints"
        self.modalities = list(model.modalities)
        self.head = model.head
        self.num_classes = len(data.info.classes)
        self.epoch = 0
        self.step = 0  # optimizer steps taken so far (the next step's number)
        self.batches_in_epoch = 0
        self.epoch_sums: dict[str, Tensor] = {}
        self.epoch_time_s = 0.0
        self.window = Window()
        self.best_acc = -math.inf
        self.log: RunLog | None = None
        self.compute_dtype = compute_dtype(engine)
        self.flops = flops
        self.peak_tflops = peak_tflops
        self.clock = PhaseClock(dist_info.device)
        profile = cfg.run.profile
        traced = profile.steps > 0 and dist_info.rank in profile.ranks
        self.tracer = (
            Tracer(out_dir, profile.start_step, profile.steps, dist_info.rank, profile.with_stack)
            if traced
            else None
        )
        add_pre_step_hook(engine, self.before_optimizer_step)

    # ----- checkpoints -------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        assert self.log is not None
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batches_in_epoch": self.batches_in_epoch,
            "loader": self.data.train.state_dict(),
            "regulator": self.regulator.state_dict(),
            "rng": checkpoint.rng_state(),
            "epoch_sums": self.epoch_sums,
            "epoch_time_s": self.epoch_time_s,
            "window": self.window.state(),
            "best_acc": self.best_acc,
            "metrics_offset": self.log.offset(),
            # BatchNorm statistics differ per rank between evaluations (DeepSpeed saves rank 0's)
            "buffers": {k: v.detach().clone() for k, v in self.model.named_buffers()},
        }

    def restore(self, tag: str) -> int:
        """Load a checkpoint; return the metrics.jsonl offset to cut the log back to."""
        state = checkpoint.load(
            self.engine, self.ckpt_root, tag, self.dist.rank, self.dist.world_size
        )
        device = self.dist.device
        self.epoch, self.step = state["epoch"], state["step"]
        self.batches_in_epoch = state["batches_in_epoch"]
        self.regulator.load_state_dict(state["regulator"])
        self.data.train.load_state_dict(state["loader"])
        checkpoint.set_rng_state(state["rng"])
        self.epoch_sums = {k: v.to(device) for k, v in state["epoch_sums"].items()}
        self.epoch_time_s = state["epoch_time_s"]
        self.window = Window.restore(state["window"], device)
        self.best_acc = state["best_acc"]
        with torch.no_grad():
            for name, buf in self.model.named_buffers():
                buf.copy_(state["buffers"][name])
        return int(state["metrics_offset"])

    def save(self) -> None:
        self.check_finite()
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()
        if not bool(finite.item()):  # note: host sync, once per checkpoint
            raise NonFiniteLoss(
                f"non-finite parameters at step {self.step} (epoch {self.epoch}); the run stops, "
                f"the last good checkpoint is kept in {self.ckpt_root}"
            )
        checkpoint.save(
            self.engine,
            self.ckpt_root,
            self.step,
            self.epoch,
            self.dist.rank,
            self.dist.world_size,
            self.trainer_state(),
            self.cfg.run.keep_checkpoints,
        )

    # ----- the loop ----------------------------------------------------------------------
    def check_finite(self) -> None:
        bad = self.epoch_sums.get("nonfinite_steps")
        if bad is not None and bad.item() > 0:  # note: host sync (log lines, checkpoints only)
            first = int(self.epoch_sums["first_nonfinite_step"].item())
            raise NonFiniteLoss(
                f"non-finite loss at step {first} (epoch {self.epoch}); the run stops, the last "
                f"good checkpoint is kept in {self.ckpt_root}"
            )

    def cast(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Floating inputs in the engine's compute dtype (bf16/fp16 runs keep fp32 batches)."""
        if self.compute_dtype == torch.float32:
            return batch
        return {
            k: v.to(self.compute_dtype) if v.is_floating_point() else v for k, v in batch.items()
        }

    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        out: ModelOutput = self.engine(self.cast(batch))
        if out.logits.dtype != torch.float32:  # the losses and scores in fp32
            out = ModelOutput(logits=out.logits.float(), features=out.features)
        return out

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The pre-step event, inside `engine.step()`: gradients averaged across ranks and
        unscaled; the regulator's one fused pass over them, before the update."""
        self.clock.mark("optimizer")  # engine.step's work before the hook (unscaling, ZeRO 1)
        with self.clock.phase("regulator", self.tracing, "regulator.fused_pass"):
            self.gradients.bind(optimizer)
            self.regulator.on_gradients()

    @property
    def tracing(self) -> bool:
        return self.tracer is not None and self.tracer.active

    def train_step(self, batch: dict[str, Tensor]) -> None:
        clock, tracing = self.clock, self.tracing
        with clock.phase("forward", tracing):
            out = self.forward(batch)
        with clock.phase("regulator", tracing, "regulator.loss"):  # CE; scores, decision
            loss = self.regulator.loss(out, batch["label"])
        with clock.phase("backward", tracing):  # ZeRO reduces gradients here (stage 2)
            self.engine.backward(loss)
        with clock.phase("optimizer", tracing):  # before_optimizer_step, then the update
            self.engine.step()
        finite = torch.isfinite(loss.detach())
        step_t = torch.full((), float(self.step), device=loss.device, dtype=torch.float64)
        first_bad = self.epoch_sums.get("first_nonfinite_step")
        if first_bad is None:
            first_bad = torch.full((), -1.0, device=loss.device, dtype=torch.float64)
        self.epoch_sums["first_nonfinite_step"] = torch.where(
            (~finite) & (first_bad < 0), step_t, first_bad
        )
        values = {"loss": torch.where(finite, loss.detach(), torch.zeros_like(loss)).double()}
        values["nonfinite_steps"] = (~finite).double()
        self.window.add(values)
        self.window.last = self.regulator.step_metrics()
        for k in ("loss", "nonfinite_steps"):
            v = values[k]
            self.epoch_sums[k] = self.epoch_sums[k] + v if k in self.epoch_sums else v.clone()

    def write_step_record(self) -> None:
        assert self.log is not None
        w = self.window
        wall = time.perf_counter() - w.start
        keys = [*w.sums, *w.last]
        values = torch.stack([*w.sums.values(), *(v.double() for v in w.last.values())])
        synced = dict(zip(keys, values.tolist(), strict=True))  # note: the record's one host sync
        if synced["nonfinite_steps"] > 0:
            self.check_finite()
        last = {k: synced[k] for k in w.last}
        fields = {name: per_modality(last, name, self.modalities) for name in modality_fields(last)}
        record = StepRecord(
            epoch=self.epoch,
            step=self.step - 1,
            loss=synced["loss"] / max(1, w.steps),
            score=fields.pop("score"),
            gap=fields.pop("gap"),
            alpha=fields.pop("alpha"),
            regulated=fields.pop("regulated"),
            extra=fields,
            lr=self.engine.optimizer.param_groups[0]["lr"],
            samples_per_s=w.samples * self.dist.world_size / wall if wall > 0 else None,
            data_wait_frac=w.data_wait_s / wall if wall > 0 else None,
            phases=self.clock.fractions(),
            **self.achieved(w.samples / wall if wall > 0 else None),
        )
        self.log.write(record, tb_step=self.step - 1)
        self.log.show_rate(record.samples_per_s)
        self.window = Window()
        self.clock.reset()

    def achieved(self, samples_per_s_per_rank: float | None) -> dict[str, float | None]:
        """TFLOP/s per device from the counted FLOPs per sample, and MFU where a peak is known."""
        if self.flops is None or samples_per_s_per_rank is None:
            return {"tflops": None, "mfu": None}
        tflops = self.flops.total * samples_per_s_per_rank / 1e12
        mfu = tflops / self.peak_tflops if self.peak_tflops else None
        return {"tflops": tflops, "mfu": mfu}

    def run_epoch(self) -> None:
        cfg = self.cfg
        loader = self.data.train
        lr = lr_at(cfg.optim, self.epoch, cfg.run.epochs)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        total = len(loader)
        if cfg.run.max_steps_per_epoch:
            total = min(total, cfg.run.max_steps_per_epoch)
        assert self.log is not None
        self.log.progress(total, self.batches_in_epoch, f"epoch {self.epoch}", cfg.run.progress)
        epoch_start = time.perf_counter()
        self.window.start = time.perf_counter()
        self.clock.reset()
        it = iter(loader)
        while self.batches_in_epoch < total:
            if self.tracer is not None:
                self.tracer.before_step(self.step)
            self.clock.mark("other")  # the loop's own work since the last step
            t0 = time.perf_counter()
            with self.clock.phase("data_wait", self.tracing):
                batch = next(it, None)
            if batch is None:
                break
            self.window.data_wait_s += time.perf_counter() - t0
            self.train_step(batch)
            if self.tracer is not None:
                self.tracer.after_step(self.step)
            self.step += 1
            self.batches_in_epoch += 1
            self.window.steps += 1
            self.window.samples += int(batch["label"].shape[0])
            self.log.advance()
            if self.step % cfg.run.log_every == 0:
                self.write_step_record()
            if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0:
                self.epoch_time_s += time.perf_counter() - epoch_start
                self.save()
                epoch_start = time.perf_counter()
        self.log.end_progress()
        self.epoch_time_s += time.perf_counter() - epoch_start

    @torch.no_grad()
    def average_buffers(self) -> None:
        """Average BatchNorm running statistics across ranks (each rank saw other batches), so
        every rank evaluates, and goes on training, with the same ones."""
        if not dist.is_initialized() or self.dist.world_size == 1:
            return
        floats = [b for b in self.model.buffers() if b.is_floating_point()]
        if floats:
            flat = torch.cat([b.reshape(-1).float() for b in floats])
            dist.all_reduce(flat)
            flat /= self.dist.world_size
            offset = 0
            for b in floats:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.average_buffers()
        self.model.eval()
        device = self.dist.device
        n = self.num_classes
        joint = torch.zeros(n, n, dtype=torch.int64, device=device)
        per_modality = {m: torch.zeros_like(joint) for m in self.modalities}
        for batch in self.data.eval:
            out = self.forward(batch)
            labels = batch["label"]
            self.regulator.on_eval_batch(out, labels)  # G-Blending's validation losses
            joint += confusion_matrix(out.logits, labels, n)
            for m, logits in unimodal_logits(out.features, self.head).items():
                per_modality[m] += confusion_matrix(logits, labels, n)
        if dist.is_initialized():
            stacked = torch.stack([joint, *per_modality.values()])
            dist.all_reduce(stacked)
            joint, rest = stacked[0], stacked[1:]
            per_modality = dict(zip(per_modality, rest, strict=True))
        self.model.train()
        return summarize(joint.cpu(), {m: c.cpu() for m, c in per_modality.items()})

    def end_epoch(self) -> None:
        assert self.log is not None
        if self.window.steps:  # a partial window: its record closes the epoch's steps
            self.write_step_record()
        self.check_finite()
        traces = self.regulator.on_epoch_end(self.epoch)  # reduced across ranks: one host sync
        metrics = self.evaluate()
        steps = max(1, self.batches_in_epoch)
        samples = steps * self.cfg.data.batch_size * self.dist.world_size
        record = EpochRecord(
            epoch=self.epoch,
            trace=per_modality(traces, "trace", self.modalities),
            window_open=per_modality(traces, "window_open", self.modalities),
            acc=metrics["acc"],
            macro_f1=metrics["macro_f1"],
            branch_acc=per_modality(metrics, "acc", self.modalities),
            loss=float(self.epoch_sums["loss"].item()) / steps,
            epoch_time_s=self.epoch_time_s,
            samples_per_s=samples / self.epoch_time_s if self.epoch_time_s > 0 else None,
        )
        self.log.write(record, tb_step=self.epoch)
        if metrics["acc"] > self.best_acc:
            self.best_acc = metrics["acc"]
            self.save_weights("best_model.pt")
        self.epoch += 1
        self.batches_in_epoch = 0
        self.epoch_sums = {}
        self.epoch_time_s = 0.0
        self.save()

    def save_weights(self, name: str) -> None:
        if self.dist.is_main:
            torch.save(self.model.state_dict(), self.out_dir / name)

    def fit(self, resume_tag: str | None) -> None:
        offset = self.restore(resume_tag) if resume_tag else None
        self.log = RunLog(self.out_dir, self.dist.is_main, offset, self.step)
        try:
            while self.epoch < self.cfg.run.epochs:
                if self.batches_in_epoch == 0:
                    self.data.train.set_epoch(self.epoch)
                    self.regulator.on_epoch_start(self.epoch)
                self.run_epoch()
                self.end_epoch()
            self.save_weights("last_model.pt")
        finally:
            if self.tracer is not None:
                self.tracer.close()
            self.log.close()
