"""A study's figures and its markdown report, drawn from `studies.results` (runs' records only).

Figures (PNG, in the study's results folder):
- ``information.png``: each modality's information amount per epoch (mean over seeds, thin lines
  per seed) for joint training and InfoReg, each epoch shaded by the fraction of seeds whose
  window was open (the paper's Fig. 1);
- ``alpha.png``: the coefficient applied to each modality over training (0 where not
  regulated), mean over seeds, one panel per InfoReg configuration;
- ``branch_accuracy.png``: each modality's branch accuracy per epoch for every method, with the
  unimodal reference (the encoder trained alone) dashed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launch.report import close_figure, compact, pyplot, series
from studies.avmnist import Study
from studies.results import (
    Claim,
    Method,
    Run,
    Stat,
    Z,
    aggregate,
    by_method,
    compare,
    final_metrics,
    load_run,
    regulated_epochs,
    study_claims,
    to_json,
    weak_modality,
    window_epochs,
)

if TYPE_CHECKING:  # studies.runner imports this module when it reports
    from studies.runner import RunSpec


def epoch_mean(runs: Sequence[Run], key: str) -> tuple[list[int], list[float]]:
    """Epoch numbers and the mean of `key` over the runs that have it at each epoch."""
    return _mean_over_runs([r.epochs for r in runs], "epoch", _getter(key))


def window_fraction(runs: Sequence[Run], modality: str) -> dict[int, float]:
    """epoch -> fraction of the runs whose window for `modality` was open in that epoch."""
    counts: dict[int, int] = {}
    for run in runs:
        for e in run.epochs:
            counts[e["epoch"]] = counts.get(e["epoch"], 0) + int(
                bool(e.get(f"window_open.{modality}"))
            )
    return {t: c / len(runs) for t, c in counts.items()} if runs else {}


def applied_alpha(runs: Sequence[Run], modality: str) -> tuple[list[int], list[float]]:
    """Step numbers and the mean over runs of alpha * regulated (0 = not regulated)."""
    return step_mean(runs, lambda s: _product(s, f"alpha.{modality}", f"regulated.{modality}"))


def step_mean(
    runs: Sequence[Run], value: Callable[[dict[str, Any]], float | None]
) -> tuple[list[int], list[float]]:
    """Step numbers and the mean over runs of `value(step record)` where it is not None."""
    return _mean_over_runs([r.steps for r in runs], "step", value)


def _mean_over_runs(
    records: Sequence[list[dict[str, Any]]],
    index: str,
    value: Callable[[dict[str, Any]], float | None],
) -> tuple[list[int], list[float]]:
    """The values of `index` (epoch or step) and, at each, the mean of `value` over the runs'
    records (one list per run) where it is not None."""
    values: dict[int, list[float]] = {}
    for run_records in records:
        for r in run_records:
            v = value(r)
            if v is not None:
                values.setdefault(r[index], []).append(v)
    at = sorted(values)
    return at, [sum(values[t]) / len(values[t]) for t in at]


def is_ogm_ge(run: Run) -> bool:
    """OGM-GE scales gradients by k (its step records carry `coeff.m`) instead of regulating."""
    return bool(run.steps) and any(f"coeff.{m}" in run.steps[0] for m in run.modalities)


def _getter(key: str) -> Callable[[dict[str, Any]], float | None]:
    def get(record: dict[str, Any]) -> float | None:
        return None if record.get(key) is None else float(record[key])

    return get


def _product(record: Mapping[str, Any], a: str, b: str) -> float | None:
    if record.get(a) is None or record.get(b) is None:
        return None
    return float(record[a]) * float(record[b])


def plot_information(
    groups: Mapping[str, list[Run]], methods: Sequence[Method], path: Path
) -> None:
    shown = [m for m in methods if m.key in groups]
    fig, axes = pyplot().subplots(1, len(shown), figsize=(5.2 * len(shown), 3.6), squeeze=False)
    for ax, method in zip(axes[0], shown, strict=True):
        runs = groups[method.key]
        for i, m in enumerate(runs[0].modalities):
            color = f"C{i}"
            for run in runs:
                ax.plot(
                    [e["epoch"] for e in run.epochs],
                    series(e.get(f"trace.{m}") for e in run.epochs),
                    color=color,
                    lw=0.5,
                    alpha=0.4,
                )
            x, y = epoch_mean(runs, f"trace.{m}")
            ax.plot(x, y, color=color, lw=2, label=f"{m} (mean of {len(runs)} seeds)")
            for t, frac in window_fraction(runs, m).items():
                if frac > 0:
                    ax.axvspan(t - 0.5, t + 0.5, color=color, alpha=0.25 * frac, lw=0)
        ax.set(title=method.label, xlabel="epoch", ylabel="information amount (Fisher trace)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.suptitle("Information amount per modality; shading: share of seeds with the window open")
    close_figure(fig, path, dpi=110)


def plot_alpha(groups: Mapping[str, list[Run]], methods: Sequence[Method], path: Path) -> None:
    shown = [m for m in methods if m.key in groups]
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(4.6 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    for ax, method in zip(axes.flat, shown, strict=False):
        runs = groups[method.key]
        # OGM-GE scales gradients by k instead of adding alpha * (w - anchor): plot its k.
        ogm = is_ogm_ge(runs[0])
        for i, m in enumerate(runs[0].modalities):
            if ogm:
                x, y = step_mean(runs, _getter(f"coeff.{m}"))
            else:
                x, y = applied_alpha(runs, m)
            ax.plot(x, y, color=f"C{i}", lw=0.8, label=m)
        ylabel = "gradient scale k (1 = not modulated)" if ogm else "alpha applied (mean)"
        ax.set(title=method.label, xlabel="step", ylabel=ylabel)
        ax.legend(fontsize=7)
    fig.suptitle("Regulation per modality over training (mean over seeds)")
    close_figure(fig, path, dpi=110)


def plot_branch_accuracy(
    groups: Mapping[str, list[Run]],
    methods: Sequence[Method],
    references: Mapping[str, str],
    path: Path,
) -> None:
    """`references`: modality -> method key of its unimodal reference."""
    trained = [m for m in methods if m.key in groups and m.group != "reference"]
    modalities = groups[trained[0].key][0].modalities if trained else []
    fig, axes = pyplot().subplots(
        1, len(modalities), figsize=(5.4 * len(modalities), 3.8), squeeze=False
    )
    for ax, m in zip(axes[0], modalities, strict=True):
        for j, method in enumerate(trained):
            x, y = epoch_mean(groups[method.key], f"acc.{m}")
            ax.plot(x, y, color=f"C{j}", lw=1.2, label=method.label)
        ref = references.get(m)
        if ref is not None and ref in groups:
            x, y = epoch_mean(groups[ref], f"acc.{m}")
            ax.plot(x, y, color="k", ls="--", lw=1.2, label=f"{m} encoder alone")
        ax.set(title=f"{m} branch", xlabel="epoch", ylabel="test accuracy (mean over seeds)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6)
    close_figure(fig, path, dpi=110)


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
    labels = {m.key: m.label for m in study.methods}
    by_key = {m.key: m for m in study.methods}
    titles = {
        "joint_loss": "joint loss only (paper Table 2)",
        "unimodal_loss": "unimodal losses added (paper Table 3)",
        "reference": "unimodal references (each encoder trained alone)",
        "ablation": "when InfoReg regulates (paper Table 4)",
    }
    main = results_table(
        study.methods, agg, modalities, ("joint_loss", "unimodal_loss", "reference"), titles
    )
    ablation_methods = [
        replace(by_key[k], group="ablation") if k in by_key else None
        for k in ("joint", "inforeg", "inforeg_always", "inforeg_outside")
    ]
    ablation = results_table(
        [m for m in ablation_methods if m is not None], agg, modalities, ("ablation",), titles
    )

    def tally(selected: Sequence[Claim]) -> str:
        verdicts = [c.comparison.verdict for c in selected]
        return ", ".join(f"{verdicts.count(v)} {v}" for v in ("holds", "not shown", "reversed"))

    paper = [c for c in claims if not c.claim.startswith("(Check")]
    checks = [c for c in claims if c.claim.startswith("(Check")]
    counts = f"the paper's claims: {tally(paper)}" + (
        f"; the checks (not claims of the paper): {tally(checks)}" if checks else ""
    )
    sessions = meta.get("sessions", [])
    wall = sum(s["wall_s"] for s in sessions)
    loads = [x for s in sessions for x in s.get("load_samples", [])]
    strong = [m for m in modalities if m != weak]
    lines = [
        f"# Results: {study.title}",
        "",
        "Generated by `make study-avmnist` (`python -m studies.runner avmnist`) from the runs' "
        "`metrics.jsonl` files; do not edit by hand. Every number below is recomputed from those "
        f"files by `launch/results.py`. Generated {meta.get('generated', 'unknown')}.",
        "",
        f"**Wall time.** {len(meta.get('runs', []))} runs ({meta.get('seeds')} seeds x "
        f"{len({r.split('/')[0] for r in meta.get('runs', [])})} configurations, "
        f"{meta.get('epochs')} epochs each) trained in "
        f"{len(sessions)} session(s) of `studies.runner` totalling **{wall / 60:.1f} min** "
        f"(data build included) on {meta.get('machine', 'unknown')}. " + load_text(loads, meta),
        "",
        "## Verdict",
        "",
        f"The weak modality, chosen from the numbers (the lower branch accuracy under joint "
        f"training), is **{weak}**; the strong one is **{', '.join(strong)}**. Each claim of the "
        f"paper is tested as a difference of means over seeds with its standard error "
        f"(Welch): it **holds** when the difference exceeds {Z:g} standard errors, is "
        f"**reversed** when it is below minus {Z:g} standard errors, and is **not shown** "
        f"otherwise. Here: {counts}.",
        "",
        claims_list(claims, labels),
        "",
        imbalance_text(agg, modalities, study.references, labels),
        "",
        regulation_text(groups, [by_key[k] for k in study.alpha_methods if k in by_key], strong),
        "",
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
        windows_table(
            groups,
            [by_key[k] for k in ("joint", *study.alpha_methods) if k in by_key],
            modalities,
        ),
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
        "## Ablation: when to regulate (paper Table 4)",
        "",
        ablation,
        "",
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
    return "\n".join(wrap(one) for line in lines for one in line.split("\n"))


def wrap(line: str, width: int = 100) -> str:
    """Fill a long prose line (not a table row, heading or image) to `width` columns."""
    if len(line) <= width or line.startswith(("|", "#", "!")):
        return line
    indent = "  " if line.startswith("- ") else ""
    return textwrap.fill(
        line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def write_study_report(
    study: Study,
    specs: Sequence[RunSpec],
    out: Path,
    report: Path,
    results_dir: Path,
    root: Path,
) -> list[Path]:
    """Aggregate the finished runs, write summary.json, per-run JSON, the PNGs and `report`."""
    runs = [load_run(s.out_dir / "metrics.jsonl", s.method, s.seed) for s in specs]
    groups = by_method(sorted(runs, key=lambda r: (r.method, r.seed)))
    agg = aggregate(runs)
    first = next(m.key for m in study.methods if m.key in groups and m.group != "reference")
    modalities = groups[first][0].modalities
    weak = weak_modality(agg[first], modalities)
    claims = study_claims(agg, weak)

    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "runs").mkdir(exist_ok=True)
    written: list[Path] = []
    figures = {
        "information": results_dir / "information.png",
        "alpha": results_dir / "alpha.png",
        "branch_accuracy": results_dir / "branch_accuracy.png",
    }
    by_key = {m.key: m for m in study.methods}
    plot_information(groups, [by_key[k] for k in study.information_methods], figures["information"])
    plot_alpha(groups, [by_key[k] for k in study.alpha_methods], figures["alpha"])
    plot_branch_accuracy(groups, study.methods, study.references, figures["branch_accuracy"])
    written += figures.values()

    study_json = out / "study.json"
    sessions = json.loads(study_json.read_text())["sessions"] if study_json.is_file() else []
    sessions = [s for s in sessions if s.get("trained")]
    wall_by_run = {name: w for s in sessions for name, w in s["trained"].items()}
    for run, spec in zip(runs, specs, strict=True):
        path = results_dir / "runs" / f"{run.method}-seed{run.seed}.json"
        cfg = json.loads((spec.out_dir / "config.json").read_text())
        path.write_text(
            json.dumps(
                {
                    "method": run.method,
                    "seed": run.seed,
                    "metrics_jsonl": rel(Path(run.source), root),
                    "sha256": run.sha256,
                    "wall_s": wall_by_run.get(f"{run.method}/seed{run.seed}"),
                    "final": final_metrics(run),
                    "regulator": cfg["regulator"],
                    "epochs": run.epochs,
                },
                indent=1,
            )
            + "\n"
        )
        written.append(path)

    info = json.loads((out / "shards" / "dataset.json").read_text())
    opts = study.build_options
    hop, seconds = int(opts["hop_length"]), float(opts["audio_seconds"])
    epochs = json.loads((specs[0].out_dir / "config.json").read_text())["run"]["epochs"]
    setup = study.setup.format(
        n_train=info["splits"]["train"]["samples"],
        n_test=info["splits"]["test"]["samples"],
        audio_seconds=seconds,
        n_mels=opts["n_mels"],
        n_fft=opts["n_fft"],
        hop_length=hop,
        mel_frames=info["audio_feature_shape"][1],
        epochs=epochs,
        parallel=max((s.get("parallel", 0) for s in sessions), default=0) or "several",
        last_seed=max(r.seed for r in runs),
    )
    summary_path = results_dir / "summary.json"
    meta: dict[str, Any] = {
        "generated": time.strftime("%Y-%m-%d %H:%M %Z"),
        "seeds": len({r.seed for r in runs}),
        "epochs": epochs,
        "runs": [f"{r.method}/seed{r.seed}" for r in runs],
        "sessions": sessions,
        "machine": f"{os.cpu_count()} CPU cores, {platform.platform()}",
        "summary_json": rel(summary_path, root),
        "runs_dir": rel(results_dir / "runs", root) + "/",
        "data_commands": [
            " ".join(study.manifest_command(Path("../shared/data"), out / "raw")),
            " ".join(study.build_command(out / "raw", out / "shards")),
        ],
        "example_command": " ".join(
            [
                "python launch/train.py",
                "--config",
                rel(specs[0].config, root),
                "--resume auto",
                *list(specs[0].overrides),
            ]
        ),
        "weak_modality": weak,
    }
    summary_path.write_text(json.dumps(to_json(study.methods, agg, claims, runs, meta), indent=1))
    written.append(summary_path)

    fig_rel = {k: os.path.relpath(p, report.parent) for k, p in figures.items()}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        render_markdown(
            study=study,
            setup=setup,
            agg=agg,
            claims=claims,
            weak=weak,
            modalities=modalities,
            groups=groups,
            figures=fig_rel,
            meta=meta,
        )
    )
    written.append(report)
    return written


def rel(path: Path, root: Path) -> str:
    """`path` relative to the repository when inside it (portable in committed files)."""
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)
