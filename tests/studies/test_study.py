"""The study runner's plan and skip/resume logic, without training.

Runs are synthetic metrics.jsonl records with known values (the report's own tests:
test_results_doc, test_claims, test_paired, ...); the scheduler is exercised with stand-in
commands (true / false) for the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launch.config import config_to_dict, load_config
from launch.records import parse_run
from launch.report import compact
from studies.avmnist import AVMNIST, flags
from studies.figures import window_fraction
from studies.results import Run, final_metrics
from studies.runner import (
    ROOT,
    RunSpec,
    StudyError,
    expected_config,
    plan,
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


def test_window_fraction_and_compact() -> None:
    runs = [run("joint", 0, 0.9, 0.4, windows=(2,)), run("joint", 1, 0.9, 0.4, windows=())]
    assert window_fraction(runs, "audio") == {0: 0.0, 1: 0.0, 2: 0.5}
    assert compact([2, 3, 4, 8]) == "2-4, 8" and compact([]) == "none" and compact([5]) == "5"


def test_plan_is_the_full_matrix_primary_first_then_seed_major(tmp_path: Path) -> None:
    specs = plan(AVMNIST, tmp_path, seeds=3)
    keys = [m.key for m in AVMNIST.methods]
    assert len(specs) == 3 * len(keys)
    primary = list(AVMNIST.primary)
    n = len(primary)
    expected = [(i, m) for i in range(3) for m in primary]
    assert [(s.seed, s.method) for s in specs[: 3 * n]] == expected
    rest = [k for k in keys if k not in primary]
    assert [s.method for s in specs[3 * n : 3 * n + len(rest)]] == rest
    assert {s.seed for s in specs[3 * n : 3 * n + len(rest)]} == {0}
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
    # a run written before the trainer gained a field (at its default) is still this run ...
    older = json.loads(json.dumps(expected))
    del older["regulator"]["agm_clip"], older["regulator"]["beta"]
    (s.out_dir / "config.json").write_text(json.dumps(older))
    assert run_state(s, expected) == "done"
    # ... but not when the study now sets that field to something else
    changed = config_to_dict(load_config(s.config, [*s.overrides, "regulator.agm_clip=false"]))
    with pytest.raises(StudyError, match="regulator"):
        run_state(s, changed)


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
