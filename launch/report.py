"""End-of-run report from ``metrics.jsonl``: ``summary.json``, PNG plots and a terminal table.

Everything here is a function of the records, so the report can be rebuilt from any run folder
(``python -m launch.report OUT``).

Plots:
- ``information.png``: each modality's information amount (Fisher trace) per epoch, with the
  epochs where its prime-learning window was open shaded (the paper's Fig. 1);
- ``alpha.png``: each modality's regulation coefficient over the logged steps;
- ``accuracy.png``: fused and per-modality evaluation accuracy per epoch.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from launch.logs import read_records


def modalities_of(records: list[dict[str, Any]]) -> list[str]:
    """The run's modalities, in head order (from the first record that names them)."""
    for r in records:
        prefix = "trace." if r["kind"] == "epoch" else "score."
        names = [k.split(".", 1)[1] for k in r if k.startswith(prefix)]
        if names:
            return names
    return []


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


def split_records(records: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    return steps, epochs


def summarize_run(records: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """The last and best epoch (by fused accuracy) with all their metrics."""
    _, epochs = split_records(records)
    if not epochs:
        return {**extra, "epochs": 0}
    scored = [e for e in epochs if e.get("acc") is not None]
    best = max(scored, key=lambda e: e["acc"]) if scored else epochs[-1]
    return {**extra, "epochs": len(epochs), "last": epochs[-1], "best": best}


def save(fig: Any, ax: Any, path: Path) -> None:
    """Legend, layout, PNG at 120 dpi, and the figure closed."""
    ax.legend()
    close_figure(fig, path, dpi=120)


def close_figure(fig: Any, path: Path, dpi: int) -> None:
    """Layout, PNG, and the figure closed."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def series(records: list[dict], key: str) -> list[float]:
    """The values of `key` across records, NaN where missing (a gap in the plot)."""
    values = [r.get(key) for r in records]
    return [float("nan") if v is None else float(v) for v in values]


def plot_information(epochs: list[dict], modalities: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [e["epoch"] for e in epochs]
    for i, m in enumerate(modalities):
        color = f"C{i}"
        ax.plot(x, series(epochs, f"trace.{m}"), marker="o", ms=3, color=color, label=m)
        for e in epochs:
            if e.get(f"window_open.{m}"):
                ax.axvspan(e["epoch"] - 0.5, e["epoch"] + 0.5, color=color, alpha=0.12, lw=0)
    ax.set(xlabel="epoch", ylabel="information amount (Fisher trace)", yscale="log")
    ax.set_title("Information acquisition; shaded: prime learning window open")
    save(fig, ax, path)


def plot_alpha(steps: list[dict], modalities: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [s["step"] for s in steps]
    for i, m in enumerate(modalities):
        alpha, regulated = series(steps, f"alpha.{m}"), series(steps, f"regulated.{m}")
        applied = [a * r for a, r in zip(alpha, regulated, strict=True)]
        ax.plot(x, applied, color=f"C{i}", label=m, lw=1)
    ax.set(xlabel="step", ylabel="alpha applied (0 = not regulated)")
    ax.set_title("Regulation coefficient per modality")
    save(fig, ax, path)


def plot_accuracy(epochs: list[dict], modalities: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [e["epoch"] for e in epochs]
    ax.plot(x, series(epochs, "acc"), color="k", marker="o", ms=3, label="fused")
    for i, m in enumerate(modalities):
        ax.plot(x, series(epochs, f"acc.{m}"), color=f"C{i}", marker=".", label=m)
    ax.set(xlabel="epoch", ylabel="evaluation accuracy", ylim=(0, 1))
    save(fig, ax, path)


def table(records: list[dict[str, Any]]) -> str:
    """A plain-text table of the epoch records."""
    _, epochs = split_records(records)
    modalities = modalities_of(records)
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
    rows += [[fmt(e.get(c)) for c in cols] for e in epochs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


def write_report(out_dir: Path, extra: dict[str, Any]) -> dict[str, Path]:
    """summary.json and the PNGs for the run in `out_dir`; returns their paths."""
    records = read_records(out_dir / "metrics.jsonl")
    steps, epochs = split_records(records)
    modalities = modalities_of(records)
    paths = {"summary": out_dir / "summary.json"}
    summary = summarize_run(records, extra)
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    if epochs:
        paths["information"] = out_dir / "information.png"
        plot_information(epochs, modalities, paths["information"])
        paths["accuracy"] = out_dir / "accuracy.png"
        plot_accuracy(epochs, modalities, paths["accuracy"])
    if steps:
        paths["alpha"] = out_dir / "alpha.png"
        plot_alpha(steps, modalities, paths["alpha"])
    return paths


if __name__ == "__main__":
    run_dir = Path(sys.argv[1])
    for name, p in write_report(run_dir, {}).items():
        print(f"{name}: {p}")
    print(table(read_records(run_dir / "metrics.jsonl")))
