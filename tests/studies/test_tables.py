"""The report's tables (paper Tables 1-4 and the regulation counts) on synthetic runs."""

from __future__ import annotations

from pathlib import Path

from studies import paper
from studies.avmnist import AVMNIST
from studies.claims import SCHEDULE_RUNS
from studies.paired import paired
from studies.results import Run, by_method
from studies.tables import (
    diff_cell,
    imbalance_table,
    mean_sd,
    method_table,
    regulation_table,
    schedule_table,
)
from tests.studies.synthetic import make_run

LABELS = {m.key: m.label for m in AVMNIST.methods}


def runs_of(
    tmp: Path, method: str, accs: list[float], video: list[float], **kw: object
) -> list[Run]:
    return [
        make_run(tmp, method, s, a, {"audio": 0.8, "video": v}, **kw)  # type: ignore[arg-type]
        for s, (a, v) in enumerate(zip(accs, video, strict=True))
    ]


def test_cells() -> None:
    assert mean_sd([0.90, 0.91]) == "90.50 ± 0.71" and mean_sd([]) == "–"
    assert mean_sd([0.9]) == "90.00 ± 0.00"
    p = paired({0: 0.01, 1: 0.02, 2: 0.03, 3: 0.04, 4: 0.05}, {s: 0.0 for s in range(5)})
    assert diff_cell(p) == "+3.00 ± 0.71 (5/5)" and diff_cell(None) == "–"


def test_tables_2_and_4_and_regulation(tmp_path: Path) -> None:
    runs = runs_of(tmp_path, "joint", [0.90, 0.91], [0.40, 0.42])
    runs += runs_of(tmp_path, "inforeg", [0.92, 0.94], [0.50, 0.52],
                    regulated={"audio": [2]}, windows={"audio": [2]})  # fmt: skip
    runs += runs_of(tmp_path, "ogm", [0.90, 0.91], [0.40, 0.42])  # never regulated
    groups = by_method(runs)
    rows = [m for m in AVMNIST.methods if m.group == "joint_loss"]
    text = "\n".join(
        method_table(rows, groups, "video", "audio", "joint",
                     (paper.CREMAD_ACC, paper.CREMAD_WEAK_BRANCH), {"greedy": "ValueError: x"})
    )  # fmt: skip
    assert (
        "| Joint training | 90.50 ± 0.71 | 41.00 ± 1.41 | 80.00 ± 0.00 | 89.50 ± 0.71 | – | "
        "66.61 (video branch 35.14) | 90.50 ± 0.71 | 2 |"
    ) in text
    # InfoReg - joint: +2 and +3 points: mean 2.5, sd 0.7071, se 0.5
    assert "| InfoReg (paper) | 93.00 ± 1.41 | 51.00 ± 1.41 |" in text
    assert "| +2.50 ± 0.50 (2/2) | 71.90 (video branch 49.65) | 93.00 ± 1.41 | 2 |" in text
    assert (
        "| OGM | 90.50 ± 0.71 |" in text
        and "| +0.00 ± 0.00 (0/2) | 68.70 | 90.50 ± 0.71 | 2 |" in text
    )
    assert "| Greedy | not run | – |" in text and "- Greedy: not run (ValueError: x)" in text
    assert "- PMR: not run (no finished run)" in text

    table4 = "\n".join(schedule_table(SCHEDULE_RUNS, groups, LABELS, paper.CREMAD_SCHEDULES))
    assert "| OGM | 90.50 ± 0.71 (`ogm`) | – (`ogm_window`) | – (`ogm_outside`) | – |" in table4
    assert "| InfoReg (paper) | – (`inforeg_always`) | 93.00 ± 1.41 (`inforeg`) |" in table4
    assert "| 69.03 / 71.90 / 67.22 |" in table4

    reg = "\n".join(regulation_table([AVMNIST.method("inforeg"), AVMNIST.method("ogm")],
                                     groups, ["audio", "video"]))  # fmt: skip
    assert "| InfoReg (paper) | 3 | 1/1 (1.0) | 0/0 (0.0) | 1/1 | 0/0 |  |" in reg
    assert "| OGM | 3 | 0/0 (0.0) | 0/0 (0.0) | 0/0 | 0/0 | **never regulated** |" in reg


def test_table_1_imbalance(tmp_path: Path) -> None:
    runs = runs_of(tmp_path, "joint", [0.90, 0.91], [0.40, 0.42])
    runs += [make_run(tmp_path, "video_only", s, a, {"video": a}) for s, a in enumerate([0.6, 0.7])]
    text = "\n".join(imbalance_table(by_method(runs), ["audio", "video"], AVMNIST.references,
                                     LABELS))  # fmt: skip
    assert "| audio | 80.00 ± 0.00 | – | – |" in text  # no audio encoder alone
    # video: joint 40, 42 against alone 60, 70: differences -20, -28: mean -24, sd 5.657, se 4
    assert "| video | 41.00 ± 1.41 | 65.00 ± 7.07 | -24.00 ± 4.00 (0/2) |" in text
