"""A study's numbers, as pure functions of its runs' ``metrics.jsonl`` records.

A study is a matrix of methods x seeds (`studies.runner`). Everything reported about it is computed
here from the trainer's own records (schema in `launch.records`), so every number in
`docs/RESULTS.md` can be recomputed from the run folders:

- `final_metrics`: a run's last-epoch accuracy, macro-F1 and per-modality branch accuracies (the
  headline numbers: the last epoch, since the evaluation split is the test split and choosing the
  best epoch on it would flatter every method), plus its best epoch for reference;
- `aggregate`: mean +- sample std over seeds per method and metric;
- `compare` / `study_claims`: the paper's claims as differences of means with their standard
  error and a stated rule for "holds", "reversed" or "not shown".
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from launch.records import EpochRecord, RunRecords, StepRecord, parse_run

GROUPS = ("joint_loss", "unimodal_loss", "schedule", "dose", "reference")
"""Where a method's row goes: the paper's Table 2 (joint loss only), Table 3 (unimodal losses
added), Table 4 (a method regulating only inside or only outside the window, or always where
that is not its own default), the dose-response series (InfoReg at other thresholds), or the
unimodal references (each encoder alone)."""

Z = 2.0
"""A difference "holds" when it exceeds Z standard errors of the difference of means."""


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
    """Epochs in which at least one logged step regulated the modality (alpha applied)."""
    return sorted({s.epoch for s in run.steps if s.regulated.get(modality)})


def is_ogm_ge(run: Run) -> bool:
    """OGM-GE scales gradients by k (its step records carry ``coeff``) instead of regulating."""
    return bool(run.steps) and "coeff" in run.steps[0].extra


@dataclass(frozen=True, kw_only=True)
class Stat:
    mean: float
    std: float
    """Sample standard deviation over seeds (ddof 1); 0 for one seed."""
    n: int
    values: list[float] = field(default_factory=list)


def stat(values: Iterable[float]) -> Stat:
    vals = [float(v) for v in values]
    if not vals:
        return Stat(mean=math.nan, std=math.nan, n=0, values=[])
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return Stat(mean=mean, std=math.sqrt(var), n=len(vals), values=vals)


def aggregate(runs: Sequence[Run]) -> dict[str, dict[str, Stat]]:
    """method -> metric -> Stat over its runs (seeds), from `final_metrics` and the mean traces."""
    out: dict[str, dict[str, Stat]] = {}
    for method, group in by_method(runs).items():
        finals = [final_metrics(r) for r in group]
        keys = [k for k in finals[0] if all(k in f for f in finals)]
        out[method] = {k: stat(f[k] for f in finals) for k in keys}
        for m in group[0].modalities:
            out[method][f"trace_mean.{m}"] = stat(mean_trace(r, m) for r in group)
    return out


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """mean(a) - mean(b) and its standard error sqrt(s_a^2/n_a + s_b^2/n_b) (Welch)."""

    diff: float
    se: float
    verdict: str
    """holds (diff > Z * se), reversed (diff < -Z * se) or not shown."""


def compare(a: Stat, b: Stat, z: float = Z) -> Comparison:
    diff = a.mean - b.mean
    se = math.sqrt(a.std**2 / max(a.n, 1) + b.std**2 / max(b.n, 1))
    if math.isnan(diff):
        verdict = "not measured"
    elif diff > z * se and diff > 0:
        verdict = "holds"
    elif diff < -z * se and diff < 0:
        verdict = "reversed"
    else:
        verdict = "not shown"
    return Comparison(diff=diff, se=se, verdict=verdict)


def weak_modality(stats: Mapping[str, Stat], modalities: Sequence[str]) -> str:
    """The modality whose branch accuracy is lower under joint training (the suppressed one)."""
    return min(modalities, key=lambda m: stats[f"acc.{m}"].mean)


@dataclass(frozen=True, kw_only=True)
class Claim:
    claim: str
    """The paper's claim, in words."""
    metric: str
    better: str
    """Method key expected to be higher."""
    worse: str
    comparison: Comparison


# (claim, metric with {weak} for the weak modality, method expected higher, method lower)
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("InfoReg raises the weak modality's branch accuracy", "acc.{weak}", "inforeg", "joint"),
    ("InfoReg* raises the weak modality's branch accuracy", "acc.{weak}", "inforeg_star",
     "joint_star"),
    ("InfoReg (official code) raises the weak modality's branch accuracy", "acc.{weak}",
     "inforeg_official", "joint_star"),
    ("InfoReg raises overall accuracy", "acc", "inforeg", "joint"),
    ("InfoReg* raises overall accuracy", "acc", "inforeg_star", "joint_star"),
    ("InfoReg (official code) raises overall accuracy", "acc", "inforeg_official", "joint_star"),
    ("InfoReg beats OGM-GE", "acc", "inforeg", "ogm_ge"),
    ("InfoReg raises the weak modality's information amount (Fig. 1)", "trace_mean.{weak}",
     "inforeg", "joint"),
    ("The window matters: regulating in it beats regulating always", "acc", "inforeg",
     "inforeg_always"),
    ("The window matters: regulating in it beats regulating outside it", "acc", "inforeg",
     "inforeg_outside"),
    # Not claims of the InfoReg paper: checks that regulation moves the branches at all.
    ("(Check) regulating in every epoch raises the weak modality's branch accuracy",
     "acc.{weak}", "inforeg_always", "joint"),
    ("(Check, OGM-GE's own claim) OGM-GE raises the weak modality's branch accuracy",
     "acc.{weak}", "ogm_ge", "joint"),
)  # fmt: skip


def study_claims(agg: Mapping[str, Mapping[str, Stat]], weak: str) -> list[Claim]:
    """Every claim of CLAIMS whose two methods were run."""
    out = []
    for text, metric_tpl, better, worse in CLAIMS:
        metric = metric_tpl.format(weak=weak)
        if better not in agg or worse not in agg or metric not in agg[better]:
            continue
        comparison = compare(agg[better][metric], agg[worse][metric])
        out.append(
            Claim(claim=text, metric=metric, better=better, worse=worse, comparison=comparison)
        )
    return out


def to_json(
    methods: Sequence[Method],
    agg: Mapping[str, Mapping[str, Stat]],
    claims: Sequence[Claim],
    runs: Sequence[Run],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The aggregated results as one JSON-able object (docs/results/<study>/summary.json)."""
    return {
        "meta": dict(meta),
        "rule": f"holds: mean difference > {Z} x its standard error (Welch); reversed: < -{Z} x",
        "methods": {
            m.key: {
                "label": m.label,
                "group": m.group,
                "metrics": {k: asdict(s) for k, s in agg.get(m.key, {}).items()},
            }
            for m in methods
        },
        "claims": [asdict(c) for c in claims],
        "runs": [
            {"method": r.method, "seed": r.seed, "metrics_jsonl": r.source, "sha256": r.sha256}
            for r in runs
        ],
    }
