"""`inforeg-bench methods`: each balancing method's step time over joint training's, in one run.

    inforeg-bench methods --config configs/bench_resnet18.yaml --data DIR --steps 12 --warmup 2 \\
        [--methods joint,ogm,ogm_ge,inforeg,pmr,agm,gblending,mmpareto,joint@mmtm,greedy] \
        [--rounds 2] [--json PATH]

The real trainer (`launch/train.py`, one process) trains the same model on the same data for a
few steps per method, with every method modulating at every step (``regulator.schedule=always``)
so its work is on the measured path; step time = batch / samples per second over the steps after
the warm-up, and the regulator's share of the step comes from the step records' phase split.
Methods run in turn, ``--rounds`` times over (each method's figure is its median over rounds), so
load that comes and goes on a shared machine hits every method alike. Nothing is timed here that
the trainer does not log itself.

A method written ``name@fusion`` trains with ``model.fusion=fusion``; a method that needs a
fusion (greedy: its MMTM modules) gets it. Greedy's model is not joint's: ``joint@mmtm`` (joint
training of the MMTM model) separates the modules' cost from the regulator's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from inforeg.regulators import regulator_class
from launch.distributed import LAUNCHER_ENV
from launch.records import read_run

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = "joint,ogm,ogm_ge,inforeg,pmr,agm,gblending,mmpareto,joint@mmtm,greedy"

AUTHORS_PASSES = {
    "joint": "1 F + 1 B",
    "ogm": "1 F + 1 B",
    "ogm_ge": "1 F + 1 B",
    "inforeg": "1 F + 6 B (3 for logging)",
    "pmr": "1 F + 1 B, 0.1 no-grad F",
    "agm": "4 F + 1 B through all 4",
    "gblending": "1 F + 1 B, + (M+1) model copies",
    "mmpareto": "1 F + 4 B",
    "greedy": "1 F + 1 B (MMTM model), 2 host syncs per parameter",
}
"""The authors' passes per step (docs/methods.md, "Cost units at a glance"; InfoReg: METHOD.md)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="trainer YAML (configs/bench_resnet18.yaml)")
    p.add_argument("--data", required=True, help="a built dataset folder")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="regulator names; joint first")
    p.add_argument("--steps", type=int, default=12, help="training steps per method")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out")
    p.add_argument("--rounds", type=int, default=1, help="passes over the methods (median)")
    p.add_argument("--json", default=None, help="write the figures here too")
    p.add_argument("overrides", nargs="*", help="extra dotted.key=value trainer overrides")


def method_overrides(method: str) -> list[str]:
    """``name`` or ``name@fusion`` -> the trainer overrides naming the regulator and the fusion
    (the one the method needs when none is written)."""
    name, _, fusion = method.partition("@")
    fusion = fusion or regulator_class(name).required_fusion or ""
    return [f"regulator.name={name}", *([f"model.fusion={fusion}"] if fusion else [])]


def command(args: argparse.Namespace, method: str, out: Path) -> list[str]:
    train = [str(ROOT / "launch" / "train.py"), "--config", args.config]
    train += [f"data.dir={args.data}", *method_overrides(method), "regulator.schedule=always"]
    train += [f"run.out_dir={out}", "run.epochs=1", f"run.max_steps_per_epoch={args.steps}"]
    train += ["run.log_every=1", "run.progress=false", *args.overrides]
    return [sys.executable, *train]


def single_env() -> dict[str, str]:
    """This environment without a launcher's variables: each measured run is one process of its
    own (a process that trained in-process before keeps them, and its MASTER_PORT is taken)."""
    drop = {*LAUNCHER_ENV, "LOCAL_WORLD_SIZE"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def measure(args: argparse.Namespace, method: str) -> dict[str, float]:
    """One training run of `method`: its mean step time (ms) and regulator share."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{method}-") as tmp:
        out = Path(tmp) / "run"
        proc = subprocess.run(
            command(args, method, out), cwd=ROOT, capture_output=True, text=True, env=single_env()
        )
        if proc.returncode != 0:
            print(proc.stdout[-2000:] + proc.stderr[-4000:], file=sys.stderr)
            raise ValueError(f"the {method} run failed (exit {proc.returncode})")
        batch = json.loads((out / "config.json").read_text())["data"]["batch_size"]
        steps = read_run(out / "metrics.jsonl").steps[args.warmup :]
    if not steps:
        raise ValueError(f"{method}: no step record after the {args.warmup} warm-up steps")
    step_ms = [1e3 * batch / s.samples_per_s for s in steps if s.samples_per_s]
    regulator = [s.phases.get("regulator", 0.0) for s in steps if s.phases]
    return {"step_ms": statistics.mean(step_ms), "regulator_frac": statistics.mean(regulator)}


def run(args: argparse.Namespace) -> int:
    methods = [m for m in args.methods.split(",") if m]
    if not methods or methods[0] != "joint":
        raise ValueError("--methods must start with joint (the reference of every ratio)")
    if args.steps <= args.warmup or args.rounds < 1:
        raise ValueError("--steps must exceed --warmup, and --rounds must be >= 1")
    rounds: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        for method in methods:
            rounds[method].append(measure(args, method))
    rows: list[dict[str, Any]] = []
    for method, runs in rounds.items():
        step_ms = statistics.median(r["step_ms"] for r in runs)
        share = statistics.median(r["regulator_frac"] for r in runs)
        rows.append({"method": method, "step_ms": step_ms, "regulator_frac": share})
    joint_ms = rows[0]["step_ms"]
    print(f"{'method':<10} {'ms/step':>8} {'x joint':>8} {'regulator':>10}  authors' passes")
    for r in rows:
        r["vs_joint"] = r["step_ms"] / joint_ms
        passes = AUTHORS_PASSES.get(str(r["method"]), "")
        print(
            f"{r['method']:<10} {r['step_ms']:>8.1f} {r['vs_joint']:>8.2f} "
            f"{100 * r['regulator_frac']:>9.1f}%  {passes}"
        )
    if args.json:
        payload: dict[str, Any] = {"steps": args.steps, "warmup": args.warmup, "rows": rows}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0
