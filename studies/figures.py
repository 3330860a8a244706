"""A study's figures, drawn from its runs' records (`studies.results.Run`) alone.

PNG files, in the study's results folder:
- ``information.png``: each modality's information amount per epoch (mean over seeds, thin lines
  per seed) for joint training and InfoReg, with the epochs each modality's window was open
  marked along the top (the paper's Fig. 1);
- ``alpha.png``: the coefficient applied to each modality over training (0 where not
  regulated), mean over seeds, one panel per InfoReg configuration (OGM-GE: its gradient scale);
- ``branch_accuracy.png``: each modality's branch accuracy per epoch for the methods of Tables 2
  and 3, with the unimodal reference (the encoder trained alone) dashed;
- ``dose_response.png``: regulated epochs of the strong modality against the weak-branch and the
  fused gain over joint training of the same seed (claim S5);
- ``calibration.png``: the calibration joint runs' information amounts with their windows.

matplotlib is imported only when a figure is drawn (`launch.report.pyplot`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from launch.records import EpochRecord, PerModality, StepRecord
from launch.report import close_figure, pyplot, series
from studies.avmnist import Study
from studies.claims import DosePoint, DoseResponse
from studies.results import Method, Run, scales_gradients

R = TypeVar("R", StepRecord, EpochRecord)


def epoch_mean(
    runs: Sequence[Run], modality: str, field: Callable[[EpochRecord], PerModality]
) -> tuple[list[int], list[float]]:
    """Epoch numbers and the mean of the modality's value of `field` (``lambda e: e.trace``)
    over the runs that have it at each epoch."""
    return _mean_over_runs(
        [r.epochs for r in runs], lambda e: e.epoch, lambda e: _number(field(e).get(modality))
    )


def window_fraction(runs: Sequence[Run], modality: str) -> dict[int, float]:
    """epoch -> fraction of the runs whose window for `modality` was open in that epoch."""
    counts: dict[int, int] = {}
    for run in runs:
        for e in run.epochs:
            counts[e.epoch] = counts.get(e.epoch, 0) + int(bool(e.window_open.get(modality)))
    return {t: c / len(runs) for t, c in counts.items()} if runs else {}


def applied_alpha(runs: Sequence[Run], modality: str) -> tuple[list[int], list[float]]:
    """Step numbers and the mean over runs of alpha * regulated (0 = not regulated)."""

    def applied(s: StepRecord) -> float | None:
        alpha, regulated = s.alpha.get(modality), s.regulated.get(modality)
        if alpha is None or regulated is None:
            return None
        return float(alpha) * float(regulated)

    return step_mean(runs, applied)


def ogm_coefficient(runs: Sequence[Run], modality: str) -> tuple[list[int], list[float]]:
    """Step numbers and the mean over runs of the gradient scale k of OGM, OGM-GE or AGM (1 = not
    modulated)."""
    return step_mean(runs, lambda s: _number(s.value("coeff", modality)))


def step_mean(
    runs: Sequence[Run], value: Callable[[StepRecord], float | None]
) -> tuple[list[int], list[float]]:
    """Step numbers and the mean over runs of `value(step record)` where it is not None."""
    return _mean_over_runs([r.steps for r in runs], lambda s: s.step, value)


def _mean_over_runs(
    records: Sequence[Sequence[R]],
    index: Callable[[R], int],
    value: Callable[[R], float | None],
) -> tuple[list[int], list[float]]:
    """The values of `index` (epoch or step) and, at each, the mean of `value` over the runs'
    records (one sequence per run) where it is not None."""
    values: dict[int, list[float]] = {}
    for run_records in records:
        for r in run_records:
            v = value(r)
            if v is not None:
                values.setdefault(index(r), []).append(v)
    at = sorted(values)
    return at, [sum(values[t]) / len(values[t]) for t in at]


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def draw_traces(ax: Any, runs: Sequence[Run], title: str) -> None:
    """Each modality's information amount per epoch (thin: seeds; thick: their mean) and, in a
    strip of its color along the top, the epochs its window was open (darker when more of the
    runs agree)."""
    for i, m in enumerate(runs[0].modalities):
        color = f"C{i}"
        for run in runs:
            ax.plot(
                [e.epoch for e in run.epochs],
                series(e.trace.get(m) for e in run.epochs),
                color=color,
                lw=0.5 if len(runs) > 1 else 1.5,
                alpha=0.4 if len(runs) > 1 else 1.0,
                label=None if len(runs) > 1 else m,
            )
        if len(runs) > 1:
            x, y = epoch_mean(runs, m, lambda e: e.trace)
            ax.plot(x, y, color=color, lw=2, label=f"{m} (mean of {len(runs)} seeds)")
        # one strip per modality along the top (so two open windows do not blend)
        top = 1.0 - 0.06 * i
        for t, frac in window_fraction(runs, m).items():
            if frac > 0:
                ax.axvspan(
                    t - 0.5, t + 0.5, top - 0.06, top, color=color, alpha=0.25 + 0.6 * frac, lw=0
                )
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.2 * (hi - lo))  # headroom: the strips stay above the curves
    ax.set(title=title, xlabel="epoch", ylabel="information amount (Fisher trace)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, loc="center right")


def plot_information(
    groups: Mapping[str, list[Run]], methods: Sequence[Method], path: Path
) -> None:
    shown = [m for m in methods if m.key in groups]
    fig, axes = pyplot().subplots(1, len(shown), figsize=(5.2 * len(shown), 3.6), squeeze=False)
    for ax, method in zip(axes[0], shown, strict=True):
        draw_traces(ax, groups[method.key], method.label)
    fig.suptitle("Information amount per modality; top strips: window open (darker: more seeds)")
    close_figure(fig, path, dpi=110)


def plot_calibration(joint: Mapping[str, Sequence[Run]], path: Path) -> None:
    """One row per calibration candidate, one panel per seed of its joint training runs."""
    cols = max(len(runs) for runs in joint.values())
    fig, axes = pyplot().subplots(
        len(joint), cols, figsize=(4.4 * cols, 3.2 * len(joint)), squeeze=False
    )
    for row, (name, runs) in zip(axes, joint.items(), strict=True):
        for ax in row[len(runs) :]:
            ax.axis("off")
        for ax, run in zip(row, runs, strict=False):
            draw_traces(ax, [run], f"{name}, joint training, seed {run.seed}")
    fig.suptitle("Calibration: joint training's information amounts; top strips: window open")
    close_figure(fig, path, dpi=100)


def plot_dose_response(
    points: Sequence[DosePoint], labels: Mapping[str, str], weak: str, path: Path
) -> None:
    """Regulated epochs (x) against the weak-branch and the fused gain over joint training of
    the same seed (y, points): one small marker per (run, seed), a large one per method mean."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10.4, 3.8), squeeze=False)
    methods = list(dict.fromkeys(p.method for p in points))
    gains = ((f"{weak}-branch", lambda p: p.weak_gain), ("fused", lambda p: p.fused_gain))
    for ax, (name, gain) in zip(axes[0], gains, strict=True):
        for j, method in enumerate(methods):
            mine = [p for p in points if p.method == method]
            xs, ys = [p.regulated for p in mine], [100 * gain(p) for p in mine]
            ax.scatter(xs, ys, color=f"C{j}", s=14, alpha=0.6)
            ax.scatter(
                [sum(xs) / len(xs)],
                [sum(ys) / len(ys)],
                color=f"C{j}",
                s=90,
                edgecolor="k",
                label=labels.get(method, method),
            )
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set(
            xlabel="epochs regulated (strong modality)",
            ylabel=f"{name} accuracy gain over joint (points)",
        )
        ax.legend(fontsize=7)
    fig.suptitle("Dose-response: small markers one (run, seed), large ones the method's mean")
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
        # OGM, OGM-GE and AGM scale gradients by k instead of adding alpha * (w - anchor)
        ogm = scales_gradients(runs[0])
        for i, m in enumerate(runs[0].modalities):
            if ogm:
                x, y = ogm_coefficient(runs, m)
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
    """The Table 2 and 3 methods' branches per epoch (mean over seeds), each encoder alone
    dashed; `references`: modality -> method key of its unimodal reference."""
    tables = ("joint_loss", "unimodal_loss")
    trained = [m for m in methods if m.key in groups and m.group in tables]
    modalities = groups[trained[0].key][0].modalities if trained else []
    fig, axes = pyplot().subplots(
        1, len(modalities), figsize=(5.4 * len(modalities), 3.8), squeeze=False
    )
    for ax, m in zip(axes[0], modalities, strict=True):
        for j, method in enumerate(trained):
            x, y = epoch_mean(groups[method.key], m, lambda e: e.branch_acc)
            # ten colors, then dotted: twelve methods stay apart
            ax.plot(x, y, color=f"C{j % 10}", ls="-" if j < 10 else ":", lw=1.2, label=method.label)
        ref = references.get(m)
        if ref is not None and ref in groups:
            x, y = epoch_mean(groups[ref], m, lambda e: e.branch_acc)
            ax.plot(x, y, color="k", ls="--", lw=1.2, label=f"{m} encoder alone")
        ax.set(title=f"{m} branch", xlabel="epoch", ylabel="test accuracy (mean over seeds)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6)
    close_figure(fig, path, dpi=110)


def write_figures(
    study: Study,
    groups: Mapping[str, list[Run]],
    results_dir: Path,
    dose: DoseResponse,
    labels: Mapping[str, str],
    weak: str,
    calibration_joint: Mapping[str, Sequence[Run]] | None = None,
) -> dict[str, Path]:
    """The study's figures in `results_dir`: name -> path (information, alpha, branch_accuracy
    where their methods ran, dose_response where S5 has points, calibration where it ran)."""
    figures: dict[str, Path] = {}
    by_key = {m.key: m for m in study.methods}
    information = [by_key[k] for k in study.information_methods if k in groups]
    if information:
        figures["information"] = results_dir / "information.png"
        plot_information(groups, information, figures["information"])
    alpha = [by_key[k] for k in study.alpha_methods if k in groups]
    if alpha:
        figures["alpha"] = results_dir / "alpha.png"
        plot_alpha(groups, alpha, figures["alpha"])
    if any(m.key in groups for m in study.methods if m.group in ("joint_loss", "unimodal_loss")):
        figures["branch_accuracy"] = results_dir / "branch_accuracy.png"
        plot_branch_accuracy(groups, study.methods, study.references, figures["branch_accuracy"])
    if dose.points:
        figures["dose_response"] = results_dir / "dose_response.png"
        plot_dose_response(dose.points, labels, weak, figures["dose_response"])
    if calibration_joint:
        figures["calibration"] = results_dir / "calibration.png"
        plot_calibration(calibration_joint, figures["calibration"])
    return figures
