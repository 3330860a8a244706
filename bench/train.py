"""`inforeg-bench train`: training throughput and the loader's share of each step, per pipeline.

    inforeg-bench train --config configs/bench_resnet18.yaml --data DIR --steps 20 \\
        [--pipelines ffcv,dali,reference] [--nproc 1] [--warmup 3] [--json PATH]

Runs the real trainer (`launch/train.py`, one process or `deepspeed --num_gpus N`) for a few
steps per pipeline with a step record every step, and reads ``metrics.jsonl``: samples/s and
``data_wait_frac`` (the fraction of wall time the loop waited for the next batch) over the steps
after the warm-up. Nothing is timed here that the trainer does not log itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from launch.records import read_records

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", required=True, help="trainer YAML (e.g. configs/bench_resnet18.yaml)"
    )
    p.add_argument("--data", required=True, help="dataset folder built with every format needed")
    p.add_argument("--pipelines", default="ffcv,dali,reference")
    p.add_argument("--steps", type=int, default=20, help="training steps per pipeline")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the figures")
    p.add_argument("--nproc", type=int, default=1, help="ranks (deepspeed --num_gpus) per run")
    p.add_argument("--json", default=None, help="write the figures here too")
    p.add_argument("overrides", nargs="*", help="extra dotted.key=value trainer overrides")


def command(args: argparse.Namespace, pipeline: str, out: Path) -> list[str]:
    bin_dir = Path(sys.executable).parent
    train = [str(ROOT / "launch" / "train.py"), "--config", args.config]
    train += [f"data.dir={args.data}", f"data.pipeline={pipeline}", f"run.out_dir={out}"]
    train += ["run.epochs=1", f"run.max_steps_per_epoch={args.steps}", "run.log_every=1"]
    train += ["run.progress=false", *args.overrides]
    if args.nproc == 1:
        return [sys.executable, *train]
    return [str(bin_dir / "deepspeed"), "--num_gpus", str(args.nproc), *train]


def figures(records: list[dict[str, Any]], warmup: int, pipeline: str) -> dict[str, Any]:
    steps = [r for r in records if r["kind"] == "step"][warmup:]
    if not steps:
        raise ValueError(f"{pipeline}: no step record after the {warmup} warm-up steps")
    rates = [r["samples_per_s"] for r in steps]
    waits = [r["data_wait_frac"] for r in steps]
    timed = [r["phases"] for r in steps if r.get("phases")]
    phases = {n: statistics.mean(p[n] for p in timed) for n in timed[0]} if timed else {}
    return {
        "pipeline": pipeline,
        "steps": len(steps),
        "samples_per_s": statistics.mean(rates),
        "data_wait_frac": statistics.mean(waits),
        "max_data_wait_frac": max(waits),
        "phases": phases,
    }


def run(args: argparse.Namespace) -> int:
    rows = []
    for pipeline in [p for p in args.pipelines.split(",") if p]:
        with tempfile.TemporaryDirectory(prefix=f"bench-{pipeline}-") as tmp:
            out = Path(tmp) / "run"
            proc = subprocess.run(
                command(args, pipeline, out), cwd=ROOT, capture_output=True, text=True
            )
            if proc.returncode != 0:
                print(proc.stdout[-2000:] + proc.stderr[-4000:], file=sys.stderr)
                print(
                    f"train bench: the {pipeline} run failed (exit {proc.returncode})",
                    file=sys.stderr,
                )
                return 1
            rows.append(figures(read_records(out / "metrics.jsonl"), args.warmup, pipeline))
    print(f"{'pipeline':<10} {'steps':>5} {'samples/s':>10} {'data_wait_frac':>15} {'max':>6}")
    for r in rows:
        print(
            f"{r['pipeline']:<10} {r['steps']:>5} {r['samples_per_s']:>10.2f} "
            f"{r['data_wait_frac']:>15.3f} {r['max_data_wait_frac']:>6.3f}"
        )
    for r in rows:
        if r["phases"]:
            split = ", ".join(f"{n} {100 * f:.1f}%" for n, f in r["phases"].items())
            print(f"{r['pipeline']:<10} step time: {split}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0
