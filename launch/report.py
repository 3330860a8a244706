"""A run's own report from its ``metrics.jsonl``: ``summary.json``, PNG plots, a terminal table.

The trainer writes it at the end of a run; everything here is a function of the records, so it
can be rebuilt from any run folder (``python -m launch.report OUT``). matplotlib is imported
only when a plot is drawn (headless backend), never by importing this module.

Plots:
- ``information.png``: each modality's information amount (Fisher trace) per epoch, with the
  epochs where its prime-learning window was open shaded (the paper's Fig. 1);
- ``alpha.png``: each modality's regulation coefficient over the logged steps;
- ``accuracy.png``: fused and per-modality evaluation accuracy per epoch;
- ``phases.png``: where each step's time went (data wait, forward, backward, regulator,
  optimizer, other) over the logged steps.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from launch.records import EpochRecord, RunRecords, StepRecord, read_run


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend (selected here, when a plot is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def compact(epochs: Sequence[int]) -> str:
    """[2, 3, 4, 8] -> '2-4, 8'; [] -> 'none'."""
    if not epochs:
        return "none"
    parts: list[str] = []
    start = prev = epochs[0]
    for e in [*epochs[1:], None]:
        if e is not None and e == prev + 1:
            prev = e
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if e is not None:
            start = prev = e
    return ", ".join(parts)


def mean_phases(steps: Sequence[StepRecord]) -> dict[str, float]:
    """Each phase's share of the step time over the run's step records (mean of the records)."""
    timed = [s.phases for s in steps if s.phases]
    names = list(timed[0]) if timed else []
    return {n: sum(p.get(n, 0.0) for p in timed) / len(timed) for n in names}


def mean_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def summarize_run(run: RunRecords, extra: dict[str, Any]) -> dict[str, Any]:
    """The last and best epoch (by fused accuracy) with all their metrics, and where the step
    time went (mean phase split, achieved TFLOP/s and MFU per device)."""
    if not run.epochs:
        return {**extra, "epochs": 0}
    scored = [e for e in run.epochs if e.acc is not None]
    best = max(scored, key=lambda e: e.acc or 0.0) if scored else run.epochs[-1]
    last = run.epochs[-1].to_json()
    out = {**extra, "epochs": len(run.epochs), "last": last, "best": best.to_json()}
    out["phases"] = mean_phases(run.steps)
    out["tflops"] = mean_of(s.tflops for s in run.steps)
    out["mfu"] = mean_of(s.mfu for s in run.steps)
    return out


def time_split(run: RunRecords) -> str:
    """One line: the mean phase split of the steps, and TFLOP/s and MFU where recorded."""
    phases = mean_phases(run.steps)
    if not phases:
        return "step time: no phase timings recorded"
    line = "step time: " + ", ".join(f"{n} {100 * f:.1f}%" for n, f in phases.items())
    tflops, mfu = mean_of(s.tflops for s in run.steps), mean_of(s.mfu for s in run.steps)
    if tflops is not None:
        line += f"; {tflops:.3g} TFLOP/s per device"
        line += f", MFU {100 * mfu:.1f}%" if mfu is not None else " (MFU: no peak known)"
    return line


def close_figure(fig: Any, path: Path, dpi: int) -> None:
    """Layout, PNG, and the figure closed."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def save(fig: Any, ax: Any, path: Path) -> None:
    """Legend, layout, PNG at 120 dpi, and the figure closed."""
    ax.legend()
    close_figure(fig, path, dpi=120)


def series(values: Iterable[float | bool | None]) -> list[float]:
    """Values as floats, NaN where missing (a gap in the plot)."""
    return [float("nan") if v is None else float(v) for v in values]


def plot_information(epochs: Sequence[EpochRecord], modalities: list[str], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    x = [e.epoch for e in epochs]
    for i, m in enumerate(modalities):
        color = f"C{i}"
        trace = series(e.trace.get(m) for e in epochs)
        ax.plot(x, trace, marker="o", ms=3, color=color, label=m)
        for e in epochs:
            if e.window_open.get(m):
                ax.axvspan(e.epoch - 0.5, e.epoch + 0.5, color=color, alpha=0.12, lw=0)
    ax.set(xlabel="epoch", ylabel="information amount (Fisher trace)", yscale="log")
    ax.set_title("Information acquisition; shaded: prime learning window open")
    save(fig, ax, path)


def applied_alpha(step: StepRecord, modality: str) -> float | None:
    """The coefficient applied to a modality at a step: alpha where regulated, else 0."""
    alpha, regulated = step.alpha.get(modality), step.regulated.get(modality)
    return None if alpha is None or regulated is None else alpha * regulated


def plot_alpha(steps: Sequence[StepRecord], modalities: list[str], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    x = [s.step for s in steps]
    for i, m in enumerate(modalities):
        ax.plot(x, series(applied_alpha(s, m) for s in steps), color=f"C{i}", label=m, lw=1)
    ax.set(xlabel="step", ylabel="alpha applied (0 = not regulated)")
    ax.set_title("Regulation coefficient per modality")
    save(fig, ax, path)


def plot_accuracy(epochs: Sequence[EpochRecord], modalities: list[str], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    x = [e.epoch for e in epochs]
    ax.plot(x, series(e.acc for e in epochs), color="k", marker="o", ms=3, label="fused")
    for i, m in enumerate(modalities):
        acc = series(e.branch_acc.get(m) for e in epochs)
        ax.plot(x, acc, color=f"C{i}", marker=".", label=m)
    ax.set(xlabel="epoch", ylabel="evaluation accuracy", ylim=(0, 1))
    save(fig, ax, path)


def plot_phases(steps: Sequence[StepRecord], path: Path) -> None:
    timed = [s for s in steps if s.phases]
    names = list(timed[0].phases)
    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    shares = [[100 * s.phases.get(n, 0.0) for s in timed] for n in names]
    ax.stackplot([s.step for s in timed], shares, labels=names)
    ax.set(xlabel="step", ylabel="share of step time (%)", ylim=(0, 100))
    ax.set_title("Where the step time went")
    save(fig, ax, path)


def table(run: RunRecords) -> str:
    """A plain-text table of the epoch records."""
    modalities = run.modalities
    cols = ["epoch", "loss", "acc", "macro_f1"]
    cols += [f"acc.{m}" for m in modalities] + [f"trace.{m}" for m in modalities]
    cols += [f"window_open.{m}" for m in modalities]

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "open" if v else "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e3 else f"{v:.3f}"
        return "" if v is None else str(v)

    rows = [[c.replace("window_open.", "win.") for c in cols]]
    rows += [[fmt(e.to_json().get(c)) for c in cols] for e in run.epochs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


def write_report(out_dir: Path, extra: dict[str, Any]) -> dict[str, Path]:
    """summary.json and the PNGs for the run in `out_dir`; returns their paths."""
    run = read_run(out_dir / "metrics.jsonl")
    modalities = run.modalities
    paths = {"summary": out_dir / "summary.json"}
    paths["summary"].write_text(json.dumps(summarize_run(run, extra), indent=2) + "\n")
    if run.epochs:
        paths["information"] = out_dir / "information.png"
        plot_information(run.epochs, modalities, paths["information"])
        paths["accuracy"] = out_dir / "accuracy.png"
        plot_accuracy(run.epochs, modalities, paths["accuracy"])
    if run.steps:
        paths["alpha"] = out_dir / "alpha.png"
        plot_alpha(run.steps, modalities, paths["alpha"])
    if any(s.phases for s in run.steps):
        paths["phases"] = out_dir / "phases.png"
        plot_phases(run.steps, paths["phases"])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m launch.report RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    for name, p in write_report(run_dir, {}).items():
        print(f"{name}: {p}")
    run = read_run(run_dir / "metrics.jsonl")
    print(table(run))
    print(time_split(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
