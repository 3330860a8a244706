"""`inforeg-bench loader` runs end to end and writes the figures it promises (no timing checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main as bench_main


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", ["ffcv", "reference"])
def test_loader_bench_writes_its_figures(
    dataset: Path, tmp_path: Path, pipeline: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figures.json"
    args = ["loader", "--pipeline", pipeline, "--data", str(dataset), "--batch-size", "4"]
    args += ["--workers", "1", "--batches", "12", "--warmup", "1", "--size", "64"]
    args += ["--decode-bound", "--decode-seconds", "0.2", "--json", str(out)]
    assert bench_main(args) == 0
    figures = json.loads(out.read_text())
    for key in ("samples_per_s", "p50_batch_s", "p95_batch_s", "cpu_cores_used", "in_mb_per_s"):
        assert figures[key] > 0, key
    assert figures["pipeline"] == pipeline and figures["batches"] == 12
    assert figures["p95_batch_s"] >= figures["p50_batch_s"]
    bound = figures["decode_bound"]
    assert bound["frame_height"] == 96 and bound["frames_per_s_per_core"] > 0
    assert figures["fraction_of_decode_bound"] == pytest.approx(
        figures["samples_per_s"] / bound["bound_samples_per_s"]
    )
    table = capsys.readouterr().out
    assert "samples/s" in table and "of the bound" in table  # 12 batches cross epochs (9 per epoch)


def test_bad_input_exits_2_naming_it(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        bench_main(["loader", "--pipeline", "ffcv", "--data", str(dataset), "--split", "no"]) == 2
    )
    assert "--split 'no'" in capsys.readouterr().err
    assert bench_main(["loader", "--pipeline", "ffcv", "--data", str(tmp_path)]) == 2
    assert f"{tmp_path / 'dataset.json'}: no dataset.json" in capsys.readouterr().err
    big = ["loader", "--pipeline", "ffcv", "--data", str(dataset), "--batch-size", "100000"]
    assert bench_main(big) == 2
    assert "batch_size 100000 x world_size 1 exceeds" in capsys.readouterr().err
