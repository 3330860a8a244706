"""Synthetic runs for the report's tests: records built as `launch.records` dataclasses with
chosen values and written as metrics.jsonl through its writer (`launch.records.dumps`), then read
back through its reader, as the report reads real runs."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from launch.records import EpochRecord, StepRecord, dumps
from studies.results import Run, load_run


def run_records(
    acc: float,
    branches: Mapping[str, float],
    *,
    epochs: int = 3,
    regulated: Mapping[str, Collection[int]] | None = None,
    windows: Mapping[str, Collection[int]] | None = None,
    traces: Mapping[str, Sequence[float]] | None = None,
) -> list[StepRecord | EpochRecord]:
    """One step record and one epoch record per epoch. Fused accuracy and each branch rise
    linearly to `acc` / `branches[m]` at the last epoch (epoch 0 at 0.1 below); `regulated`
    and `windows`: modality -> the epochs it was regulated / its window was open; `traces`:
    modality -> its information amount per epoch (default 0.5 every epoch)."""
    modalities = list(branches)
    regulated, windows = regulated or {}, windows or {}
    out: list[StepRecord | EpochRecord] = []
    for t in range(epochs):
        rise = 0.1 * (epochs - 1 - t) / max(epochs - 1, 1)
        flags = {m: 1.0 if t in regulated.get(m, ()) else 0.0 for m in modalities}
        out.append(
            StepRecord(
                epoch=t,
                step=10 * t + 9,
                loss=1.0,
                score={m: -0.5 for m in modalities},
                gap={m: 0.0 for m in modalities},
                alpha={m: 1.2 * flags[m] for m in modalities},
                regulated=flags,
                lr=0.002,
                samples_per_s=100.0,
                data_wait_frac=0.01,
            )
        )
        out.append(
            EpochRecord(
                epoch=t,
                trace={m: (traces[m][t] if traces and m in traces else 0.5) for m in modalities},
                window_open={m: t in windows.get(m, ()) for m in modalities},
                acc=acc - rise,
                macro_f1=acc - rise - 0.01,
                branch_acc={m: v - rise for m, v in branches.items()},
                loss=0.5,
                epoch_time_s=1.0,
                samples_per_s=100.0,
            )
        )
    return out


def write_metrics(folder: Path, records: Sequence[StepRecord | EpochRecord]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.jsonl"
    path.write_text("".join(dumps(r) + "\n" for r in records))
    return path


def write_config(folder: Path, epochs: int, extra: Mapping[str, Any] | None = None) -> None:
    """A config.json with what the report reads (run.epochs, regulator)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"run": {"epochs": epochs}, "regulator": {"name": "joint"}, **(extra or {})}
    (folder / "config.json").write_text(json.dumps(cfg))


def make_run(
    tmp: Path, method: str, seed: int, acc: float, branches: Mapping[str, float], **kw: Any
) -> Run:
    """A run written to ``tmp/<method>/seed<seed>/metrics.jsonl`` and read back."""
    path = write_metrics(tmp / method / f"seed{seed}", run_records(acc, branches, **kw))
    return load_run(path, method, seed)
