"""`inforeg-bench methods`: real training runs per method, their step time against joint's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from tests.launch.conftest import ROOT, tiny_shards  # noqa: F401 (the fixture)


@pytest.mark.timeout(600)
def test_methods_bench_prints_each_method_against_joint(
    tiny_shards: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "methods.json"
    args = ["methods", "--config", str(ROOT / "configs" / "synthetic.yaml")]
    args += ["--data", str(tiny_shards), "--methods", "joint,ogm_ge", "--steps", "4"]
    args += ["--warmup", "1", "--json", str(out), "data.size=32", "data.batch_size=8"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "x joint" in table and "ogm_ge" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["joint", "ogm_ge"]
    assert rows[0]["vs_joint"] == 1.0 and rows[1]["step_ms"] > 0
    assert 0 < rows[1]["regulator_frac"] < 1


def test_methods_name_their_fusion_and_greedy_gets_its_own() -> None:
    from bench.methods import method_overrides

    assert method_overrides("ogm") == ["regulator.name=ogm"]
    assert method_overrides("joint@mmtm") == ["regulator.name=joint", "model.fusion=mmtm"]
    assert method_overrides("greedy") == ["regulator.name=greedy", "model.fusion=mmtm"]


def test_methods_bench_needs_joint_first(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["methods", "--config", "c.yaml", "--data", "d", "--methods", "ogm,joint"]
    assert main(args) == 2
    assert "must start with joint" in capsys.readouterr().err
