"""The trainer's configuration: typed sections, YAML as their serialised form.

``configs/NAME.yaml`` holds the sections below; any key can be overridden on the command line as
``dotted.key=value`` (e.g. ``regulator.name=inforeg run.epochs=3``). Unknown keys, wrong types and
impossible values stop the run before anything is built, with the key named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from inforeg.config import RegulatorConfig
from inforeg.model import ModelConfig
from inforeg.regulators import regulator_class
from launch.typed import ConfigError, apply_overrides, from_mapping, read_yaml, to_mapping
from pipelines import PIPELINES, LoaderSpec


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    dir: str
    """Folder written by `inforeg-preprocess build` (holds dataset.json)."""
    pipeline: str = "ffcv"
    """Which loader (`pipelines.PIPELINES`): ffcv | dali | reference."""
    frames: int = 3
    """K frames per clip (random in train, evenly spaced in eval)."""
    size: int = 224
    """Frames are cropped/resized to size x size."""
    batch_size: int = 64
    """Samples per rank per step (DeepSpeed's train_micro_batch_size_per_gpu)."""
    eval_batch_size: int = 0
    """0: the same as batch_size."""
    workers: int = 2
    """Loader worker threads/processes per rank."""
    train_split: str = "train"
    eval_split: str = ""
    """Split evaluated every epoch; empty: val if the dataset has one, else test (as the peers)."""
    order: Literal["random", "quasi_random", "sequential"] = "random"
    """Training sample order (FFCV's orders; the other loaders support random and sequential)."""
    os_cache: bool = True
    """FFCV: read through the OS page cache (True) or FFCV's own process cache (False)."""

    def __post_init__(self) -> None:
        for name in ("frames", "size", "batch_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_batch_size < 0:
            raise ValueError("data.eval_batch_size must be >= 0")
        if self.pipeline not in PIPELINES:
            raise ValueError(
                f"data.pipeline: must be one of {tuple(PIPELINES)}, got {self.pipeline!r}"
            )

    def loader_spec(
        self, split: str, train: bool, seed: int, rank: int, world_size: int, device: torch.device
    ) -> LoaderSpec:
        """The loader of `split` (train: this config's batch size and order; eval: sequential,
        eval_batch_size) for one rank."""
        return LoaderSpec(
            pipeline=self.pipeline,
            data_dir=Path(self.dir),
            split=split,
            train=train,
            batch_size=self.batch_size if train else self.eval_batch_size or self.batch_size,
            frames=self.frames,
            size=self.size,
            workers=self.workers,
            seed=seed,
            rank=rank,
            world_size=world_size,
            device=device,
            order=self.order if train else "sequential",
            os_cache=self.os_cache,
        )


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Literal["step", "constant", "cosine"] = "step"
    step_size: int = 30
    """StepLR: epochs between decays."""
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.step_size < 1:
            raise ValueError(f"optim.step_size must be >= 1, got {self.step_size}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0 or not 0 < self.gamma <= 1:
            raise ValueError("optim: need 0 <= momentum < 1, weight_decay >= 0, 0 < gamma <= 1")


@dataclass(frozen=True, kw_only=True)
class ProfileConfig:
    """A torch.profiler trace of a window of steps (docs/profiling.md); off when steps is 0."""

    start_step: int = 0
    """The first optimizer step traced (0-based, counted over the whole run)."""
    steps: int = 0
    """How many steps are traced; 0: no trace."""
    ranks: tuple[int, ...] = (0,)
    """The ranks that write a trace (each its own file)."""
    with_stack: bool = False
    """Record Python stacks too (larger traces, more overhead)."""

    def __post_init__(self) -> None:
        for name in ("start_step", "steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"run.profile.{name} must be >= 0, got {getattr(self, name)}")
        if any(r < 0 for r in self.ranks):
            raise ValueError(f"run.profile.ranks must be ranks >= 0, got {self.ranks}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    epochs: int
    seed: int = 0
    log_every: int = 10
    """Steps between step records in metrics.jsonl (one host sync each)."""
    checkpoint_every: int = 0
    """Steps between mid-epoch checkpoints; 0: only at epoch ends."""
    keep_checkpoints: int = 2
    out_dir: str = "runs/default"
    threads: int = 0
    """CPU intra-op threads per rank; 0: the node's cores divided among its ranks."""
    max_steps_per_epoch: int = 0
    """Stop each epoch after this many steps (benchmarks, smoke tests); 0: the whole epoch."""
    progress: bool = True
    """A progress bar on rank 0 (batches/s; samples/s as of the last step record)."""
    peak_tflops: float = 0.0
    """The device's dense peak TFLOP/s for MFU; 0: from the table of known GPUs (launch/flops.py),
    none on a CPU (MFU then omitted)."""
    profile: ProfileConfig = field(default_factory=ProfileConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"run.epochs must be >= 1, got {self.epochs}")
        for name in ("log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name} must be >= 1, got {getattr(self, name)}")
        if not self.peak_tflops >= 0:
            raise ValueError(f"run.peak_tflops must be >= 0, got {self.peak_tflops}")
        for name in ("checkpoint_every", "threads", "max_steps_per_epoch"):
            if getattr(self, name) < 0:
                raise ValueError(f"run.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    regulator: RegulatorConfig = field(default_factory=RegulatorConfig)
    run: RunConfig

    def __post_init__(self) -> None:
        method = regulator_class(self.regulator.name)
        fusion = method.required_fusion
        if fusion is not None and self.model.fusion != fusion:
            raise ValueError(
                f"regulator.name: {method.name} needs model.fusion: {fusion} (its "
                f"cross-modal modules), got model.fusion: {self.model.fusion}"
            )
        if method.needs_encoders and self.model.fusion != "concat":
            raise ValueError(
                f"regulator.name: {method.name} runs the encoders on their own, which is not "
                f"the model's function with model.fusion: {self.model.fusion}; use concat"
            )


def lr_at(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """The learning rate of an epoch (a pure function, so resuming needs no scheduler state)."""
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    if cfg.schedule == "cosine":
        import math

        return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / max(1, epochs)))
    return cfg.lr


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config, apply dotted overrides, validate everything; errors name the key."""
    data = apply_overrides(read_yaml(path), overrides)
    try:
        return from_mapping(TrainConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    data: dict[str, Any] = to_mapping(cfg)
    return data
