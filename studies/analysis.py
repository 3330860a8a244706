"""A study's runs and everything the report computes from them, in one frozen object.

`analyse` is pure: the methods (the study's and the dose-response series'), the finished runs
and, for the methods without runs, why; it decides the weak modality from joint training's
branches and evaluates the protocol's claims (`studies.claims`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from studies import paper
from studies.claims import (
    Claim,
    DoseResponse,
    Ranking,
    claim_specs,
    dose_response,
    evaluate_claims,
    ranking,
)
from studies.results import Method, Run, by_method, per_seed


@dataclass(frozen=True, kw_only=True)
class Analysis:
    methods: tuple[Method, ...]
    """The study's methods and the dose-response series' extra ones, in report order."""
    runs: list[Run]
    groups: dict[str, list[Run]]
    """method -> its finished runs, by seed."""
    not_run: dict[str, str]
    """method without finished runs -> why."""
    modalities: list[str]
    weak: str
    strong: str
    claims: list[Claim]
    dose: DoseResponse
    ranking: Ranking

    @property
    def labels(self) -> dict[str, str]:
        return {m.key: m.label for m in self.methods}

    def group(self, name: str) -> list[Method]:
        return [m for m in self.methods if m.group == name]


def weak_modality(
    groups: Mapping[str, list[Run]], modalities: Sequence[str], default: str, joint: str = "joint"
) -> str:
    """The modality whose branch is lower (mean over seeds) under joint training; `default`
    (the protocol's expectation) when joint training has no runs."""
    runs = groups.get(joint)
    if not runs or len(modalities) < 2:
        return default

    def mean_branch(m: str) -> float:
        values = per_seed(runs, f"acc.{m}").values()
        return sum(values) / len(values)

    return min(modalities, key=mean_branch)


def analyse(
    methods: Sequence[Method],
    runs: Sequence[Run],
    not_run: Mapping[str, str],
    default_weak: str,
    dose_key: str = "inforeg",
) -> Analysis:
    """Everything the report states, from the runs (`not_run`: method -> reason, for those
    without finished runs)."""
    groups = by_method(runs)
    trained = [m.key for m in methods if m.group != "reference" and m.key in groups]
    if not trained:
        raise ValueError("no finished run of a trained (non-reference) method to report on")
    modalities = groups[trained[0]][0].modalities
    weak = weak_modality(groups, modalities, default_weak)
    strong = next((m for m in modalities if m != weak), weak)
    labels = {m.key: m.label for m in methods}
    claims = evaluate_claims(claim_specs(weak, labels), groups, not_run)
    dose_keys = [m.key for m in methods if m.group == "dose"]
    series = ["joint", *dose_keys, dose_key, f"{dose_key}_always"]
    tables = [m.key for m in methods if m.group in ("joint_loss", "unimodal_loss")]
    return Analysis(
        methods=tuple(methods),
        runs=list(runs),
        groups=groups,
        not_run={k: v for k, v in not_run.items() if k not in groups},
        modalities=modalities,
        weak=weak,
        strong=strong,
        claims=claims,
        dose=dose_response(series, groups, weak, strong, not_run),
        ranking=ranking(tables, groups, paper.CREMAD_ACC),
    )
