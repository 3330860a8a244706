"""`inforeg-bench loader --host-only` and `--profile` run end to end and write their figures (no
timing checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main as bench_main

BASE = ["--batch-size", "4", "--workers", "1", "--batches", "10", "--warmup", "1", "--size", "64"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", ["dali", "ffcv"])
def test_host_only_writes_cpu_per_sample(
    dataset: Path, tmp_path: Path, pipeline: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figures.json"
    args = ["loader", "--pipeline", pipeline, "--data", str(dataset), *BASE, "--host-only"]
    assert bench_main([*args, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["stage"] == "host-only" and figures["batches"] == 10
    assert figures["samples_per_s"] > 0
    assert figures["cpu_us_per_sample"] >= 0  # CPU time is counted in clock ticks: may read 0
    assert "CPU per sample" in capsys.readouterr().out


@pytest.mark.timeout(300)
def test_dali_profile_splits_the_graph_in_steps(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    args = ["loader", "--pipeline", "dali", "--data", str(dataset), *BASE, "--stage", "host"]
    assert bench_main([*args, "--profile", "--json", str(out)]) == 0
    steps = json.loads(out.read_text())["profile_us_per_sample"]
    assert steps["source_us"] > 0
    total = steps["source_us"] + steps["decode_us"] + steps["warp_us"]
    assert total == pytest.approx(steps["whole_us"])


def test_host_only_and_profile_refuse_other_pipelines(
    dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["loader", "--pipeline", "reference", "--data", str(dataset), *BASE]
    assert bench_main([*args, "--host-only"]) == 2
    assert "--host-only: reference has no decode-free variant" in capsys.readouterr().err
    assert bench_main(["loader", "--pipeline", "ffcv", "--data", str(dataset), "--profile"]) == 2
    assert "--profile: only the dali graph" in capsys.readouterr().err
