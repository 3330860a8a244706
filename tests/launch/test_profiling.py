"""Where a step's time goes: phase fractions in every step record, a torch.profiler trace with
the named ranges from a 2-rank run, and DeepSpeed's flops profiler fragment."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from launch.profiling import PHASES, PhaseClock
from launch.records import read_run
from tests.launch.conftest import run_deepspeed, train_args


def test_the_clock_partitions_the_window_among_the_phases() -> None:
    clock = PhaseClock(torch.device("cpu"))
    time.sleep(0.02)
    clock.mark("forward")
    time.sleep(0.06)
    clock.mark("backward")
    shares = clock.fractions()
    assert list(shares) == list(PHASES)
    assert math.isclose(sum(shares.values()), 1.0, rel_tol=1e-12)
    assert shares["backward"] > 2 * shares["forward"] > 0
    clock.reset()
    assert clock.fractions() == dict.fromkeys(PHASES, 0.0)


@pytest.mark.timeout(600)
def test_two_ranks_profiled_write_a_trace_with_the_named_ranges(
    tiny_shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    profile = ["run.profile.start_step=1", "run.profile.steps=2", "run.profile.ranks=[0,1]"]
    args = train_args(tiny_shards, out, "regulator.name=inforeg", "run.epochs=2", *profile)
    proc = run_deepspeed(args, nproc=2, zero="zero2,flops_profiler")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "DeepSpeed Flops Profiler" in output and "fwd flops per GPU" in output
    assert "GFLOP per sample" in output and "step time: data_wait" in output

    for rank in (0, 1):
        (trace,) = sorted((out / "profile").glob(f"rank{rank}.*.pt.trace.json"))
        events = json.loads(trace.read_text())["traceEvents"]
        names = {e.get("name") for e in events}
        assert {"loader.wait", "regulator.fused_pass", "regulator.loss", "step.forward"} <= names
        assert {"step.backward", "step.optimizer"} <= names

    run = read_run(out / "metrics.jsonl")
    assert run.steps
    for step in run.steps:
        assert list(step.phases) == list(PHASES)
        assert math.isclose(sum(step.phases.values()), 1.0, rel_tol=1e-9)
        assert step.tflops is not None and step.tflops > 0 and step.mfu is None  # no CPU peak
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["phases"]) == set(PHASES) and (out / "phases.png").is_file()
    flops = json.loads((out / "flops.json").read_text())
    assert flops["flops_per_sample"] > 0 and flops["peak_tflops"] is None
