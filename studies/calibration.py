"""Choosing a study's recipe from unregulated runs only (docs/study-protocol.md, section 1).

A study lists candidate recipes in a fixed order; each is tried with joint training and the two
unimodal references on calibration seeds that the study itself never uses. The first candidate
whose runs meet every criterion is the study's recipe. The same joint runs fix the dose-response
thresholds by replaying the window test offline. Everything here is a pure function of the runs'
records, so the report can recompute the choice from the files.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inforeg.functional import window_open
from studies.results import Run, final_metrics

PAPER_K = 0.04
"""The paper's window threshold (Eq. 11), which the criteria and the study's schedules use."""


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One training recipe: the config overrides it applies to every method of the study."""

    name: str
    batch_size: int
    lr: float
    epochs: int
    step_size: int
    gamma: float = 0.1

    def overrides(self) -> tuple[str, ...]:
        return (
            f"data.batch_size={self.batch_size}",
            f"optim.lr={self.lr}",
            f"run.epochs={self.epochs}",
            f"optim.step_size={self.step_size}",
            f"optim.gamma={self.gamma}",
        )


@dataclass(frozen=True, kw_only=True)
class Criteria:
    """The protocol's thresholds (section 1.1)."""

    min_stretch: int = 6
    """C1: the audio window's first open stretch lasts at least this many epochs ..."""
    latest_start: int = 3
    """... and begins no later than this epoch ..."""
    min_seeds: int = 2
    """... in at least this many calibration seeds."""
    max_fused_acc: float = 0.92
    """C2: joint training's mean last-epoch accuracy is at most this."""
    min_weak_gap: float = 0.10
    """C3: the weak branch under joint training is at least this far below its encoder alone."""


def replay_window(traces: Sequence[float], threshold: float = PAPER_K) -> list[int]:
    """The epochs whose window test (Eq. 11, from epoch 2) opens, given one run's trace history:
    what the trainer would have decided for another threshold."""
    return [t for t in range(len(traces)) if window_open(traces, t, threshold)]


def first_stretch(open_epochs: Sequence[int]) -> tuple[int, int]:
    """(start, length) of the first run of consecutive open epochs; (-1, 0) when none."""
    if not open_epochs:
        return -1, 0
    start = prev = open_epochs[0]
    for epoch in open_epochs[1:]:
        if epoch != prev + 1:
            break
        prev = epoch
    return start, prev - start + 1


def traces(run: Run, modality: str) -> list[float]:
    """The modality's information trace per epoch (NaN where an epoch did not record one)."""
    return [float(e.trace.get(modality, float("nan"))) for e in run.epochs]


def recorded_window(run: Run, modality: str) -> list[int]:
    """The epochs in which the run itself recorded the modality's window open."""
    return [e.epoch for e in run.epochs if e.window_open.get(modality)]


def evaluate(
    joint: Sequence[Run],
    alone: Mapping[str, Sequence[Run]],
    strong: str,
    weak: str,
    criteria: Criteria = Criteria(),
) -> dict[str, Any]:
    """The three criteria for one candidate. `alone`: modality -> its encoder-alone runs; a
    criterion whose runs are missing (C3 before the unimodal runs) is reported as not evaluated
    (``met`` None)."""
    stretches = [first_stretch(recorded_window(r, strong)) for r in joint]
    long_enough = [
        start != -1 and start <= criteria.latest_start and length >= criteria.min_stretch
        for start, length in stretches
    ]
    c1 = {
        "stretches": [{"start": s, "length": n} for s, n in stretches],
        "seeds_met": sum(long_enough),
        "met": sum(long_enough) >= criteria.min_seeds,
    }
    finals = [final_metrics(r) for r in joint]
    fused = statistics.fmean(f["acc"] for f in finals)
    c2 = {"fused_acc": fused, "met": fused <= criteria.max_fused_acc}
    weak_joint = statistics.fmean(f[f"acc.{weak}"] for f in finals)
    c3: dict[str, Any] = {"weak_joint": weak_joint, "weak_alone": None, "gap": None, "met": None}
    if alone.get(weak):
        weak_alone = statistics.fmean(final_metrics(r)["acc"] for r in alone[weak])
        gap = weak_alone - weak_joint
        c3 |= {"weak_alone": weak_alone, "gap": gap, "met": gap >= criteria.min_weak_gap}
    return {"C1": c1, "C2": c2, "C3": c3}


def meets_all(result: Mapping[str, Any]) -> bool:
    return all(result[c]["met"] is True for c in ("C1", "C2", "C3"))


def choose(results: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> tuple[str, str]:
    """(candidate, why): the first in `order` meeting every criterion; else the one meeting the
    most, ties broken by the longer median first stretch, then by order."""
    for name in order:
        if name in results and meets_all(results[name]):
            return name, "the first candidate that meets every criterion"

    def merit(name: str) -> tuple[int, float, int]:
        result = results[name]
        met = sum(result[c]["met"] is True for c in ("C1", "C2", "C3"))
        lengths = [s["length"] for s in result["C1"]["stretches"]] or [0]
        return met, statistics.median(lengths), -list(order).index(name)

    tried = [n for n in order if n in results]
    if not tried:
        raise ValueError("no candidate was evaluated")
    best = max(tried, key=merit)
    return best, "no candidate meets every criterion: the one that meets the most"


def dose_thresholds(
    joint: Sequence[Run], strong: str, grid: Sequence[float], min_difference: int = 2
) -> dict[str, Any]:
    """Protocol section 1.2: the paper's K and, on each side, the grid value nearest to it whose
    median number of open epochs (replayed on the joint traces) differs from K's by at least
    `min_difference`; the grid's end on a side where none does (``fallback`` says which)."""
    if PAPER_K not in grid:
        raise ValueError(f"the grid {list(grid)} must contain the paper's K = {PAPER_K}")
    histories = [traces(r, strong) for r in joint]
    open_count = {
        k: statistics.median(len(replay_window(h, k)) for h in histories) for k in sorted(grid)
    }
    base = open_count[PAPER_K]
    lower = sorted((k for k in grid if k < PAPER_K), reverse=True)
    higher = sorted(k for k in grid if k > PAPER_K)
    chosen, fallback = [PAPER_K], []
    for side, name in ((lower, "lower"), (higher, "higher")):
        if not side:
            continue
        far = [k for k in side if abs(open_count[k] - base) >= min_difference]
        if far:
            chosen.append(far[0])
        else:
            chosen.append(side[-1])
            fallback.append(name)
    return {
        "thresholds": sorted(chosen),
        "median_open_epochs": {str(k): v for k, v in open_count.items()},
        "fallback": fallback,
    }
