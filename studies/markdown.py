"""A study's report as markdown (``docs/RESULTS.md``): its verdict, claims, tables and text.

Every number in the report comes from `studies.analysis.Analysis` (the runs, the claims), the
calibration (`studies.calibration_report`), the provenance check (`studies.provenance`), the
paper's published numbers (`studies.paper`) or the study's own bookkeeping (``meta``: sessions,
wall time, commands); nothing here reads a file.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from studies import paper
from studies.analysis import Analysis
from studies.avmnist import Study
from studies.claims import NOT_RUN, SCHEDULE_RUNS, Claim
from studies.paired import HOLDS, NOT_MEASURED, NOT_SHOWN, REVERSED, t_critical
from studies.results import is_regulated
from studies.tables import (
    imbalance_table,
    method_table,
    regulation_table,
    schedule_table,
    table,
)


def scale_of(metric: str) -> tuple[float, str]:
    """Accuracies in points; information amounts as logged."""
    return (100.0, " points") if metric.startswith("acc") else (1.0, "")


def claim_numbers(c: Claim, labels: Mapping[str, str]) -> str:
    """'+0.40 ± 0.30 points, t = 1.33 on 4 df (critical 2.776), InfoReg higher in 3 of 5
    seeds' or 'not run (reason)'."""
    if c.result is None:
        return f"not run ({c.not_run})"
    p = c.result
    scale, unit = scale_of(c.spec.metric)
    if p.n == 0:
        return "the two methods have no seed in common"
    if p.n < 2:
        return f"{scale * p.mean:+.4g}{unit} from {p.n} common seed: no standard error"
    return (
        f"{scale * p.mean:+.2f} ± {scale * p.se:.2f}{unit} (paired mean difference ± se), "
        f"t = {p.t:.2f} on {p.n - 1} df (critical {p.critical:.3f}), "
        f"{labels.get(c.spec.better, c.spec.better)} higher in {p.wins} of {p.n} seeds"
    )


def claims_table(claims: Sequence[Claim], labels: Mapping[str, str]) -> list[str]:
    head = [
        "Claim",
        "Statement",
        "A vs B, metric",
        "paired Δ (A − B) ± se",
        "t (critical)",
        "A higher in",
        "verdict",
    ]
    rows = []
    for c in claims:
        s = c.spec
        versus = f"{labels.get(s.better, s.better)} vs {labels.get(s.worse, s.worse)}, `{s.metric}`"
        if c.result is None:
            rows.append([s.key, s.text, versus, "–", "–", "–", f"{NOT_RUN}: {c.not_run}"])
            continue
        p = c.result
        scale, _ = scale_of(s.metric)
        digits = ".3g" if scale == 1 else ".2f"
        se = "–" if math.isnan(p.se) else format(scale * p.se, digits)
        mean = format(scale * p.mean, "+" + digits)
        t = "–" if math.isnan(p.t) else f"{p.t:.2f} ({p.critical:.3f})"
        rows.append(
            [s.key, s.text, versus, f"{mean} ± {se}", t, f"{p.wins} of {p.n}", f"**{p.verdict}**"]
        )
    return table(head, rows)


def tally(claims: Sequence[Claim]) -> str:
    verdicts = [c.verdict for c in claims]
    kinds = (HOLDS, NOT_SHOWN, REVERSED, NOT_MEASURED, NOT_RUN)
    return ", ".join(f"{verdicts.count(v)} {v}" for v in kinds if verdicts.count(v))


def verdict_lines(a: Analysis) -> list[str]:
    """The verdict, from P1-P3 alone, stated plainly whatever it is; then the secondaries'
    tally with the multiple-comparison caveat."""
    primary = [c for c in a.claims if c.spec.primary]
    secondary = [c for c in a.claims if not c.spec.primary]
    verdicts = {c.verdict for c in primary}
    if verdicts == {HOLDS}:
        head = "**The paper's central claims hold on this testbed**: all three primary claims hold."
    elif verdicts <= {NOT_SHOWN, NOT_RUN} and NOT_SHOWN in verdicts:
        head = (
            "**The paper's central claims are not shown on this testbed**: no primary claim "
            "holds and none is reversed."
        )
    elif verdicts == {NOT_RUN}:
        head = "**No primary claim could be tested**: their runs are missing."
    else:
        head = f"**Of the paper's three central claims: {tally(primary)}.**"
    lines = ["## Verdict", "", head, ""]
    for c in primary:
        if c.result is None:
            lines.append(f"- **{c.spec.key}** {c.spec.text}: **{NOT_RUN}** ({c.not_run}).")
        else:
            numbers = claim_numbers(c, a.labels)
            lines.append(f"- **{c.spec.key}** {c.spec.text}: {numbers}: **{c.verdict}**.")
    tested = [c for c in secondary if c.result is not None and c.verdict != NOT_MEASURED]
    lines += [
        "",
        f"Secondary claims (S1-S4, {len(secondary)} paired comparisons): {tally(secondary)}. "
        f"With {len(tested)} comparisons tested at the 5 % level, about "
        f'{0.05 * len(tested):.1f} "holds" or "reversed" may arise by chance alone, so no '
        "single secondary verdict carries the conclusion; the verdict above rests on P1-P3. "
        f"Dose-response (S5): **{a.dose.verdict}**; ranking against the paper (S6): "
        + (
            f"Spearman {a.ranking.rho:+.2f} over {len(a.ranking.compared)} methods (descriptive)."
            if len(a.ranking.compared) >= 2
            else "fewer than two methods to compare."
        )
        + " Details below.",
        "",
    ]
    return lines


def rule_text(n_seeds: int) -> str:
    df = max(n_seeds - 1, 1)
    crit = t_critical(df) if df <= 30 else math.nan
    return (
        "**The test** (protocol section 4). For methods A and B and a metric, the per-seed "
        "differences d_s = metric(A, s) − metric(B, s) over the seeds both have give their mean, "
        "standard error se = sd(d)/sqrt(n) and t = mean/se. **holds**: mean > 0 and t above the "
        f"two-sided 5 % critical value of t on n − 1 degrees of freedom ({crit:.3f} for {df} df); "
        "**reversed**: mean < 0 and t below minus that value; **not shown** otherwise. Metrics "
        "are the last epoch's; accuracies in points. W, the weak modality, is the one whose "
        "branch is lower under joint training."
    )


def dose_lines(a: Analysis, figure: str | None) -> list[str]:
    d = a.dose
    lines = ["## Dose-response (S5)", ""]
    if not d.points:
        return [*lines, f"Not run: {d.not_run}.", ""]
    series = ", ".join(a.labels.get(k, k) for k in d.methods)
    per = ", ".join(
        f"{s}: {r:+.2f}" if not math.isnan(r) else f"{s}: undefined" for s, r in d.per_seed.items()
    )
    lines += [
        f"Series: {series}. x: epochs in which the run regulated the strong ({a.strong}) "
        f"modality (from its step records; joint training: 0); y: its `acc.{a.weak}` minus joint "
        f"training's of the same seed. Spearman over all {len(d.points)} (run, seed) points: "
        f"**{d.rho:+.3f}**; per seed: {per} (positive in {d.positive_seeds} of "
        f"{len(d.per_seed)}; {d.needed} needed). Verdict: **{d.verdict}** (positive overall and "
        f"per seed in at least {d.needed} of {len(d.per_seed)} seeds)."
        + f" The fused-accuracy gain against the same x (descriptive): Spearman "
        f"{d.rho_fused:+.3f}." + (f" Missing from the series: {d.not_run}." if d.not_run else ""),
        "",
    ]
    if figure:
        lines += [f"![dose-response]({figure})", ""]
    return lines


def ranking_lines(a: Analysis) -> list[str]:
    r = a.ranking
    ours = ", ".join(f"{a.labels.get(k, k)} {100 * v:.2f}" for k, v in r.ours)
    rows = [[a.labels.get(k, k), f"{100 * v:.2f}", f"{p:.2f}"] for k, v, p in r.compared]
    rho = "undefined (fewer than two methods)" if math.isnan(r.rho) else f"**{r.rho:+.2f}**"
    return [
        "## Ranking against the paper (S6, descriptive)",
        "",
        f"Our Table 2 + 3 methods by mean fused accuracy: {ours}. The paper's CREMA-D accuracy "
        f"is available to us ({paper.SOURCE}) only for Joint training, OGM, AGM, InfoReg and "
        "InfoReg*; the other methods' published numbers are not, so the rank correlation uses "
        f"those {len(r.compared)} that ran. Spearman (average ranks for ties): {rho}.",
        "",
        *table(["Method", "ours, acc (%)", "paper, CREMA-D acc (%)"], rows),
        "",
    ]


def tables_lines(a: Analysis, study: Study) -> list[str]:
    """Tables 1-4 and the regulation counts."""
    crema = (paper.CREMAD_ACC, paper.CREMAD_WEAK_BRANCH)
    table4 = {k: SCHEDULE_RUNS[k] for k in ("ogm", "agm", "pmr", "inforeg")}  # the paper's rows
    return [
        "## Table 1: the imbalance (joint training's branches against each encoder alone)",
        "",
        "The paper's Table 1 is not available to us; this is ours. Branch: each modality's "
        "prediction from its slice of the shared head (mean ± sd over seeds, %); the difference "
        "is paired by seed.",
        "",
        *imbalance_table(a.groups, a.modalities, study.references, a.labels),
        "",
        "## Table 2: joint loss only",
        "",
        "Mean ± sd over seeds (%, last epoch); Δ: paired difference of fused accuracy against "
        "Joint training, ± its standard error, (seeds in which the method was higher / seeds). "
        'Paper: CREMA-D (ResNet-18), "–" where the paper\'s number is not available to us. The '
        "best epoch's accuracy is selected on the test split, so optimistic: shown beside the "
        "last epoch's, never instead (protocol section 3).",
        "",
        *method_table(a.group("joint_loss"), a.groups, a.weak, a.strong, "joint", crema, a.not_run),
        "",
        "## Table 3: unimodal losses added",
        "",
        "As Table 2, Δ against Joint*.",
        "",
        *method_table(
            a.group("unimodal_loss"), a.groups, a.weak, a.strong, "joint_star", crema, a.not_run
        ),
        "",
        "## Table 4: when to regulate",
        "",
        "Fused accuracy (mean ± sd, %) with the run it comes from. The window is the "
        "per-modality test InfoReg uses (K = 0.04). The paper's CREMA-D numbers are available to "
        "us for InfoReg only.",
        "",
        *schedule_table(table4, a.groups, a.labels, paper.CREMAD_SCHEDULES),
        "",
        "## How much each method regulated",
        "",
        "Epochs in which at least one logged step (every `run.log_every` steps) set "
        "`regulated.<m>`, per seed, and epochs with the modality's window open. InfoReg sets it "
        "where its pull is applied; OGM / OGM-GE on the dominant modality in its modulation "
        "epochs; AGM on every modality in its modulation epochs (its k may then be near 1); "
        "PMR where its prototype term, which speeds a modality up, has a positive weight; "
        "Greedy on the modality it cares for (by its rule the one learning slower) where that "
        "modality's MMTM gate was replaced by its running average; G-Blending and MMPareto "
        "wherever their schedule allows. So PMR's and Greedy's flags mark help given to a "
        "modality, the others' a slowing or a reweighting. By protocol section 5 a method that "
        "never acted while the strong modality's window was open (for the methods that slow "
        "it: never regulated it there) is an implementation failure, not a result.",
        "",
        *regulation_table([m for m in a.methods if is_regulated(m)], a.groups, a.modalities),
        "",
    ]


def image(name: str, figures: Mapping[str, str]) -> str:
    """The figure's markdown image, or a line saying none was drawn (its methods did not run)."""
    if name not in figures:
        return f"(No {name.replace('_', ' ')} figure: none of its methods has a finished run.)"
    return f"![{name.replace('_', ' ')}]({figures[name]})"


def figure_lines(figures: Mapping[str, str]) -> list[str]:
    return [
        "## Information amount and the prime learning window (paper Fig. 1)",
        "",
        image("information", figures),
        "",
        "Thin lines: single seeds; thick: their mean. The strips along the top mark, in each "
        "modality's color, the epochs its window was open, darker when more seeds agree. Joint "
        "training regulates nothing but records the same traces and window decisions.",
        "",
        "## Branch accuracy over training",
        "",
        image("branch_accuracy", figures),
        "",
        "Each branch's test accuracy per epoch for the methods of Tables 2 and 3 (mean over "
        "seeds); dashed: the encoder trained alone.",
        "",
        "## Regulation coefficient over training",
        "",
        image("alpha", figures),
        "",
        "InfoReg panels: alpha x regulated per logged step (0 where not regulated), mean over "
        "seeds. OGM-GE panel: the factor k its gradients were scaled by (1 = not modulated).",
        "",
    ]


def render_markdown(
    *,
    study: Study,
    analysis: Analysis,
    setup: str,
    calibration: Sequence[str],
    provenance: Sequence[str],
    figures: Mapping[str, str],
    meta: Mapping[str, Any],
) -> str:
    """The whole report. `calibration` and `provenance`: their sections' lines."""
    a = analysis
    seeds = max((len(r) for r in a.groups.values()), default=0)
    lines = [
        *header_lines(study, meta),
        *provenance,
        *verdict_lines(a),
        "## Claims",
        "",
        rule_text(seeds),
        "",
        *claims_table(a.claims, a.labels),
        "",
        *dose_lines(a, figures.get("dose_response")),
        *ranking_lines(a),
        "## Setup",
        "",
        setup,
        *calibration,
        *tables_lines(a, study),
        *figure_lines(figures),
        *traceability_lines(meta),
    ]
    return "\n".join(wrap(one) for line in lines for one in line.split("\n"))


def header_lines(study: Study, meta: Mapping[str, Any]) -> list[str]:
    """The title, where the report comes from and the study's wall time."""
    sessions = meta.get("sessions", [])
    wall = sum(s["wall_s"] for s in sessions)
    loads = [x for s in sessions for x in s.get("load_samples", [])]
    load = (
        f" 1-minute load average while training (every 30 s): mean "
        f"{sum(loads) / len(loads):.2f}, max {max(loads):.2f}."
        if loads
        else ""
    )
    return [
        f"# Results: {study.title}",
        "",
        "Generated by `make study-avmnist` (`python -m studies.runner avmnist`) from the runs' "
        "`metrics.jsonl` files; do not edit by hand. Every number below is recomputed from those "
        f"files (`studies/`). Generated {meta.get('generated', 'unknown')}. The protocol: "
        "`docs/study-protocol.md`.",
        "",
        f"**Wall time.** {len(meta.get('runs', []))} runs ({meta.get('seeds')} seeds, "
        f"{meta.get('epochs')} epochs each) trained in {len(sessions)} session(s) of "
        f"`studies.runner` totalling **{wall / 60:.1f} min** (calibration and data build "
        f"included) on {meta.get('machine', 'unknown')}.{load}{unrecorded_text(meta)}",
        "",
    ]


def unrecorded_text(meta: Mapping[str, Any]) -> str:
    """The runs whose training time no recorded session holds (a runner killed before it
    recorded; the runner now records after every run), so the total above leaves them out."""
    recorded = {name for s in meta.get("sessions", []) for name in s.get("trained", {})}
    missing = [name for name in meta.get("runs", []) if name not in recorded]
    if not missing:
        return ""
    return (
        f" **{len(missing)} of the runs are not in that total**: they were trained by runner "
        "invocations stopped before they could record their time (the runner now records its "
        "session after every run)."
    )


def traceability_lines(meta: Mapping[str, Any]) -> list[str]:
    """Where every number can be traced to, and how to reproduce the study."""
    return [
        "## Traceability and reproduction",
        "",
        f"- Per method and metric, the per-seed values, every claim's per-seed differences and "
        f"each run's metrics.jsonl path and SHA-256: `{meta.get('summary_json')}`; per run, its "
        f"epoch records: `{meta.get('runs_dir')}`.",
        "- Data, exactly as run: "
        + "; ".join(f"`inforeg-preprocess {c}`" for c in meta.get("data_commands", [])),
        f"- One run by hand: `{meta.get('example_command')}`.",
        "- `make study-avmnist` skips finished runs, so on this checkout it regenerates this "
        "report from the same runs.",
        "- `python -m studies.audit RUN` recomputes a run's regulation decisions from its "
        "metrics.jsonl per METHOD.md (protocol section 5).",
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
