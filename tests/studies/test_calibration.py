"""The calibration's rules (docs/study-protocol.md, section 1) on runs with chosen records."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from launch.records import parse_run
from studies.calibration import (
    Candidate,
    Criteria,
    choose,
    dose_thresholds,
    evaluate,
    first_stretch,
    replay_window,
)
from studies.results import Run


def run(
    audio_trace: Sequence[float],
    open_epochs: Sequence[int] = (),
    acc: float = 0.9,
    video: float = 0.5,
    seed: int = 0,
) -> Run:
    """A run whose epochs carry this audio trace and recorded window, ending at `acc`/`video`."""
    lines = [
        {
            "kind": "epoch", "epoch": t, "trace.audio": tr, "trace.video": 0.2,
            "window_open.audio": t in open_epochs, "window_open.video": False,
            "acc": acc, "acc.audio": 0.7, "acc.video": video, "macro_f1": acc,
            "loss": 0.5, "epoch_time_s": 1.0, "samples_per_s": 10.0,
        }
        for t, tr in enumerate(audio_trace)
    ]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in lines)
    return Run(method="joint", seed=seed, records=parse_run(text))


def test_replay_window_is_eq11_from_epoch_2() -> None:
    # growth (h[t-1] - h[t-2]) / h[t-1]: t=2: (1.1-1)/1.1 = 0.091; t=3: (1.12-1.1)/1.12 = 0.018;
    # t=4: (1.4-1.12)/1.4 = 0.2; t=5: 0
    history = [1.0, 1.1, 1.12, 1.4, 1.4, 1.4]
    assert replay_window(history, 0.04) == [2, 4]
    assert replay_window(history, 0.01) == [2, 3, 4]
    assert replay_window(history, 0.1) == [4]


def test_first_stretch() -> None:
    assert first_stretch([]) == (-1, 0)
    assert first_stretch([3, 4, 5, 6, 7, 8, 10, 11]) == (3, 6)
    assert first_stretch([2, 4, 5]) == (2, 1)


def test_evaluate_applies_c1_c2_c3() -> None:
    long = list(range(3, 9))  # 6 epochs from 3: meets C1
    joint = [
        run([1.0] * 12, long, acc=0.90, video=0.50, seed=100),
        run([1.0] * 12, long, acc=0.92, video=0.48, seed=101),
        run([1.0] * 12, [2, 3, 4], acc=0.91, video=0.49, seed=102),  # 3 epochs: fails
    ]
    alone = {"video": [run([1.0] * 12, acc=a) for a in (0.60, 0.62, 0.61)]}
    result = evaluate(joint, alone, "audio", "video")
    assert result["C1"]["seeds_met"] == 2 and result["C1"]["met"] is True
    assert result["C1"]["stretches"][2] == {"start": 2, "length": 3}
    assert result["C2"]["fused_acc"] == pytest.approx(0.91) and result["C2"]["met"] is True
    # weak alone 0.61, weak under joint 0.49: a gap of 0.12 >= 0.10
    assert result["C3"]["gap"] == pytest.approx(0.12) and result["C3"]["met"] is True
    late = [run([1.0] * 12, list(range(4, 12)), seed=s) for s in (100, 101, 102)]
    assert evaluate(late, {}, "audio", "video")["C1"]["met"] is False  # starts at 4
    strict = Criteria(max_fused_acc=0.905)
    assert evaluate(joint, {}, "audio", "video", strict)["C2"]["met"] is False
    assert evaluate(joint, {}, "audio", "video")["C3"]["met"] is None  # not evaluated


def test_choose_takes_the_first_that_meets_all_else_the_most() -> None:
    def result(c1: bool, c2: bool, c3: bool | None, length: int = 6) -> dict[str, object]:
        return {
            "C1": {"met": c1, "stretches": [{"start": 2, "length": length}]},
            "C2": {"met": c2},
            "C3": {"met": c3},
        }

    order = ["a", "b", "c"]
    results = {"a": result(False, True, None), "b": result(True, True, True)}
    assert choose(results, order)[0] == "b"
    results = {
        "a": result(False, True, None, 4),
        "b": result(True, False, True),
        "c": result(True, True, False, 7),
    }
    assert choose(results, order)[0] == "c"  # b and c both meet two; c's stretch is longer
    with pytest.raises(ValueError, match="no candidate"):
        choose({}, order)


def test_dose_thresholds_move_away_from_the_paper_k_by_two_epochs() -> None:
    # growth per epoch from t=2: 0.091, 0.048, 0.03, 0.015, 0.005, 0.0
    history = [1.0, 1.1, 1.155, 1.19, 1.208, 1.214, 1.214]
    joint = [run(history, seed=s) for s in (100, 101, 102)]
    dose = dose_thresholds(joint, "audio", (0.01, 0.02, 0.04, 0.08, 0.16))
    counts = dose["median_open_epochs"]
    assert [counts[k] for k in ("0.01", "0.02", "0.04", "0.08", "0.16")] == [4, 3, 2, 1, 0]
    # lower side: 0.02 differs by 1, 0.01 by 2 -> 0.01; higher: 0.08 by 1, 0.16 by 2 -> 0.16
    assert dose["thresholds"] == [0.01, 0.04, 0.16] and dose["fallback"] == []
    near = dose_thresholds(joint, "audio", (0.02, 0.04, 0.08))
    assert near["thresholds"] == [0.02, 0.04, 0.08] and near["fallback"] == ["lower", "higher"]
    with pytest.raises(ValueError, match="paper's K"):
        dose_thresholds(joint, "audio", (0.02, 0.08))


def test_candidate_overrides_are_the_recipe() -> None:
    c = Candidate(name="b128", batch_size=128, lr=0.002, epochs=30, step_size=20)
    assert c.overrides() == (
        "data.batch_size=128",
        "optim.lr=0.002",
        "run.epochs=30",
        "optim.step_size=20",
        "optim.gamma=0.1",
    )
