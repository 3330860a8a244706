"""A run folder read back: finished or why not, one metric by seed, regulated epochs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.avmnist import AVMNIST
from studies.results import (
    finished_run,
    is_regulated,
    metric_value,
    per_seed,
    regulated_epochs,
    window_epochs,
)
from tests.studies.synthetic import make_run, run_records, write_config, write_metrics


def test_finished_or_why_not(tmp_path: Path) -> None:
    done = tmp_path / "done"
    write_config(done, epochs=3)
    write_metrics(done, run_records(0.9, {"audio": 0.8, "video": 0.4}))
    run, why = finished_run(done, "joint", 0)
    assert run is not None and why == "" and len(run.epochs) == 3

    cut = tmp_path / "cut"
    write_config(cut, epochs=3)
    write_metrics(cut, run_records(0.9, {"audio": 0.8, "video": 0.4}, epochs=2))
    (cut / "summary.json").write_text(json.dumps({"exit_code": 3}))
    (cut / "train.log").write_text("epoch 1\nRuntimeError: loss is not finite\nbye\n")
    run, why = finished_run(cut, "joint", 0)
    assert run is None
    assert why == (
        "stopped after 2 of 3 epochs, exit code 3; the trainer's last error: "
        "RuntimeError: loss is not finite"
    )
    assert finished_run(tmp_path / "none", "joint", 0) == (None, "no metrics.jsonl")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"kind": "epoch", "epoch": 0}\n')
    run, why = finished_run(bad, "joint", 0)
    assert run is None and why.startswith("unreadable metrics.jsonl (") and "missing" in why


def test_metrics_by_seed_and_regulation(tmp_path: Path) -> None:
    traces = {"audio": [0.6, 0.8, 1.0], "video": [0.1, 0.2, 0.6]}
    runs = [
        make_run(tmp_path, "inforeg", s, 0.9 + 0.01 * s, {"audio": 0.8, "video": 0.4},
                 regulated={"audio": [1, 2]}, windows={"audio": [2]}, traces=traces)
        for s in range(2)
    ]  # fmt: skip
    assert per_seed(runs, "acc") == {0: pytest.approx(0.9), 1: pytest.approx(0.91)}
    assert metric_value(runs[0], "trace_mean.video") == pytest.approx(0.3)
    assert metric_value(runs[0], "acc.video") == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no metric 'acc.text'"):
        metric_value(runs[0], "acc.text")
    assert regulated_epochs(runs[0], "audio") == [1, 2] and regulated_epochs(runs[0], "video") == []
    assert window_epochs(runs[0], "audio") == [2]
    regulated = {m.key for m in AVMNIST.methods if is_regulated(m)}
    assert {"joint", "joint_star", "audio_only", "video_only"}.isdisjoint(regulated)
    assert {"ogm", "inforeg", "inforeg_official", "pmr_window"} <= regulated
