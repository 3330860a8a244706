"""Compare finished runs side by side, from their ``metrics.jsonl`` files alone.

    python -m studies.compare runs/demo/joint runs/demo/inforeg [--plot PATH]

prints one row per run (regulator, best and last fused accuracy, each modality's branch accuracy,
macro-F1, the epochs each modality's window was open) and, with ``--plot``, overlays the runs'
information curves (dashed: the first run) in one PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from inforeg.regulators import regulator_class
from launch.report import close_figure, compact, pyplot, series
from studies.results import Run, final_metrics, load_run, window_epochs


def run_label(run: Path) -> str:
    cfg = json.loads((run / "config.json").read_text())["regulator"]
    method = regulator_class(cfg["name"])  # null variant and schedule: the method's own
    variant = cfg.get("variant") or method.default_variant
    schedule = cfg.get("schedule") or method.default_schedule
    label = cfg["name"]
    if cfg["name"] == "inforeg":
        label += "*" if cfg["unimodal_loss"] else ""
        label += f" ({variant}" + (f", {schedule})" if schedule != "window" else ")")
    elif cfg["unimodal_loss"]:
        label += "*"
    return label


def load(run: Path) -> Run:
    """A run folder's metrics.jsonl, labelled with its regulator (each file read once)."""
    metrics = load_run(run / "metrics.jsonl", method="", seed=0)
    if not metrics.epochs:
        raise ValueError(f"{run}: no epoch record in metrics.jsonl")
    return replace(metrics, method=run_label(run))


def row(run: Run) -> dict[str, Any]:
    folder = Path(run.source).parent
    final = final_metrics(run)
    out: dict[str, Any] = {"run": str(folder), "method": run.method, "epochs": len(run.epochs)}
    out["best_acc"], out["best_epoch"] = final["best_acc"], int(final["best_epoch"])
    out["last_acc"], out["macro_f1"] = final["acc"], final["macro_f1"]
    for m in run.modalities:
        out[f"acc.{m}"] = final[f"acc.{m}"]
        out[f"window.{m}"] = window_epochs(run, m)
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    keys = [k for k in rows[0] if k not in ("run",)]
    header = [k.replace("window.", "win.") for k in keys]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list):
            return compact(v)
        return str(v)

    cells = [header] + [[fmt(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells
    )


def plot_information(runs: Sequence[Run], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6.5, 3.8))
    for j, run in enumerate(runs):
        for i, m in enumerate(run.modalities):
            ax.plot(
                [e.epoch for e in run.epochs],
                series(e.trace.get(m) for e in run.epochs),
                color=f"C{i}",
                ls="--" if j == 0 else "-",
                marker=".",
                label=f"{m}, {run.method}" + (" (dashed)" if j == 0 else ""),
            )
            for e in run.epochs:
                if j > 0 and e.window_open[m]:
                    ax.axvspan(e.epoch - 0.5, e.epoch + 0.5, color=f"C{i}", alpha=0.08, lw=0)
    ax.set(xlabel="epoch", ylabel="information amount (Fisher trace)", yscale="log")
    ax.legend(fontsize=7, handlelength=3)  # long enough handles to show the dashes
    close_figure(fig, path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args(argv)
    runs, rows = [], []
    for folder in args.runs:  # each must be a run folder of this trainer with an epoch recorded
        try:
            runs.append(load(folder))
            rows.append(row(runs[-1]))
        except KeyError as e:
            print(f"compare: {folder}: config.json or metrics.jsonl lacks {e}", file=sys.stderr)
            return 2
        except (OSError, ValueError) as e:
            print(f"compare: {e}", file=sys.stderr)
            return 2
    print(format_table(rows))
    if args.plot:
        plot_information(runs, args.plot)
        print(f"information curves: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
