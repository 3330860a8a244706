"""`python -m studies.compare`: runs side by side from their files, windows as epoch ranges, and a
clear exit 2 for a folder that is not a finished run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from studies.compare import main
from tests.studies.test_study import records


def write_run(
    root: Path, name: str, regulator: dict[str, object], windows: tuple[int, ...]
) -> Path:
    run = root / name
    run.mkdir()
    cfg = {"name": "joint", "variant": "paper", "unimodal_loss": False, "schedule": "window"}
    (run / "config.json").write_text(json.dumps({"regulator": {**cfg, **regulator}}))
    lines = records([0.5, 0.7, 0.9, 0.8, 0.85], [0.3, 0.4, 0.5, 0.45, 0.6], windows=windows)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def test_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    joint = write_run(tmp_path, "joint", {}, windows=(1, 2, 4))
    inforeg = write_run(tmp_path, "inforeg", {"name": "inforeg", "unimodal_loss": True}, (3,))
    plot = tmp_path / "information.png"
    assert main([str(joint), str(inforeg), "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, *rows = (re.split(r"\s{2,}", line.strip()) for line in lines[:3])
    cells = [dict(zip(header, row, strict=True)) for row in rows]
    assert cells[0]["method"] == "joint" and cells[1]["method"] == "inforeg* (paper)"
    assert (cells[0]["best_acc"], cells[0]["best_epoch"], cells[0]["last_acc"]) == (
        "0.900",
        "2",
        "0.850",
    )
    assert cells[0]["win.audio"] == "1-2, 4" and cells[1]["win.audio"] == "3"
    assert cells[0]["win.video"] == "none" and cells[0]["acc.video"] == "0.600"
    assert plot.stat().st_size > 0 and lines[-1] == f"information curves: {plot}"


def test_a_folder_that_is_not_a_run_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    joint = write_run(tmp_path, "joint", {}, windows=(1,))
    assert main([str(joint), str(tmp_path / "missing")]) == 2
    assert str(tmp_path / "missing" / "metrics.jsonl") in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    assert main([str(empty)]) == 2
    assert f"{empty}: no epoch record" in capsys.readouterr().err
