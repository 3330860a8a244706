"""The study runner's plan and skip/resume logic, and the report's numbers, without training.

Runs are synthetic metrics.jsonl records with known values, so every aggregate and verdict can be
checked by hand; the scheduler is exercised with stand-in commands (true / false) for the trainer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from launch.config import config_to_dict, load_config
from launch.records import parse_run
from launch.report import compact
from studies.avmnist import AVMNIST, flags
from studies.figures import window_fraction
from studies.results import (
    Run,
    aggregate,
    compare,
    final_metrics,
    stat,
    study_claims,
    weak_modality,
)
from studies.results_doc import write_study_report
from studies.runner import (
    ROOT,
    RunSpec,
    Session,
    StudyError,
    expected_config,
    plan,
    record_session,
    run_all,
    run_state,
    runnable,
)

MODALITIES = ("audio", "video")


def records(
    accs: list[float],
    video: list[float],
    trace_video: float = 0.3,
    windows: tuple[int, ...] = (2,),
    regulated: tuple[int, ...] = (),
) -> list[dict[str, Any]]:
    """Step and epoch records in the trainer's schema (launch/logs.py) with chosen values."""
    out: list[dict[str, Any]] = []
    for t, (acc, v) in enumerate(zip(accs, video, strict=True)):
        reg = 1.0 if t in regulated else 0.0
        out.append(
            {
                "kind": "step", "epoch": t, "step": 10 * t + 9, "loss": 1.0, "lr": 0.002,
                "score.audio": -0.5, "gap.audio": 0.4, "alpha.audio": 1.3,
                "regulated.audio": reg, "score.video": -0.9, "gap.video": 0.0,
                "alpha.video": 0.0, "regulated.video": 0.0,
                "samples_per_s": 100.0, "data_wait_frac": 0.01,
            }
        )  # fmt: skip
        out.append(
            {
                "kind": "epoch", "epoch": t, "trace.audio": 0.6, "trace.video": trace_video,
                "window_open.audio": t in windows, "window_open.video": False,
                "acc": acc, "acc.audio": 0.8, "acc.video": v, "macro_f1": acc - 0.01,
                "loss": 0.5, "epoch_time_s": 1.0, "samples_per_s": 100.0,
            }
        )  # fmt: skip
    return out


def as_run(method: str, seed: int, flat: list[dict[str, Any]]) -> Run:
    """A run of these records, written as metrics.jsonl text and read back by `launch.records`."""
    text = "".join(json.dumps(r) + "\n" for r in flat)
    return Run(method=method, seed=seed, records=parse_run(text))


def run(method: str, seed: int, acc: float, video: float, **kw: Any) -> Run:
    return as_run(method, seed, records([0.5, 0.7, acc], [0.3, 0.4, video], **kw))


def test_final_metrics_are_the_last_epoch_with_the_best_beside() -> None:
    r = as_run("joint", 0, records([0.5, 0.9, 0.8], [0.3, 0.5, 0.4]))
    f = final_metrics(r)
    assert f["acc"] == 0.8 and f["acc.video"] == 0.4 and f["acc.audio"] == 0.8
    assert f["best_acc"] == 0.9 and f["best_epoch"] == 1
    assert f["macro_f1"] == pytest.approx(0.79)
    with pytest.raises(ValueError, match="no epoch record"):
        final_metrics(as_run("joint", 0, []))


def test_stat_is_mean_and_sample_std() -> None:
    s = stat([0.8, 0.9, 1.0])
    assert s.mean == pytest.approx(0.9) and s.std == pytest.approx(0.1) and s.n == 3
    assert stat([0.5]).std == 0.0
    assert math.isnan(stat([]).mean)


def test_compare_verdicts_follow_the_stated_rule() -> None:
    a, b = stat([0.90, 0.91, 0.92]), stat([0.80, 0.81, 0.82])  # se = sqrt(2 * 0.01^2 / 3)
    c = compare(a, b)
    assert c.diff == pytest.approx(0.10) and c.se == pytest.approx(math.sqrt(2e-4 / 3))
    assert c.verdict == "holds"
    assert compare(b, a).verdict == "reversed"
    assert compare(stat([0.80, 0.90]), stat([0.84, 0.85])).verdict == "not shown"
    assert compare(stat([0.8]), stat([0.8])).verdict == "not shown"  # equal, no spread


def test_aggregate_weak_modality_and_claims() -> None:
    runs = [run("joint", s, 0.90 + 0.01 * s, 0.40 + 0.01 * s) for s in range(3)]
    runs += [run("inforeg", s, 0.93 + 0.01 * s, 0.55 + 0.01 * s, trace_video=0.5) for s in range(3)]
    runs += [run("inforeg_always", s, 0.91, 0.50) for s in range(3)]
    agg = aggregate(runs)
    assert agg["joint"]["acc"].mean == pytest.approx(0.91) and agg["joint"]["acc"].n == 3
    assert agg["inforeg"]["trace_mean.video"].mean == pytest.approx(0.5)
    weak = weak_modality(agg["joint"], MODALITIES)
    assert weak == "video"
    claims = {(c.better, c.worse, c.metric): c.comparison for c in study_claims(agg, weak)}
    # only the claims whose two methods ran; each with its verdict
    assert set(claims) == {
        ("inforeg", "joint", "acc.video"),
        ("inforeg", "joint", "acc"),
        ("inforeg", "joint", "trace_mean.video"),
        ("inforeg", "inforeg_always", "acc"),
        ("inforeg_always", "joint", "acc.video"),
    }
    assert claims[("inforeg", "joint", "acc.video")].diff == pytest.approx(0.15)
    assert claims[("inforeg_always", "joint", "acc.video")].verdict == "holds"
    assert claims[("inforeg", "inforeg_always", "acc")].verdict == "holds"


def test_window_fraction_and_compact() -> None:
    runs = [run("joint", 0, 0.9, 0.4, windows=(2,)), run("joint", 1, 0.9, 0.4, windows=())]
    assert window_fraction(runs, "audio") == {0: 0.0, 1: 0.0, 2: 0.5}
    assert compact([2, 3, 4, 8]) == "2-4, 8" and compact([]) == "none" and compact([5]) == "5"


def test_plan_is_the_full_matrix_seed_major(tmp_path: Path) -> None:
    specs = plan(AVMNIST, tmp_path, seeds=3)
    keys = [m.key for m in AVMNIST.methods]
    assert len(specs) == 3 * len(keys)
    assert [s.method for s in specs[: len(keys)]] == keys and {s.seed for s in specs[:10]} == {0}
    required = {"joint", "joint_star", "ogm_ge", "inforeg", "inforeg_official", "inforeg_star"}
    assert required | {"inforeg_always", "inforeg_outside"} <= set(keys)
    s = specs[-1]
    assert s.out_dir == tmp_path / "runs" / s.method / "seed2"
    assert "run.seed=2" in s.overrides and f"data.dir={tmp_path / 'shards'}" in s.overrides
    assert s.command("PY")[:2] == ["PY", str(ROOT / "launch" / "train.py")]
    assert "--resume" in s.command() and "auto" in s.command()
    few = plan(AVMNIST, tmp_path, seeds=1, epochs=2, methods=["joint", "inforeg"])
    assert [f.method for f in few] == ["joint", "inforeg"] and "run.epochs=2" in few[0].overrides
    with pytest.raises(StudyError, match="unknown"):
        plan(AVMNIST, tmp_path, seeds=1, methods=["magic"])


def test_the_config_family_differs_only_in_the_regulator(tmp_path: Path) -> None:
    """Same data, optimiser and run everywhere; same encoders except the unimodal references
    (and Greedy's MMTM fusion); a method whose configuration does not build is set aside."""
    specs, not_run = runnable(plan(AVMNIST, tmp_path, seeds=1))
    assert set(not_run) <= {"greedy"}, not_run
    configs = {s.method: expected_config(s) for s in specs}
    base = configs["joint"]
    for key, cfg in configs.items():
        assert cfg["data"] == base["data"] and cfg["optim"] == base["optim"], key
        assert {k: v for k, v in cfg["run"].items() if k != "out_dir"} == {
            k: v for k, v in base["run"].items() if k != "out_dir"
        }, key
        if key in AVMNIST.references.values():
            (modality,) = cfg["model"]["encoders"]
            assert cfg["model"]["encoders"][modality] == base["model"]["encoders"][modality]
        else:
            assert {**cfg["model"], "fusion": "concat"} == base["model"], key
            assert cfg["model"]["fusion"] == ("mmtm" if key == "greedy" else "concat"), key
    assert configs["inforeg_star"]["regulator"]["unimodal_loss"] is True
    assert configs["inforeg_always"]["regulator"]["schedule"] == "always"
    assert configs["inforeg_outside"]["regulator"]["schedule"] == "outside"
    assert configs["inforeg_official"]["regulator"]["variant"] == "official"
    assert configs["ogm_ge"]["regulator"]["name"] == "ogm_ge"
    assert configs["ogm"]["regulator"]["name"] == "ogm"
    for base_key in ("ogm", "agm", "pmr"):
        for schedule in ("window", "outside"):
            cfg = configs[f"{base_key}_{schedule}"]["regulator"]
            assert cfg == {**configs[base_key]["regulator"], "schedule": schedule}


def spec_in(tmp_path: Path, method: str = "joint", epochs: int = 3) -> RunSpec:
    (s,) = plan(AVMNIST, tmp_path, seeds=1, epochs=epochs, methods=[method])
    return s


def test_run_state_new_resume_done_and_foreign(tmp_path: Path) -> None:
    s = spec_in(tmp_path)
    expected = expected_config(s)
    assert run_state(s, expected) == "new"
    s.out_dir.mkdir(parents=True)
    (s.out_dir / "config.json").write_text(json.dumps(expected))
    assert run_state(s, expected) == "new"  # killed before its first checkpoint
    (s.out_dir / "checkpoints" / "step-00000100").mkdir(parents=True)
    assert run_state(s, expected) == "new"  # a checkpoint being written is not complete
    (s.out_dir / "checkpoints" / "step-00000100" / "COMPLETE").write_text("")
    assert run_state(s, expected) == "resume"
    (s.out_dir / "summary.json").write_text(json.dumps({"exit_code": 3, "epochs": 1}))
    assert run_state(s, expected) == "resume"  # stopped on a non-finite loss: not finished
    (s.out_dir / "summary.json").write_text(json.dumps({"exit_code": 0, "epochs": 3}))
    assert run_state(s, expected) == "done"
    other = config_to_dict(load_config(s.config, [*s.overrides, "optim.lr=0.1"]))
    (s.out_dir / "config.json").write_text(json.dumps(other))
    with pytest.raises(StudyError, match=r"another configuration \(sections \['optim'\]"):
        run_state(s, expected)


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


def test_data_commands_and_manifest_reuse(tmp_path: Path) -> None:
    assert flags({"audio_sr": 8000, "quiet": True, "overwrite": False}) == [
        "--audio-sr",
        "8000",
        "--quiet",
    ]
    cmd = AVMNIST.build_command(tmp_path / "raw", tmp_path / "shards")
    assert cmd[:2] == ["build", "--manifest"] and "--formats" in cmd and "ffcv" in cmd
    manifest = AVMNIST.manifest_command(Path("src"), tmp_path / "raw")
    assert "--pca-energy-removed" in manifest and "0.75" in manifest
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "manifest.csv").write_text("id\n")
    assert not AVMNIST.manifest_current(raw)
    (raw / "avmnist.json").write_text(json.dumps({"config": AVMNIST.manifest_config()}))
    assert AVMNIST.manifest_current(raw)
    changed = {**AVMNIST.manifest_config(), "image_noise": 0.5}
    (raw / "avmnist.json").write_text(json.dumps({"config": changed}))
    assert not AVMNIST.manifest_current(raw)


def test_report_from_synthetic_runs(tmp_path: Path) -> None:
    """The report, JSON and figures are written from run folders alone, numbers traceable."""
    out = tmp_path / "study"
    specs = plan(AVMNIST, out, seeds=2, epochs=3, methods=["joint", "inforeg", "video_only"])
    for s in specs:
        s.out_dir.mkdir(parents=True)
        (s.out_dir / "config.json").write_text(json.dumps(expected_config(s)))
        acc, video = (0.93, 0.55) if s.method == "inforeg" else (0.90, 0.40)
        recs = records([0.5, 0.7, acc + 0.01 * s.seed], [0.3, 0.4, video], regulated=(2,))
        if s.method == "video_only":
            recs = [{k: v for k, v in r.items() if "audio" not in k} for r in recs]  # one modality
        (s.out_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (out / "shards").mkdir()
    (out / "shards" / "dataset.json").write_text(
        json.dumps(
            {
                "splits": {"train": {"samples": 5400}, "test": {"samples": 600}},
                "audio_feature_shape": [40, 19],
            }
        )
    )
    (out / "calibration").mkdir()
    (out / "calibration" / "calibration.json").write_text(
        json.dumps({"chosen": "b128", "seeds": [100, 101, 102]})
    )
    report = tmp_path / "docs" / "RESULTS.md"
    paths = write_study_report(AVMNIST, specs, out, report, tmp_path / "docs" / "r", ROOT)
    assert all(p.is_file() for p in paths)
    text = report.read_text()
    assert "| Joint training | 90.50 ± 0.71 |" in text
    assert "| InfoReg (paper) | 93.50 ± 0.71 |" in text and "| 55.00 ± 0.00 |" in text
    assert "**video**" in text and "![information](r/information.png)" in text
    flat = " ".join(text.split())
    assert "InfoReg (paper): 1/1 of 3 epochs (seeds 0, 1) regulated audio" in flat
    summary = json.loads((tmp_path / "docs" / "r" / "summary.json").read_text())
    assert summary["meta"]["weak_modality"] == "video"
    assert {c["better"] for c in summary["claims"]} == {"inforeg"}
    assert len(summary["runs"]) == 6 and all(len(r["sha256"]) == 64 for r in summary["runs"])
    per_run = json.loads((tmp_path / "docs" / "r" / "runs" / "inforeg-seed1.json").read_text())
    assert per_run["final"]["acc"] == pytest.approx(0.94) and len(per_run["epochs"]) == 3
