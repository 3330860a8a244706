"""The report's calibration section (docs/study-protocol.md, section 1), from the calibration runs.

The runner's `calibrate` trains joint training and the encoders alone per candidate in
``OUT/calibration/<candidate>/<method>/seed<N>/`` and writes its decision to
``OUT/calibration/calibration.json``. Here the criteria, the choice and the dose thresholds are
recomputed from those runs' ``metrics.jsonl`` with the same pure functions
(`studies.calibration`), and checked against what calibration.json recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studies import calibration
from studies.avmnist import Study
from studies.results import Run, finished_run


@dataclass(frozen=True, kw_only=True)
class CalibrationView:
    """The calibration as recomputed from its runs."""

    results: dict[str, dict[str, Any]]
    """candidate -> `calibration.evaluate`'s criteria, for the candidates that were tried."""
    joint: dict[str, list[Run]]
    """candidate -> its joint training runs (calibration seeds)."""
    chosen: str
    why: str
    dose: dict[str, Any]
    """`calibration.dose_thresholds` on the chosen candidate's joint runs."""
    recorded: dict[str, Any] = field(default_factory=dict)
    """calibration.json as the runner wrote it ({} when absent)."""

    def disagreements(self) -> list[str]:
        """Where the recomputation differs from calibration.json (empty: none)."""
        if not self.recorded:
            return []
        out = []
        if self.recorded.get("chosen") != self.chosen:
            out.append(f"calibration.json chose {self.recorded.get('chosen')}, not {self.chosen}")
        thresholds = self.recorded.get("dose", {}).get("thresholds")
        if thresholds != self.dose["thresholds"]:
            out.append(f"calibration.json's dose thresholds are {thresholds}")
        return out


def runs_of(folder: Path, seeds: Sequence[int], method: str) -> list[Run]:
    """The finished runs of `method` under a candidate's folder (unfinished ones are left out,
    as the runner's calibration waits for them)."""
    runs = [finished_run(folder / method / f"seed{seed}", method, seed)[0] for seed in seeds]
    return [r for r in runs if r is not None]


def load_calibration(study: Study, out: Path) -> CalibrationView | None:
    """The calibration recomputed from ``out/calibration``; None when no candidate has joint
    runs (the study was not calibrated)."""
    root = out / "calibration"
    joint_key, *alone_keys = study.calibration_methods
    results: dict[str, dict[str, Any]] = {}
    joint: dict[str, list[Run]] = {}
    for candidate in study.candidates:
        folder = root / candidate.name
        runs = runs_of(folder, study.calibration_seeds, joint_key)
        if not runs:
            continue
        alone = {
            k.removesuffix("_only"): runs_of(folder, study.calibration_seeds, k) for k in alone_keys
        }
        joint[candidate.name] = runs
        results[candidate.name] = calibration.evaluate(
            runs, alone, study.strong, study.weak, study.criteria
        )
    if not results:
        return None
    order = [c.name for c in study.candidates]
    chosen, why = calibration.choose(results, order)
    dose = calibration.dose_thresholds(joint[chosen], study.strong, study.dose_grid)
    path = root / "calibration.json"
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    return CalibrationView(
        results=results, joint=joint, chosen=chosen, why=why, dose=dose, recorded=recorded
    )


def met(value: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not evaluated"}[value]


def stretch_text(runs: Sequence[Run], stretches: Sequence[Mapping[str, int]]) -> str:
    """'100: 2-7 (6); 101: none' for each seed's first open audio-window stretch."""
    parts = []
    for run, s in zip(runs, stretches, strict=True):
        if s["start"] < 0:
            parts.append(f"{run.seed}: none")
        else:
            parts.append(f"{run.seed}: {s['start']}-{s['start'] + s['length'] - 1} ({s['length']})")
    return "; ".join(parts)


def candidate_rows(view: CalibrationView, study: Study) -> list[str]:
    crit = study.criteria
    head = [
        "Candidate",
        "batch, lr, epochs, StepLR",
        f"C1: first {study.strong} window stretch per seed (epochs, length)",
        f"C1 (>= {crit.min_stretch} from epoch <= {crit.latest_start}, >= {crit.min_seeds} seeds)",
        "C2: fused acc (joint)",
        f"C2 (<= {100 * crit.max_fused_acc:.0f} %)",
        f"C3: {study.weak} branch joint / alone / gap",
        f"C3 (gap >= {100 * crit.min_weak_gap:.0f})",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in study.candidates:
        if c.name not in view.results:
            done = calibration.meets_all(view.results[view.chosen])
            why = "not tried (an earlier candidate met every criterion)" if done else "not tried"
            lines.append(f"| {c.name} | {why} |" + " |" * (len(head) - 2))
            continue
        r = view.results[c.name]
        finished, seeds = len(view.joint[c.name]), len(study.calibration_seeds)
        missing = f" (only {finished} of {seeds} joint runs finished)" if finished < seeds else ""
        c3 = r["C3"]
        gap = (
            f"{100 * c3['weak_joint']:.2f} / {100 * c3['weak_alone']:.2f} / {100 * c3['gap']:.2f}"
            if c3["gap"] is not None
            else f"{100 * c3['weak_joint']:.2f} / – / –"
        )
        cells = [
            (f"**{c.name}**" if c.name == view.chosen else c.name) + missing,
            f"{c.batch_size}, {c.lr:g}, {c.epochs}, ({c.step_size}, {c.gamma:g})",
            stretch_text(view.joint[c.name], r["C1"]["stretches"]),
            f"{met(r['C1']['met'])} ({r['C1']['seeds_met']} of {len(view.joint[c.name])})",
            f"{100 * r['C2']['fused_acc']:.2f}",
            met(r["C2"]["met"]),
            gap,
            met(c3["met"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def shortfalls(result: Mapping[str, Any], study: Study) -> list[str]:
    """What the chosen candidate misses, criterion by criterion, and by how much."""
    crit, out = study.criteria, []
    if result["C1"]["met"] is False:
        out.append(
            f"C1: {result['C1']['seeds_met']} seed(s) with a long enough first window, "
            f"{crit.min_seeds} needed"
        )
    if result["C2"]["met"] is False:
        over = 100 * (result["C2"]["fused_acc"] - crit.max_fused_acc)
        cap = 100 * crit.max_fused_acc
        out.append(f"C2: fused accuracy {over:.2f} points above the {cap:g} cap")
    if result["C3"]["met"] is False:
        short = 100 * (crit.min_weak_gap - result["C3"]["gap"])
        out.append(
            f"C3: the weak-branch gap {short:.2f} points short of {100 * crit.min_weak_gap:g}"
        )
    if result["C3"]["met"] is None:
        out.append("C3: not evaluated (no encoder-alone runs)")
    return out


def dose_rows(view: CalibrationView, study: Study) -> list[str]:
    lines = [
        f"| K | median open {study.strong}-window epochs (replayed on {view.chosen}'s joint runs) "
        "| used |",
        "|---|---|---|",
    ]
    for k in sorted(study.dose_grid):
        used = "yes" + (" (the paper's)" if k == calibration.PAPER_K else "")
        lines.append(
            f"| {k:g} | {view.dose['median_open_epochs'][str(k)]:g} | "
            f"{used if k in view.dose['thresholds'] else ''} |"
        )
    return lines


def calibration_lines(view: CalibrationView | None, study: Study, figure: str) -> list[str]:
    """The report's calibration section."""
    lines = ["## Testbed calibration (protocol section 1, unregulated runs only)", ""]
    if view is None:
        return [*lines, "No calibration runs were found: the recipe was not calibrated.", ""]
    seeds = ", ".join(str(s) for s in study.calibration_seeds)
    lines += [
        f"Candidates in the protocol's order, each with joint training on the calibration seeds "
        f"{seeds} (never used by the study) and, where joint training met C1, each encoder alone. "
        "Recomputed from the calibration runs' metrics.jsonl.",
        "",
        *candidate_rows(view, study),
        "",
        f"**Chosen: {view.chosen}** ({view.why}).",
    ]
    misses = shortfalls(view.results[view.chosen], study)
    if misses:
        lines.append("It misses: " + "; ".join(misses) + ".")
    wrong = view.disagreements()
    lines.append(
        "This agrees with `calibration.json`."
        if view.recorded and not wrong
        else ("**Differs from calibration.json:** " + "; ".join(wrong) + ".")
        if wrong
        else "(No calibration.json was found to compare with.)"
    )
    lines += ["", "**Dose-response thresholds** (protocol section 1.2):", ""]
    lines += dose_rows(view, study)
    if view.dose["fallback"]:
        lines += [
            "",
            "On the " + " and ".join(view.dose["fallback"]) + " side no grid value "
            "differs from K = 0.04 by 2 or more median epochs: the grid's end is used.",
        ]
    lines += [
        "",
        f"![calibration]({figure})",
        "",
        f"Calibration joint runs, one panel per candidate and seed: each modality's information "
        f"amount per epoch; the strips along the top mark, in its color, the epochs its window "
        f"(the paper's test, K = {calibration.PAPER_K}) was open.",
        "",
    ]
    return lines
