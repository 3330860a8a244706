"""The runner's scheduler (stand-in commands `true` / `false` for the trainer) and its
session record in OUT/study.json."""

from __future__ import annotations

import json
from pathlib import Path

from studies.avmnist import AVMNIST
from studies.runner import plan
from studies.sessions import Session, record_session, run_all


def test_run_all_runs_everything_in_parallel_and_records_failures(tmp_path: Path) -> None:
    specs = plan(AVMNIST, tmp_path, seeds=2, methods=["joint", "inforeg"])
    session = Session(parallel=2)
    run_all(specs, 2, session, log=lambda _: None, python="true")
    assert sorted(session.trained) == sorted(s.name for s in specs) and not session.failed
    assert all((s.out_dir / "train.log").is_file() for s in specs)
    failing = Session(parallel=1)
    run_all(specs[:1], 1, failing, log=lambda _: None, python="false")
    assert failing.failed == {specs[0].name: 1}
    session.finished = session.started + 5.0
    record_session(tmp_path, session)
    sessions = record_session(tmp_path, failing)
    assert len(sessions) == 2 and sessions[0]["wall_s"] == 5.0 and sessions[0]["parallel"] == 2


def test_the_session_is_recorded_after_every_run_so_a_killed_runner_leaves_its_time(
    tmp_path: Path,
) -> None:
    specs = plan(AVMNIST, tmp_path, seeds=3, methods=["joint"])
    session = Session(parallel=1, started=1000.0)
    seen: list[list[str]] = []

    def after_run() -> None:
        record_session(tmp_path, session)
        recorded = json.loads((tmp_path / "study.json").read_text())["sessions"]
        seen.append(sorted(name for s in recorded for name in s["trained"]))

    run_all(specs, 1, session, log=lambda _: None, python="true", on_run_end=after_run)
    names = [s.name for s in specs]
    # one record per invocation, rewritten in place: after run k it holds the first k runs
    assert seen == [sorted(names[: k + 1]) for k in range(3)]
    (recorded,) = json.loads((tmp_path / "study.json").read_text())["sessions"]
    assert recorded["started"] == 1000.0 and recorded["wall_s"] > 0
    assert session.finished == 0.0  # the record's end is stamped, not the live session's
