"""Each comparison method trains the tiny set on two ranks with ZeRO 2 (`deepspeed ...
zero2.json`) for two epochs, and its step records agree with its own decision rule
(`Regulator.audit_step`) and the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inforeg.config import RegulatorConfig
from inforeg.regulators import regulator_class
from launch.records import read_records
from launch.typed import from_mapping
from tests.launch.conftest import run_deepspeed, train_args

METHODS = {
    "ogm": [],
    "pmr": [],
    "agm": [],
    "gblending": ["regulator.gblending_super_epoch=1"],
    "mmpareto": [],
    "greedy": ["model.fusion=mmtm", "regulator.greedy_starting_epoch=0"],
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_on_two_ranks_with_zero2_and_audits_clean(
    tiny_shards: Path, tmp_path: Path, method: str
) -> None:
    out = tmp_path / method
    args = train_args(tiny_shards, out, f"regulator.name={method}", *METHODS[method])
    proc = run_deepspeed([*args, "run.epochs=2"], zero="zero2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = read_records(out / "metrics.jsonl")  # checked against the schema
    config = json.loads((out / "config.json").read_text())
    cfg = from_mapping(RegulatorConfig, config["regulator"], prefix="regulator")
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    modalities = [k.split(".", 1)[1] for k in epochs[0] if k.startswith("trace.")]
    windows = {r["epoch"]: {m: bool(r[f"window_open.{m}"]) for m in modalities} for r in epochs}
    steps = [r for r in records if r["kind"] == "step"]
    assert steps
    cls = regulator_class(method)
    for r in steps:
        assert cls.audit_step(r, modalities, cfg, windows[r["epoch"]]) == [], r
    assert any(r[f"regulated.{m}"] for r in steps for m in modalities) or method == "gblending"
    assert (out / "last_model.pt").is_file() and (out / "summary.json").is_file()
