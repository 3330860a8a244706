"""The loader's spec and the batch it yields: `LoaderSpec`, the `Loader` protocol, its bookkeeping.

`pipelines.contract` states the batch contract; this module holds the types every loader shares.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from pipelines.registry import pipeline_entry
from preprocess.schema import DatasetInfo

ORDERS: tuple[str, ...] = ("random", "quasi_random", "sequential")
TEXT_MASK = "text_mask"


class LoaderError(RuntimeError):
    """A loader could not produce a correct batch (corrupt bytes, a failed or stalled pipeline);
    every loader raises it (or a subclass), and the message names the file and the samples."""


@dataclass(frozen=True, kw_only=True)
class LoaderSpec:
    """Everything that decides what a loader yields (and how fast). One spec, any pipeline."""

    pipeline: str
    """Which loader: a name of `pipelines.registry.PIPELINES` (`ffcv`, `dali`, `reference`)."""
    data_dir: Path
    """A dataset folder written by `inforeg-preprocess build` (holds dataset.json)."""
    split: str = "train"
    train: bool = True
    """Train: a new random order and augmentation per epoch, full batches only. Eval: sequential,
    evenly spaced frames, resize, every sample once across ranks (the last batch may be short)."""
    batch_size: int = 64
    """Per rank."""
    frames: int = 3
    """K, frames per sample."""
    size: int = 224
    """H = W of the output frames."""
    workers: int = 2
    """CPU parallelism: FFCV/DALI threads, or DataLoader processes for the reference."""
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    device: str | torch.device = "cpu"
    """Where batches are yielded and the finishing stage runs (`cuda` when training on GPU)."""
    order: str | None = None
    """Train order: `random` (default), `quasi_random` (page-local, for `os_cache=False`) or
    `sequential`. Eval is always sequential; None = the mode's default."""
    os_cache: bool = True
    """FFCV: read through the OS page cache (mmap) rather than the process's own page cache."""
    finish: bool = True
    """False: yield the host batch before the device stage (uint8 (B, K, H, W, 3) frames, int16
    (B, N) PCM, int32 text), for benchmarks; such a batch may be a view of the pipeline's buffers,
    valid until the next batch is drawn. True: the contract above (always fresh tensors)."""
    verify: bool = True
    """Check the files read against dataset.json's sha256 before trusting their bytes."""
    timeout_s: float = 120.0
    """A batch not ready after this many seconds is an error (a stalled pipeline never hangs)."""
    prefetch: int = 3
    """Batches prepared ahead of the consumer."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        pipeline_entry(self.pipeline)  # ValueError naming the registry's choices
        if not self.split:
            raise ValueError("split must be a non-empty split name")
        for name in ("batch_size", "frames", "size", "workers", "world_size", "prefetch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")
        if self.order is not None and self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if not self.train and self.order not in (None, "sequential"):
            raise ValueError(f"order {self.order!r} in eval mode: eval is always sequential")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        try:
            object.__setattr__(self, "device", str(torch.device(self.device)))
        except RuntimeError as e:
            raise ValueError(f"device {self.device!r} is not a torch device: {e}") from e

    @property
    def traversal(self) -> str:
        """The order actually used: `order`, or the mode's default."""
        if self.order is not None:
            return self.order
        return "random" if self.train else "sequential"


Batch = dict[str, torch.Tensor]


@runtime_checkable
class Loader(Protocol):
    """What the trainer builds through `pipelines.build_loader(spec)` and iterates.

    `state_dict()` is {"epoch", "batches"}: batches already yielded in that epoch. A loader given
    it back with `load_state_dict` yields the rest of that epoch, exactly the batches an
    uninterrupted run would have yielded. A completed epoch iterated again restarts it from its
    first batch; `set_epoch(e)` starts epoch e (a new order, the same for a given seed and e).
    """

    spec: LoaderSpec
    info: DatasetInfo

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same on every rank in train mode)."""
        ...

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, int]: ...

    def load_state_dict(self, state: Mapping[str, int]) -> None: ...


class CursorLoader:
    """The `Loader` protocol's bookkeeping for a loader that keeps its place in `self.cursor`."""

    cursor: EpochCursor

    def __len__(self) -> int:
        return self.cursor.num_batches

    def set_epoch(self, epoch: int) -> None:
        self.cursor.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.cursor.state_dict()

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.cursor.load_state_dict(state)


class EpochCursor:
    """(epoch, batches yielded) of one loader; the bookkeeping every loader shares."""

    def __init__(self, num_batches: int):
        self.num_batches = num_batches
        self.epoch = 0
        self.batches = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch, self.batches = int(epoch), 0

    def start(self) -> int:
        """The batch an iteration starts at (a completed epoch restarts from 0)."""
        if self.batches >= self.num_batches:
            self.batches = 0
        return self.batches

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if set(state) != {"epoch", "batches"}:
            raise ValueError(f"loader state must have keys epoch, batches; got {sorted(state)}")
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if epoch < 0:
            raise ValueError(f"loader state: epoch must be >= 0, got {epoch}")
        if not 0 <= batches <= self.num_batches:
            raise ValueError(
                f"loader state: batches must be in [0, {self.num_batches}], got {batches}"
            )
        self.epoch, self.batches = epoch, batches
