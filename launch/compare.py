"""Compare finished runs side by side, from their ``metrics.jsonl`` files alone.

    python -m launch.compare runs/demo/joint runs/demo/inforeg [--plot PATH]

prints one row per run (regulator, best and last fused accuracy, each modality's branch accuracy,
macro-F1, the epochs each modality's window was open) and, with ``--plot``, overlays the runs'
information curves (dashed: the first run) in one PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from launch.logs import read_records
from launch.report import compact, modalities_of, series, split_records


def run_label(run: Path) -> str:
    cfg = json.loads((run / "config.json").read_text())["regulator"]
    label = cfg["name"]
    if cfg["name"] == "inforeg":
        label += "*" if cfg["unimodal_loss"] else ""
        label += f" ({cfg['variant']}" + (
            f", {cfg['schedule']})" if cfg["schedule"] != "window" else ")"
        )
    elif cfg["unimodal_loss"]:
        label += "*"
    return label


def row(run: Path) -> dict[str, Any]:
    records = read_records(run / "metrics.jsonl")
    _, epochs = split_records(records)
    if not epochs:
        raise ValueError(f"{run}: no epoch record in metrics.jsonl")
    modalities = modalities_of(records)
    best = max(epochs, key=lambda e: e["acc"])
    last = epochs[-1]
    out: dict[str, Any] = {"run": str(run), "method": run_label(run), "epochs": len(epochs)}
    out["best_acc"], out["best_epoch"], out["last_acc"] = best["acc"], best["epoch"], last["acc"]
    out["macro_f1"] = last["macro_f1"]
    for m in modalities:
        out[f"acc.{m}"] = last[f"acc.{m}"]
        out[f"window.{m}"] = [e["epoch"] for e in epochs if e[f"window_open.{m}"]]
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


def plot_information(runs: Sequence[Path], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for j, run in enumerate(runs):
        records = read_records(run / "metrics.jsonl")
        _, epochs = split_records(records)
        for i, m in enumerate(modalities_of(records)):
            ax.plot(
                [e["epoch"] for e in epochs],
                series(epochs, f"trace.{m}"),
                color=f"C{i}",
                ls="--" if j == 0 else "-",
                marker=".",
                label=f"{m}, {run_label(run)}",
            )
            for e in epochs:
                if j > 0 and e[f"window_open.{m}"]:
                    ax.axvspan(e["epoch"] - 0.5, e["epoch"] + 0.5, color=f"C{i}", alpha=0.08, lw=0)
    ax.set(xlabel="epoch", ylabel="information amount (Fisher trace)", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:  # each must be a run folder of this trainer with an epoch recorded
        try:
            rows.append(row(run))
        except KeyError as e:
            print(f"compare: {run}: config.json or metrics.jsonl lacks {e}", file=sys.stderr)
            return 2
        except (OSError, ValueError) as e:
            print(f"compare: {e}", file=sys.stderr)
            return 2
    print(format_table(rows))
    if args.plot:
        plot_information(args.runs, args.plot)
        print(f"information curves: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
