"""Checkpoints that are complete or absent: DeepSpeed's files plus each rank's trainer state.

Layout under ``OUT/checkpoints``::

    step-000000123/            DeepSpeed's model/optimizer files (ZeRO partitions per rank)
        trainer-rank0.pt       regulator, loader position, RNG states, epoch/step, accumulators
        trainer-rank1.pt
        COMPLETE               rank 0 writes it once every rank is done (step, epoch, world)
    latest                     the tag of the newest COMPLETE checkpoint (atomically replaced)

A checkpoint is "latest" only once completely written: `latest` moves after COMPLETE, which is
written after a barrier that every rank reaches only when its own files are on disk.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from launch.distributed import barrier


def tag_for(step: int) -> str:
    return f"step-{step:09d}"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def rng_state() -> dict[str, Any]:
    """The global generators the trainer's processes draw from (the loaders' augmentation is a
    pure function of seed, epoch and sample, and numpy's global generator is not used)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def is_complete(tag_dir: Path) -> bool:
    return (tag_dir / "COMPLETE").is_file()


def find_latest(root: Path) -> str | None:
    """The newest complete checkpoint's tag: `latest` if it is complete, else a scan."""
    pointer = root / "latest"
    if pointer.is_file():
        tag = pointer.read_text().strip()
        if is_complete(root / tag):
            return tag
    complete = (
        sorted(p.name for p in root.glob("step-*") if is_complete(p)) if root.is_dir() else []
    )
    return complete[-1] if complete else None


def save(
    engine: Any,
    root: Path,
    step: int,
    epoch: int,
    rank: int,
    world_size: int,
    trainer_state: dict[str, Any],
    keep: int,
) -> str:
    """Collective: every rank calls it. Returns the tag once the checkpoint is complete."""
    tag = tag_for(step)
    tag_dir = root / tag
    if rank == 0 and tag_dir.exists():  # a partial one from a killed run: start it afresh
        shutil.rmtree(tag_dir)
    barrier()
    engine.save_checkpoint(str(root), tag=tag, save_latest=False)
    _atomic_torch_save(trainer_state, tag_dir / f"trainer-rank{rank}.pt")
    barrier()
    if rank == 0:
        marker = {"step": step, "epoch": epoch, "world_size": world_size}
        _atomic_write_bytes(tag_dir / "COMPLETE", json.dumps(marker).encode())
        _atomic_write_bytes(root / "latest", tag.encode())
        _prune(root, keep, tag)
    barrier()
    return tag


def _prune(root: Path, keep: int, newest: str) -> None:
    tags = sorted(p.name for p in root.glob("step-*") if p.is_dir())
    complete = [t for t in tags if is_complete(root / t)]
    for tag in complete[:-keep]:
        if tag != newest:
            shutil.rmtree(root / tag, ignore_errors=True)
    for tag in tags:  # partial directories older than the newest complete one are debris
        if tag < newest and not is_complete(root / tag):
            shutil.rmtree(root / tag, ignore_errors=True)


def load(engine: Any, root: Path, tag: str, rank: int, world_size: int) -> dict[str, Any]:
    """Restore DeepSpeed's state into `engine`; return this rank's trainer state."""
    marker = json.loads((root / tag / "COMPLETE").read_text())
    if marker["world_size"] != world_size:
        raise RuntimeError(
            f"checkpoint {root / tag} was written by {marker['world_size']} ranks; this run has "
            f"{world_size}. Resume with the same number of ranks (ZeRO partitions and the "
            "regulator's anchors are per rank)."
        )
    load_path, _ = engine.load_checkpoint(
        str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {root / tag}")
    state: dict[str, Any] = torch.load(
        root / tag / f"trainer-rank{rank}.pt", map_location="cpu", weights_only=False
    )
    return state
