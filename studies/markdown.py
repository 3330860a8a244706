"""A study's report as markdown (``docs/RESULTS.md``): its tables and its text.

Every number in the report comes from `studies.results` (the aggregates, the claims, the runs'
records) or from the study's own bookkeeping (``meta``: sessions, wall time, commands); nothing
here reads a file.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from launch.report import compact
from studies.avmnist import Study
from studies.results import (
    Claim,
    Method,
    Run,
    Stat,
    Z,
    compare,
    is_ogm_ge,
    regulated_epochs,
    window_epochs,
)

TITLES = {
    "joint_loss": "joint loss only (paper Table 2)",
    "unimodal_loss": "unimodal losses added (paper Table 3)",
    "reference": "unimodal references (each encoder trained alone)",
    "schedule": "when the methods regulate (paper Table 4)",
}
"""The heading of each group's block in the results tables."""
ABLATION = ("joint", "inforeg", "inforeg_always", "inforeg_outside")
"""The rows of the paper's Table 4 (when InfoReg regulates), when they were run."""


def pct(s: Stat | None) -> str:
    if s is None or s.n == 0 or math.isnan(s.mean):
        return "–"
    return f"{100 * s.mean:.2f} ± {100 * s.std:.2f}"


def results_table(
    methods: Sequence[Method],
    agg: Mapping[str, Mapping[str, Stat]],
    modalities: Sequence[str],
    groups: Sequence[str],
    titles: Mapping[str, str],
) -> str:
    """Markdown rows in the layout of the paper's Tables 2-3: one block per group."""
    head = ["Method", "Acc (last)", "Macro-F1"] + [f"{m} branch" for m in modalities]
    head += ["Acc (best epoch)", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in groups:
        rows = [m for m in methods if m.group == group and m.key in agg]
        if not rows:
            continue
        lines.append(f"| *{titles[group]}* |" + " |" * (len(head) - 1))
        for m in rows:
            s = agg[m.key]
            cells = [m.label, pct(s.get("acc")), pct(s.get("macro_f1"))]
            cells += [pct(s.get(f"acc.{mod}")) for mod in modalities]
            cells += [pct(s.get("best_acc")), str(s["acc"].n)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_list(claims: Sequence[Claim], labels: Mapping[str, str]) -> str:
    lines = []
    for c in claims:
        d = c.comparison
        scale = 100.0 if c.metric.startswith("acc") else 1.0
        unit = " points" if scale == 100.0 else ""
        lines.append(
            f"- **{c.comparison.verdict.upper()}**: {c.claim} — `{c.metric}` of "
            f"{labels[c.better]} minus {labels[c.worse]} = {scale * d.diff:+.2f}{unit} "
            f"(standard error {scale * d.se:.2f})."
        )
    return "\n".join(lines)


def imbalance_text(
    agg: Mapping[str, Mapping[str, Stat]],
    modalities: Sequence[str],
    references: Mapping[str, str],
    labels: Mapping[str, str],
    joint: str = "joint",
) -> str:
    """Each modality's branch under joint training against its encoder trained alone: the
    imbalance the study relies on, measured rather than assumed."""
    parts = []
    for m in modalities:
        ref = references.get(m)
        if ref is None or joint not in agg or ref not in agg or f"acc.{m}" not in agg[ref]:
            continue
        a, b = agg[joint][f"acc.{m}"], agg[ref][f"acc.{m}"]
        c = compare(b, a)
        below = {"holds": "clearly below", "reversed": "above", "not shown": "not clearly below"}
        parts.append(
            f"the {m} branch reaches {pct(a)}% under joint training against {pct(b)}% for "
            f"the {m} encoder alone ({below.get(c.verdict, c.verdict)} its unimodal potential: "
            f"{100 * c.diff:+.2f} points, standard error {100 * c.se:.2f})"
        )
    if not parts:
        return "Unimodal references were not run: the imbalance is not measured."
    return (
        "**Imbalance, measured.** "
        + "; ".join(parts)[0].upper()
        + "; ".join(parts)[1:]
        + ". (Neither branch of a jointly trained head is trained to classify on its own, so "
        "some shortfall is expected for both; compare the two shortfalls.)"
    )


def load_text(loads: Sequence[float], meta: Mapping[str, Any]) -> str:
    """The load average while training and what it says about the wall time."""
    if not loads:
        return "Load average not recorded."
    parallel = max((s.get("parallel", 0) for s in meta.get("sessions", [])), default=0)
    mean = sum(loads) / len(loads)
    text = (
        f"1-minute load average while training (sampled every 30 s): mean {mean:.2f}, max "
        f"{max(loads):.2f}; the study's own {parallel} single-thread runs account for about "
        f"{parallel}."
    )
    if parallel and mean > parallel + 0.25:
        text += (
            " Other processes shared the machine for part of the time, so the wall time is an "
            "upper bound for an otherwise idle machine; per-run wall times are in the per-run "
            "JSON files."
        )
    return text


def regulation_text(
    groups: Mapping[str, list[Run]], methods: Sequence[Method], strong: Sequence[str]
) -> str:
    """How many epochs each InfoReg configuration actually regulated the strong modality."""
    parts = []
    for method in methods:
        runs = groups.get(method.key, [])
        if not runs or not runs[0].steps:
            continue
        if is_ogm_ge(runs[0]):
            continue
        for m in strong:
            counts = [len(regulated_epochs(r, m)) for r in runs]
            total = len(runs[0].epochs)
            parts.append(
                f"{method.label}: {'/'.join(map(str, counts))} of {total} epochs (seeds "
                f"{', '.join(str(r.seed) for r in runs)}) regulated {m}"
            )
    if not parts:
        return ""
    return (
        "**How much regulation happened** (epochs with at least one logged step regulating "
        "the strong modality): " + "; ".join(parts) + "."
    )


def windows_table(
    groups: Mapping[str, list[Run]], methods: Sequence[Method], modalities: Sequence[str]
) -> str:
    """Per run: the epochs each modality's window was open and the epochs it was regulated."""
    lines = [
        "| Method | seed | "
        + " | ".join(f"{m}: window open | {m}: regulated" for m in modalities)
        + " |"
    ]
    lines.append("|" + "---|" * (2 + 2 * len(modalities)))
    for method in methods:
        for run in groups.get(method.key, []):
            cells = [method.label, str(run.seed)]
            for m in modalities:
                cells += [compact(window_epochs(run, m)), compact(regulated_epochs(run, m))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(
    *,
    study: Study,
    setup: str,
    agg: Mapping[str, Mapping[str, Stat]],
    claims: Sequence[Claim],
    weak: str,
    modalities: Sequence[str],
    groups: Mapping[str, list[Run]],
    figures: Mapping[str, str],
    meta: Mapping[str, Any],
) -> str:
    """The whole report; every number in it comes from `agg`, `claims`, `groups` or `meta`."""
    by_key = {m.key: m for m in study.methods}
    main = results_table(
        study.methods, agg, modalities, ("joint_loss", "unimodal_loss", "reference"), TITLES
    )
    ablation_methods = [replace(by_key[k], group="schedule") for k in ABLATION if k in by_key]
    ablation = results_table(ablation_methods, agg, modalities, ("schedule",), TITLES)
    windows = windows_table(
        groups, [by_key[k] for k in ("joint", *study.alpha_methods) if k in by_key], modalities
    )
    lines = [
        *header_lines(study, meta),
        *verdict_lines(study, agg, claims, weak, modalities, groups),
        "## Setup",
        "",
        setup,
        "## Results (mean ± std over seeds, %, last epoch)",
        "",
        "Acc: fused test accuracy; branch: each modality's prediction from its slice of the "
        'shared head (METHOD.md), the paper\'s "video branch" numbers; n: seeds.',
        "",
        main,
        "",
        *figure_lines(figures, windows),
        "## Ablation: when to regulate (paper Table 4)",
        "",
        ablation,
        "",
        *traceability_lines(meta),
    ]
    return "\n".join(wrap(one) for line in lines for one in line.split("\n"))


def header_lines(study: Study, meta: Mapping[str, Any]) -> list[str]:
    """The title, where the report comes from and the study's wall time."""
    sessions = meta.get("sessions", [])
    wall = sum(s["wall_s"] for s in sessions)
    loads = [x for s in sessions for x in s.get("load_samples", [])]
    return [
        f"# Results: {study.title}",
        "",
        "Generated by `make study-avmnist` (`python -m studies.runner avmnist`) from the runs' "
        "`metrics.jsonl` files; do not edit by hand. Every number below is recomputed from those "
        f"files by `studies/results.py`. Generated {meta.get('generated', 'unknown')}.",
        "",
        f"**Wall time.** {len(meta.get('runs', []))} runs ({meta.get('seeds')} seeds x "
        f"{len({r.split('/')[0] for r in meta.get('runs', [])})} configurations, "
        f"{meta.get('epochs')} epochs each) trained in "
        f"{len(sessions)} session(s) of `studies.runner` totalling **{wall / 60:.1f} min** "
        f"(data build included) on {meta.get('machine', 'unknown')}. " + load_text(loads, meta),
        "",
    ]


def verdict_lines(
    study: Study,
    agg: Mapping[str, Mapping[str, Stat]],
    claims: Sequence[Claim],
    weak: str,
    modalities: Sequence[str],
    groups: Mapping[str, list[Run]],
) -> list[str]:
    """The weak modality, the rule, each claim's verdict, the imbalance and the regulation."""
    labels = {m.key: m.label for m in study.methods}
    by_key = {m.key: m for m in study.methods}
    strong = [m for m in modalities if m != weak]
    return [
        "## Verdict",
        "",
        f"The weak modality, chosen from the numbers (the lower branch accuracy under joint "
        f"training), is **{weak}**; the strong one is **{', '.join(strong)}**. Each claim of the "
        f"paper is tested as a difference of means over seeds with its standard error "
        f"(Welch): it **holds** when the difference exceeds {Z:g} standard errors, is "
        f"**reversed** when it is below minus {Z:g} standard errors, and is **not shown** "
        f"otherwise. Here: {verdict_counts(claims)}.",
        "",
        claims_list(claims, labels),
        "",
        imbalance_text(agg, modalities, study.references, labels),
        "",
        regulation_text(groups, [by_key[k] for k in study.alpha_methods if k in by_key], strong),
        "",
    ]


def verdict_counts(claims: Sequence[Claim]) -> str:
    """How many of the paper's claims (and, apart, of the checks) hold, are not shown, reverse."""

    def tally(selected: Sequence[Claim]) -> str:
        verdicts = [c.comparison.verdict for c in selected]
        return ", ".join(f"{verdicts.count(v)} {v}" for v in ("holds", "not shown", "reversed"))

    paper = [c for c in claims if not c.claim.startswith("(Check")]
    checks = [c for c in claims if c.claim.startswith("(Check")]
    return f"the paper's claims: {tally(paper)}" + (
        f"; the checks (not claims of the paper): {tally(checks)}" if checks else ""
    )


def figure_lines(figures: Mapping[str, str], windows: str) -> list[str]:
    """The three figures (paths relative to the report) with their captions; `windows`: the
    table of window and regulated epochs per run."""
    return [
        "## Information amount and the prime learning window (paper Fig. 1)",
        "",
        f"![information]({figures['information']})",
        "",
        "Thin lines: single seeds; thick: their mean. A band is shaded in a modality's color in "
        "every epoch where that modality's window was open, darker when more seeds agree. Joint "
        "training regulates nothing but records the same traces and window decisions, so the "
        "two panels compare. The windows (epochs numbered from 0; paper variant: tested from "
        "epoch 2 on) and the epochs in which a modality was actually regulated, per run:",
        "",
        windows,
        "",
        "## Regulation coefficient over training",
        "",
        f"![alpha]({figures['alpha']})",
        "",
        "InfoReg panels: alpha x regulated per logged step (0 where the modality was not "
        "regulated), mean over seeds. OGM-GE panel: the factor k its dominant modality's "
        "gradients were scaled by (1 = not modulated).",
        "",
        "## Branch accuracy over training",
        "",
        f"![branch accuracy]({figures['branch_accuracy']})",
        "",
    ]


def traceability_lines(meta: Mapping[str, Any]) -> list[str]:
    """Where every number can be traced to, and how to reproduce the study."""
    return [
        "## Traceability and reproduction",
        "",
        f"- Aggregates, the claims and each run's metrics.jsonl path and SHA-256: "
        f"`{meta.get('summary_json')}`; per run, its epoch records: `{meta.get('runs_dir')}`.",
        "- Data, exactly as run: "
        + "; ".join(f"`inforeg-preprocess {c}`" for c in meta.get("data_commands", [])),
        f"- One run by hand: `{meta.get('example_command')}`.",
        "- `make study-avmnist` skips finished runs, so on this checkout it regenerates this "
        "report from the same runs; on a fresh clone it re-trains everything (numbers then "
        "agree within the seed spread above, not to the digit: runs on other machines or with "
        "other thread counts are not bit-identical).",
        "- `python -m studies.audit RUN` recomputes a run's regulation decisions from its "
        "metrics.jsonl per METHOD.md.",
        "",
    ]


def wrap(line: str, width: int = 100) -> str:
    """Fill a long prose line (not a table row, heading or image) to `width` columns."""
    if len(line) <= width or line.startswith(("|", "#", "!")):
        return line
    indent = "  " if line.startswith("- ") else ""
    return textwrap.fill(
        line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )
