"""The calibration section recomputed from calibration run folders: criteria per candidate, the
choice, the dose thresholds with their replayed window lengths, and the check against
calibration.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.avmnist import AVMNIST
from studies.calibration import replay_window
from studies.calibration_report import calibration_lines, load_calibration
from studies.figures import plot_calibration
from tests.studies.synthetic import run_records, write_config, write_metrics

RATIOS = [0.30, 0.20, 0.12, 0.06, 0.05, 0.045, 0.015, 0.005, 0.0]
"""Relative growth of the audio trace from epoch t-1 to t (t = 1..9): the window test at epoch
e compares epochs e-1 and e-2, so it opens where RATIOS[e-2] > K. K = 0.04: epochs 2-7 (6);
0.02: 2-7 (6); 0.01: 2-8 (7); 0.08: 2-4 (3); 0.16: 2-3 (2)."""


def audio_trace() -> list[float]:
    trace = [1.0]
    for r in RATIOS:  # (h[t] - h[t-1]) / h[t] = r
        trace.append(trace[-1] / (1 - r))
    return trace


def write_candidate(out: Path, name: str, fused: float, video_alone: float | None) -> None:
    trace = audio_trace()
    open_epochs = replay_window(trace)
    assert open_epochs == [2, 3, 4, 5, 6, 7]
    for seed in AVMNIST.calibration_seeds:
        folder = out / "calibration" / name / "joint" / f"seed{seed}"
        write_config(folder, epochs=10)
        write_metrics(folder, run_records(fused, {"audio": 0.8, "video": 0.40}, epochs=10,
                                          windows={"audio": open_epochs},
                                          traces={"audio": trace}))  # fmt: skip
        if video_alone is not None:
            alone = out / "calibration" / name / "video_only" / f"seed{seed}"
            write_config(alone, epochs=10)
            write_metrics(alone, run_records(video_alone, {"video": video_alone}, epochs=10))


def test_calibration_recomputed_from_runs(tmp_path: Path) -> None:
    out = tmp_path / "study"
    assert load_calibration(AVMNIST, out) is None
    assert "not calibrated" in " ".join(calibration_lines(None, AVMNIST, ""))
    write_candidate(out, "b64", fused=0.85, video_alone=0.60)
    # an unfinished b128 joint run (5 of 10 epochs) is not counted as a candidate's run
    cut = out / "calibration" / "b128" / "joint" / "seed100"
    write_config(cut, epochs=10)
    write_metrics(cut, run_records(0.9, {"audio": 0.8, "video": 0.4}, epochs=5))
    (out / "calibration" / "calibration.json").write_text(
        json.dumps({"chosen": "b64", "dose": {"thresholds": [0.01, 0.04, 0.08]}})
    )
    view = load_calibration(AVMNIST, out)
    assert view is not None and list(view.results) == ["b64"]
    r = view.results["b64"]
    assert r["C1"]["met"] and r["C1"]["seeds_met"] == 3
    assert r["C2"]["fused_acc"] == 0.85 and r["C3"]["met"]
    assert r["C3"]["gap"] == pytest.approx(0.20)
    assert view.chosen == "b64" and view.why == "the first candidate that meets every criterion"
    # median open epochs per K: 0.01 -> 7, 0.02 -> 6, 0.04 -> 6, 0.08 -> 3, 0.16 -> 2: no
    # lower K differs from 0.04's 6 by 2, so the grid's end (0.01); higher: 0.08 (3)
    assert view.dose["thresholds"] == [0.01, 0.04, 0.08] and view.dose["fallback"] == ["lower"]
    assert view.disagreements() == []
    text = "\n".join(calibration_lines(view, AVMNIST, "r/calibration.png"))
    assert (
        "| **b64** | 64, 0.001, 30, (20, 0.1) | 100: 2-7 (6); 101: 2-7 (6); 102: 2-7 (6) |" in text
    )
    assert "| met (3 of 3) | 85.00 | met | 40.00 / 60.00 / 20.00 | met |" in text
    assert "| b128 | not tried (an earlier candidate met every criterion) |" in text
    assert "**Chosen: b64** (the first candidate that meets every criterion)." in text
    assert "This agrees with `calibration.json`." in text
    assert "| 0.01 | 7 | yes |" in text and "| 0.04 | 6 | yes (the paper's) |" in text
    assert "| 0.16 | 2 |  |" in text and "On the lower side no grid value" in text
    assert "![calibration](r/calibration.png)" in text
    plot_calibration(view.joint, tmp_path / "calibration.png")
    assert (tmp_path / "calibration.png").stat().st_size > 0


def test_a_candidate_missing_a_criterion_and_a_disagreeing_record(tmp_path: Path) -> None:
    out = tmp_path / "study"
    write_candidate(out, "b64", fused=0.95, video_alone=None)  # C2 fails, C3 not evaluated
    write_candidate(out, "b128", fused=0.95, video_alone=None)
    (out / "calibration" / "b128" / "joint" / "seed102" / "metrics.jsonl").unlink()  # running
    (out / "calibration" / "calibration.json").write_text(
        json.dumps({"chosen": "b128", "dose": {"thresholds": [0.01, 0.04, 0.08]}})
    )
    view = load_calibration(AVMNIST, out)
    assert view is not None and view.chosen == "b64"
    text = " ".join(" ".join(calibration_lines(view, AVMNIST, "c.png")).split())
    assert "It misses: C2: fused accuracy 3.00 points above the 92 cap; C3: not evaluated" in text
    assert "**Differs from calibration.json:** calibration.json chose b128, not b64." in text
    assert "| b128 (only 2 of 3 joint runs finished) | 128, 0.002, 30, (20, 0.1) |" in text
    assert "| b256 | not tried |" in text
