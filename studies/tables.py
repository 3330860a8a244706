"""The report's tables as markdown, laid out as the paper's Tables 1-4, from the runs alone.

Every cell is computed here from the runs (`studies.results`, `studies.paired`) or taken from the
paper's published numbers (`studies.paper`); "–" where a number does not exist, and a method
without runs gets a "not run" row whose reason is listed under the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from studies.paired import Paired, paired
from studies.results import Method, Run, per_seed, regulated_epochs, window_epochs


def mean_sd(values: Sequence[float], scale: float = 100.0) -> str:
    """'90.50 ± 0.71' (mean ± sample sd, scaled); '–' for none."""
    vals = [scale * v for v in values if not math.isnan(v)]
    if not vals:
        return "–"
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return f"{mean:.2f} ± {sd:.2f}"


def diff_cell(p: Paired | None, scale: float = 100.0) -> str:
    """'+1.23 ± 0.45 (4/5)': paired mean difference ± its standard error (seeds won / seeds)."""
    if p is None or p.n == 0:
        return "–"
    se = "–" if math.isnan(p.se) else f"{scale * p.se:.2f}"
    return f"{scale * p.mean:+.2f} ± {se} ({p.wins}/{p.n})"


def metric_cell(runs: Sequence[Run] | None, metric: str) -> str:
    return mean_sd(list(per_seed(runs, metric).values())) if runs else "–"


def paired_of(groups: Mapping[str, list[Run]], a: str, b: str, metric: str) -> Paired | None:
    if not groups.get(a) or not groups.get(b):
        return None
    return paired(per_seed(groups[a], metric), per_seed(groups[b], metric))


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def not_run_notes(
    keys: Sequence[str], labels: Mapping[str, str], not_run: Mapping[str, str]
) -> list[str]:
    """'- Greedy: not run (reason)' for each key without runs."""
    return [f"- {labels.get(k, k)}: not run ({not_run.get(k, 'no finished run')})" for k in keys]


def imbalance_table(
    groups: Mapping[str, list[Run]],
    modalities: Sequence[str],
    references: Mapping[str, str],
    labels: Mapping[str, str],
) -> list[str]:
    """Table 1: each modality's branch under joint training (and Joint*) against its encoder
    trained alone, with the paired difference by seed."""
    jointly = [k for k in ("joint", "joint_star") if groups.get(k)]
    head = ["Modality", *(f"{labels.get(k, k)}: branch" for k in jointly), "encoder alone"]
    head += [f"{labels.get(k, k)} − alone (se; seeds above)" for k in jointly]
    rows = []
    for m in modalities:
        ref = references.get(m)
        alone = groups.get(ref or "", [])
        row = [m, *(metric_cell(groups[k], f"acc.{m}") for k in jointly)]
        row.append(metric_cell(alone, "acc"))
        for k in jointly:
            diff = (
                paired(per_seed(groups[k], f"acc.{m}"), per_seed(alone, "acc")) if alone else None
            )
            row.append(diff_cell(diff))
        rows.append(row)
    return table(head, rows)


def method_table(
    rows: Sequence[Method],
    groups: Mapping[str, list[Run]],
    weak: str,
    strong: str,
    baseline: str,
    paper: tuple[Mapping[str, float], Mapping[str, float]],
    not_run: Mapping[str, str],
) -> list[str]:
    """Tables 2 and 3: one row per method; the paired difference of fused accuracy against
    `baseline` (Joint, resp. Joint*); `paper`: (CREMA-D acc, CREMA-D video branch) by key."""
    labels = {m.key: m.label for m in rows}
    head = [
        "Method",
        "Acc (last epoch)",
        f"{weak} branch (weak)",
        f"{strong} branch (strong)",
        "Macro-F1",
        f"Δ acc vs {labels.get(baseline, baseline)} (se; seeds won)",
        "Paper, CREMA-D acc",
        "Acc (best epoch, chosen on test)",
        "n",
    ]
    cells, missing = [], []
    paper_acc, paper_weak = paper
    for m in rows:
        runs = groups.get(m.key)
        if not runs:
            missing.append(m.key)
            cells.append([m.label, "not run", *["–"] * (len(head) - 2)])
            continue
        acc = f"{paper_acc[m.key]:.2f}" if m.key in paper_acc else "–"
        if m.key in paper_weak:
            acc += f" (video branch {paper_weak[m.key]:.2f})"
        diff = "–" if m.key == baseline else diff_cell(paired_of(groups, m.key, baseline, "acc"))
        cells.append(
            [
                m.label,
                metric_cell(runs, "acc"),
                metric_cell(runs, f"acc.{weak}"),
                metric_cell(runs, f"acc.{strong}"),
                metric_cell(runs, "macro_f1"),
                diff,
                acc,
                metric_cell(runs, "best_acc"),
                str(len(runs)),
            ]
        )
    notes = not_run_notes(missing, labels, not_run)
    return table(head, cells) + (["", *notes] if notes else [])


def schedule_table(
    schedules: Mapping[str, Mapping[str, str]],
    groups: Mapping[str, list[Run]],
    labels: Mapping[str, str],
    paper: Mapping[str, Mapping[str, float]],
) -> list[str]:
    """Table 4: rows base methods, columns whole training / inside / outside the window (fused
    accuracy, mean ± sd; the run key beneath), and the paper's CREMA-D row where known."""
    order = (
        ("always", "whole training"),
        ("window", "only inside the window"),
        ("outside", "only outside the window"),
    )
    head = ["Method", *(title for _, title in order), "Paper, CREMA-D (whole / inside / outside)"]
    rows = []
    for base, runs in schedules.items():
        row = [labels.get(base, base)]
        for schedule, _ in order:
            key = runs[schedule]
            row.append(f"{metric_cell(groups.get(key), 'acc')} (`{key}`)")
        known = paper.get(base)
        row.append(" / ".join(f"{known[s]:.2f}" for s, _ in order) if known else "–")
        rows.append(row)
    return table(head, rows)


def regulation_table(
    methods: Sequence[Method], groups: Mapping[str, list[Run]], modalities: Sequence[str]
) -> list[str]:
    """Per regulated method: epochs regulated per seed and per modality (from the step records'
    ``regulated.<m>``) and epochs with the window open; a method that never regulated says so."""
    head = ["Method", "epochs"]
    head += [f"{m}: regulated epochs per seed (mean)" for m in modalities]
    head += [f"{m}: window-open epochs per seed" for m in modalities]
    head.append("note")
    rows = []
    for method in methods:
        runs = groups.get(method.key)
        if not runs:
            continue
        row = [method.label, str(len(runs[0].epochs))]
        counts = {m: [len(regulated_epochs(r, m)) for r in runs] for m in modalities}
        for m in modalities:
            c = counts[m]
            row.append(f"{'/'.join(map(str, c))} ({sum(c) / len(c):.1f})")
        for m in modalities:
            row.append("/".join(str(len(window_epochs(r, m))) for r in runs))
        never = all(v == 0 for c in counts.values() for v in c)
        row.append("**never regulated**" if never else "")
        rows.append(row)
    return table(head, rows) if rows else ["(No regulated method has a finished run.)"]
