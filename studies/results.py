"""A study's numbers, as pure functions of its runs' ``metrics.jsonl`` records.

A study is a matrix of methods x seeds (`studies.runner`). Everything reported about it is computed
here from the trainer's own records (schema in `launch.records`), so every number in
`docs/RESULTS.md` can be recomputed from the run folders:

- `final_metrics`: a run's last-epoch accuracy, macro-F1 and per-modality branch accuracies (the
  headline numbers: the last epoch, since the evaluation split is the test split and choosing the
  best epoch on it would flatter every method), plus its best epoch for reference;
- `finished_run`: a run folder's records when its run finished, else why it did not;
- `per_seed`: one metric of a method's runs by seed, what the paired comparisons of
  `studies.paired` and the claims of `studies.claims` take.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from launch.records import EpochRecord, RunRecords, StepRecord, parse_run

GROUPS = ("joint_loss", "unimodal_loss", "schedule", "dose", "reference")
"""Where a method's row goes: the paper's Table 2 (joint loss only), Table 3 (unimodal losses
added), Table 4 (a method regulating only inside or only outside the window, or always where
that is not its own default), the dose-response series (InfoReg at other thresholds), or the
unimodal references (each encoder alone)."""


@dataclass(frozen=True, kw_only=True)
class Method:
    key: str
    """Folder name under the study's runs/ and the stem of configs/<study>/<key>.yaml."""
    label: str
    """As printed in the tables."""
    group: str
    """One of GROUPS."""
    config: str = ""
    """The stem of configs/<study>/<config>.yaml it trains; "" = the key."""
    overrides: tuple[str, ...] = ()
    """Config overrides on top of that file (a schedule, a threshold)."""

    @property
    def config_stem(self) -> str:
        return self.config or self.key

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"Method.group must be one of {GROUPS}, got {self.group!r}")


@dataclass(frozen=True, kw_only=True)
class Run:
    """One finished run: its method, seed and the records of its metrics.jsonl."""

    method: str
    seed: int
    records: RunRecords
    source: str = ""
    """The metrics.jsonl it was read from."""
    sha256: str = ""
    """Of that file, so a reported run can be matched to its file."""

    @property
    def epochs(self) -> tuple[EpochRecord, ...]:
        return self.records.epochs

    @property
    def steps(self) -> tuple[StepRecord, ...]:
        return self.records.steps

    @property
    def modalities(self) -> list[str]:
        return self.records.modalities


def load_run(metrics_path: Path, method: str, seed: int) -> Run:
    data = metrics_path.read_bytes()
    return Run(
        method=method,
        seed=seed,
        records=parse_run(data.decode("utf-8"), str(metrics_path)),
        source=str(metrics_path),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def finished_run(folder: Path, method: str, seed: int) -> tuple[Run | None, str]:
    """(the run in `folder`, "") when it finished (its metrics.jsonl holds every epoch its
    config.json asks for), else (None, why not) with the trainer's last error line where it
    left one."""
    metrics, config = folder / "metrics.jsonl", folder / "config.json"
    if not metrics.is_file():
        reason = "no metrics.jsonl"
    else:
        try:
            run = load_run(metrics, method, seed)
        except ValueError as e:  # RecordError: a line cut short or off the schema
            return None, f"unreadable metrics.jsonl ({e})"
        wanted = json.loads(config.read_text())["run"]["epochs"] if config.is_file() else None
        if run.epochs and (wanted is None or len(run.epochs) >= wanted):
            return run, ""
        reason = f"{len(run.epochs)} of {wanted or '?'} epochs"
    summary = folder / "summary.json"
    if summary.is_file():
        exit_code = json.loads(summary.read_text()).get("exit_code")
        reason = f"stopped after {reason}, exit code {exit_code}"
    elif metrics.is_file():
        reason = f"unfinished (training, or stopped without a summary) after {reason}"
    log = folder / "train.log"
    if log.is_file():
        errors = [
            ln.strip()
            for ln in log.read_text(errors="replace").splitlines()
            if "Error" in ln.split(":", 1)[0]
        ]
        if errors:
            reason += f"; the trainer's last error: {errors[-1]}"
    return None, reason


def by_method(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """method -> its runs, by seed."""
    out: dict[str, list[Run]] = {}
    for run in runs:
        out.setdefault(run.method, []).append(run)
    return {method: sorted(group, key=lambda r: r.seed) for method, group in out.items()}


def final_metrics(run: Run) -> dict[str, float]:
    """Last epoch's acc, macro_f1 and acc.<m>; best epoch's acc and index (selected on the
    evaluation split, so optimistic: reported beside, never instead of, the last epoch)."""
    epochs = run.epochs
    if not epochs:
        raise ValueError(f"{run.source or run.method}: no epoch record")
    last = epochs[-1]
    out = {
        "acc": _measured(last.acc, run, "acc"),
        "macro_f1": _measured(last.macro_f1, run, "macro_f1"),
    }
    for m in run.modalities:
        out[f"acc.{m}"] = float(last.branch_acc[m])
    best = max(epochs, key=lambda e: _measured(e.acc, run, "acc"))
    out["best_acc"] = _measured(best.acc, run, "acc")
    out["best_epoch"] = float(best.epoch)
    return out


def _measured(value: float | None, run: Run, name: str) -> float:
    """A metric the report needs, as a float; ValueError naming the run if it was not recorded."""
    if value is None:
        raise ValueError(f"{run.source or run.method}: an epoch record has no {name}")
    return float(value)


def mean_trace(run: Run, modality: str) -> float:
    """The modality's information amount averaged over the run's epochs."""
    values = [e.trace[modality] for e in run.epochs if e.trace.get(modality) is not None]
    return sum(values) / len(values) if values else math.nan


def window_epochs(run: Run, modality: str) -> list[int]:
    return [e.epoch for e in run.epochs if e.window_open.get(modality)]


def regulated_epochs(run: Run, modality: str) -> list[int]:
    """Epochs in which at least one logged step (every ``run.log_every`` steps, so a sample of
    the steps) set ``regulated.<m>``, which every regulator records: InfoReg its proximal pull
    applied, OGM / OGM-GE the modality's gradients scaled as the dominant one, PMR its prototype
    term weighted, AGM its coefficient applied in a modulation epoch, G-Blending and MMPareto
    their weighting where the schedule allows it."""
    return sorted({s.epoch for s in run.steps if s.regulated.get(modality)})


def scales_gradients(run: Run) -> bool:
    """OGM, OGM-GE and AGM scale gradients by a factor k (their step records carry ``coeff``)
    instead of adding alpha * (w - anchor)."""
    return bool(run.steps) and "coeff" in run.steps[0].extra


def metric_value(run: Run, metric: str) -> float:
    """One number of a run: a `final_metrics` key (``acc``, ``acc.video``, ``macro_f1``) or
    ``trace_mean.<m>`` (the modality's information amount averaged over epochs)."""
    if metric.startswith("trace_mean."):
        return mean_trace(run, metric.split(".", 1)[1])
    finals = final_metrics(run)
    if metric not in finals:
        raise ValueError(f"{run.source or run.method}: no metric {metric!r} (has {sorted(finals)})")
    return finals[metric]


def per_seed(runs: Iterable[Run], metric: str) -> dict[int, float]:
    """seed -> the metric of that seed's run (runs of one method)."""
    return {r.seed: metric_value(r, metric) for r in runs}


UNREGULATED = ("joint", "joint_star")
"""Trained methods that regulate nothing (with the references: no provenance check needed)."""


def is_regulated(method: Method) -> bool:
    """Every method but joint training, Joint* and the encoders alone."""
    return method.group != "reference" and method.key not in UNREGULATED
