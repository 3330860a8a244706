"""The protocol's claims (docs/study-protocol.md, section 4), evaluated on a study's runs.

- P1-P3 (primary) and S1-S4 are paired comparisons by seed (`studies.paired`) of two methods on
  one metric;
- S5, the dose-response: Spearman's correlation between the epochs a run regulated the strong
  modality and its weak-branch gain over joint training of the same seed;
- S6, the ranking: our Table 2 + 3 methods' mean accuracy against the paper's CREMA-D numbers
  where those are available (`studies.paper`), descriptive.

A claim one of whose methods has no finished run is kept and marked "not run" with the reason;
nothing is dropped. All functions are pure: runs in, dataclasses out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from studies.paired import HOLDS, NOT_SHOWN, Paired, paired, spearman
from studies.results import Run, metric_value, per_seed, regulated_epochs

NOT_RUN = "not run"

SCHEDULE_RUNS: dict[str, dict[str, str]] = {
    "inforeg": {"always": "inforeg_always", "window": "inforeg", "outside": "inforeg_outside"},
    **{
        base: {"always": base, "window": f"{base}_window", "outside": f"{base}_outside"}
        for base in ("ogm", "agm", "pmr")
    },
}
"""Table 4: base method -> schedule (whole training, inside the window, outside it) -> run key.
OGM, AGM and PMR regulate through the whole training by default (their Table 2 runs); InfoReg
regulates inside its window by default (its Table 2 run)."""

S1_BASELINES = ("ogm", "ogm_ge", "greedy", "pmr", "agm")


@dataclass(frozen=True, kw_only=True)
class ClaimSpec:
    key: str
    """P1 .. S4 with a suffix where one claim is several comparisons (S1.ogm)."""
    text: str
    metric: str
    better: str
    """The method the claim expects to be higher."""
    worse: str
    primary: bool = False


@dataclass(frozen=True, kw_only=True)
class Claim:
    spec: ClaimSpec
    result: Paired | None = None
    not_run: str = ""
    """Why it could not be evaluated (a method without finished runs), else ""."""

    @property
    def verdict(self) -> str:
        return self.result.verdict if self.result is not None else NOT_RUN


def claim_specs(weak: str, labels: Mapping[str, str]) -> list[ClaimSpec]:
    """P1-P3 and S1-S4 in the protocol's order; `weak` names the weak modality W."""

    def name(key: str) -> str:
        return labels.get(key, key)

    specs = [
        ClaimSpec(
            key="P1",
            text="InfoReg raises fused accuracy over joint training",
            metric="acc",
            better="inforeg",
            worse="joint",
            primary=True,
        ),
        ClaimSpec(
            key="P2",
            text=f"InfoReg raises the weak ({weak}) branch over joint training",
            metric=f"acc.{weak}",
            better="inforeg",
            worse="joint",
            primary=True,
        ),
        ClaimSpec(
            key="P3",
            text="InfoReg* raises fused accuracy over Joint*",
            metric="acc",
            better="inforeg_star",
            worse="joint_star",
            primary=True,
        ),
    ]
    specs += [
        ClaimSpec(
            key=f"S1.{b}", text=f"InfoReg beats {name(b)}", metric="acc", better="inforeg", worse=b
        )
        for b in S1_BASELINES
    ]
    specs += [
        ClaimSpec(
            key=f"S2.{b}",
            text=f"InfoReg* beats {name(b)}",
            metric="acc",
            better="inforeg_star",
            worse=b,
        )
        for b in ("gblending", "mmpareto")
    ]
    specs.append(
        ClaimSpec(
            key="S2.official",
            text="InfoReg as the official code beats Joint*",
            metric="acc",
            better="inforeg_official",
            worse="joint_star",
        )
    )
    for base, runs in SCHEDULE_RUNS.items():
        for other, where in (("outside", "only outside it"), ("always", "always")):
            specs.append(
                ClaimSpec(
                    key=f"S3.{base}.{other}",
                    metric="acc",
                    better=runs["window"],
                    worse=runs[other],
                    text=f"{name(base)}: regulating only inside the window beats "
                    f"regulating {where}",
                )
            )
    specs.append(
        ClaimSpec(
            key="S4",
            text=f"InfoReg raises the weak ({weak}) modality's information "
            "amount (trace averaged over epochs)",
            metric=f"trace_mean.{weak}",
            better="inforeg",
            worse="joint",
        )
    )
    return specs


def missing_reason(
    keys: Sequence[str], groups: Mapping[str, list[Run]], not_run: Mapping[str, str]
) -> str:
    """Why some of `keys` have no runs ("" when all have)."""
    missing = [k for k in keys if not groups.get(k)]
    return "; ".join(f"{k}: {not_run.get(k, 'no finished run')}" for k in missing)


def evaluate_claims(
    specs: Sequence[ClaimSpec], groups: Mapping[str, list[Run]], not_run: Mapping[str, str]
) -> list[Claim]:
    """Each spec as a paired comparison, or "not run" naming the methods without runs and why
    (`not_run`: method -> reason)."""
    out = []
    for spec in specs:
        reason = missing_reason((spec.better, spec.worse), groups, not_run)
        if reason:
            out.append(Claim(spec=spec, not_run=reason))
            continue
        a = per_seed(groups[spec.better], spec.metric)
        b = per_seed(groups[spec.worse], spec.metric)
        out.append(Claim(spec=spec, result=paired(a, b)))
    return out


@dataclass(frozen=True, kw_only=True)
class DosePoint:
    method: str
    seed: int
    regulated: int
    """Epochs in which the run regulated the strong modality (`regulated_epochs`)."""
    weak_gain: float
    """acc.W of this run minus that of joint training with the same seed."""
    fused_gain: float


@dataclass(frozen=True, kw_only=True)
class DoseResponse:
    """S5: weak-branch gain over joint against regulated epochs of the strong modality."""

    methods: tuple[str, ...]
    """The series (joint first) whose runs gave the points."""
    points: tuple[DosePoint, ...] = ()
    rho: float = math.nan
    """Spearman over all (run, seed) points."""
    rho_fused: float = math.nan
    """The same for the fused-accuracy gain (descriptive, no verdict)."""
    per_seed: dict[int, float] = field(default_factory=dict)
    """seed -> Spearman over that seed's runs."""
    needed: int = 0
    """Seeds whose correlation must be positive (4 of 5: 80 % of the seeds, rounded up)."""
    verdict: str = NOT_RUN
    not_run: str = ""

    @property
    def positive_seeds(self) -> int:
        return sum(r > 0 for r in self.per_seed.values())


def dose_response(
    series: Sequence[str],
    groups: Mapping[str, list[Run]],
    weak: str,
    strong: str,
    not_run: Mapping[str, str],
) -> DoseResponse:
    """S5 over `series` (joint, the dose runs, inforeg, inforeg_always), tested only when every
    member ran: a correlation over part of the series (two levels give +-1 in every seed) is
    not the protocol's test."""
    joint = series[0]
    if any(not groups.get(k) for k in series):
        return DoseResponse(methods=tuple(series), not_run=missing_reason(series, groups, not_run))
    base = {r.seed: r for r in groups[joint]}
    complete = set(base).intersection(*({r.seed for r in groups[k]} for k in series[1:]))
    if len(complete) < 2:
        reason = f"the whole series finished in {len(complete)} seed(s); 2 or more are needed"
        return DoseResponse(methods=tuple(series), not_run=reason)
    points = []
    for key in series:
        for run in groups[key]:
            if run.seed not in complete:
                continue
            ref = base[run.seed]
            points.append(
                DosePoint(
                    method=key,
                    seed=run.seed,
                    regulated=len(regulated_epochs(run, strong)),
                    weak_gain=metric_value(run, f"acc.{weak}") - metric_value(ref, f"acc.{weak}"),
                    fused_gain=metric_value(run, "acc") - metric_value(ref, "acc"),
                )
            )
    rho = spearman([p.regulated for p in points], [p.weak_gain for p in points])
    per = {
        seed: spearman(
            [p.regulated for p in points if p.seed == seed],
            [p.weak_gain for p in points if p.seed == seed],
        )
        for seed in sorted(complete)
    }
    needed = math.ceil(0.8 * len(per))
    positive = sum(r > 0 for r in per.values())
    holds = rho > 0 and positive >= needed
    return DoseResponse(
        methods=tuple(series),
        points=tuple(points),
        rho=rho,
        rho_fused=spearman([p.regulated for p in points], [p.fused_gain for p in points]),
        per_seed=per,
        needed=needed,
        verdict=HOLDS if holds else NOT_SHOWN,
    )


@dataclass(frozen=True, kw_only=True)
class Ranking:
    """S6: our mean accuracy of the Table 2 + 3 methods against the paper's CREMA-D numbers."""

    ours: tuple[tuple[str, float], ...]
    """(method, mean acc) of every Table 2 + 3 method that ran, best first."""
    compared: tuple[tuple[str, float, float], ...]
    """(method, our mean acc, the paper's CREMA-D acc) where both exist."""
    rho: float
    """Spearman between the two columns of `compared` (NaN for fewer than two)."""


def ranking(
    methods: Sequence[str], groups: Mapping[str, list[Run]], paper: Mapping[str, float]
) -> Ranking:
    means = {}
    for key in methods:
        if groups.get(key):
            values = per_seed(groups[key], "acc").values()
            means[key] = sum(values) / len(values)
    ours = tuple(sorted(means.items(), key=lambda kv: -kv[1]))
    compared = tuple((k, means[k], paper[k]) for k, _ in ours if k in paper)
    rho = spearman([c[1] for c in compared], [c[2] for c in compared])
    return Ranking(ours=ours, compared=compared, rho=rho)
