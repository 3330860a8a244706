"""The whole report written from synthetic run folders: verdict from P1-P3, a method that could
not run listed with its error, provenance against this repository's protocol commit, the
calibration section, the figures and summary.json, every number traceable to the files."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from studies.avmnist import AVMNIST
from studies.provenance import protocol_commit
from studies.results_doc import collect_runs, write_study_report
from studies.runner import ROOT, plan, runnable
from tests.studies.synthetic import run_records, write_config, write_metrics
from tests.studies.test_calibration_report import write_candidate

JOINT = [0.90, 0.88, 0.91, 0.87, 0.89]
VIDEO = [0.40, 0.42, 0.41, 0.43, 0.40]
METHODS = ["joint", "ogm", "greedy", "inforeg", "joint_star", "inforeg_star", "inforeg_always",
           "inforeg_k0.08", "audio_only", "video_only"]  # fmt: skip


def numbers(method: str, seed: int) -> tuple[float, float, list[int]]:
    """(fused acc, video branch, epochs regulating audio) of a synthetic run."""
    acc, video = JOINT[seed], VIDEO[seed]
    if method == "inforeg":  # P1: +1..+5 points; P2: +4, +5, +6, +5, +5 points
        return acc + 0.01 * (seed + 1), video + [0.04, 0.05, 0.06, 0.05, 0.05][seed], [2]
    if method == "inforeg_always":
        return acc + 0.005, video + 0.08, [0, 1, 2]
    if method == "inforeg_k0.08":
        return acc, video + 0.02, [2] if seed % 2 else []
    if method == "inforeg_star":  # P3: the same as Joint*, not shown
        return acc, video, [2]
    if method == "ogm":
        return acc - 0.01, video, []
    return acc, video, []


def write_runs(out: Path) -> list:  # type: ignore[type-arg]
    extra = AVMNIST.dose_methods([0.04, 0.08])
    # as the runner does: a method whose configuration does not build is set aside (Greedy,
    # given a fusion that does not exist)
    planned = plan(AVMNIST, out, list(range(5)), 3, METHODS, (), extra)
    broken = [
        replace(s, overrides=(*s.overrides, "model.fusion=late")) if s.method == "greedy" else s
        for s in planned
    ]
    specs, not_run = runnable(broken)
    out.mkdir(parents=True)
    (out / "not_run.json").write_text(json.dumps(not_run))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for s in specs:
        if s.method == "ogm" and s.seed == 3:  # started, stopped: "not finished", not dropped
            write_config(s.out_dir, epochs=3)
            (s.out_dir / "train.log").write_text("RuntimeError: loss is not finite\n")
            continue
        write_config(s.out_dir, epochs=3)
        acc, video, regulated = numbers(s.method, s.seed)
        branches = {"audio": 0.8, "video": video}
        if s.method.endswith("_only"):
            modality = s.method.removesuffix("_only")
            branches = {modality: acc - 0.1 if modality == "video" else 0.85}
            acc = branches[modality]
        recs = run_records(acc, branches, regulated={"audio": regulated})
        write_metrics(s.out_dir, recs)
        if not (s.method == "ogm" and s.seed == 4):  # one regulated run left unverified
            first = {"started": started, "commit": head.stdout.strip(), "dirty": []}
            (s.out_dir / "provenance.json").write_text(json.dumps({"starts": [first]}))
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "dataset.json").write_text(json.dumps(
        {"splits": {"train": {"samples": 5400}, "test": {"samples": 600}},
         "audio_feature_shape": [40, 19]}))  # fmt: skip
    return specs


def not_run_json(out: Path) -> dict[str, str]:
    return dict(json.loads((out / "not_run.json").read_text()))


def test_report_from_synthetic_runs(tmp_path: Path) -> None:
    out = tmp_path / "study"
    specs = write_runs(out)
    write_candidate(out, "b64", fused=0.85, video_alone=0.60)
    report, results = tmp_path / "docs" / "RESULTS.md", tmp_path / "docs" / "r"
    paths = write_study_report(AVMNIST, specs, out, report, results, ROOT)
    assert all(p.is_file() for p in paths)
    names = {p.name for p in paths}
    assert {"dose_response.png", "calibration.png", "information.png", "summary.json"} <= names
    text = report.read_text()
    flat = " ".join(text.split())
    assert "**Of the paper's three central claims: 2 holds, 1 not shown.**" in flat
    # P1: d = 1..5 points; P2: d = [4, 5, 6, 5, 5]: mean 5, sd 0.7071, se 0.3162, t 15.81
    assert "**P1** InfoReg raises fused accuracy over joint training: +3.00 ± 0.71 points" in flat
    assert (
        "t = 4.24 on 4 df (critical 2.776), InfoReg (paper) higher in 5 of 5 seeds: **holds**"
        in flat
    )
    assert "+5.00 ± 0.32 points (paired mean difference ± se), t = 15.81 on 4 df" in flat
    assert "**P3** InfoReg* raises fused accuracy over Joint*: +0.00 ± 0.00 points" in flat
    # tested secondaries: S1.ogm, S3.inforeg.always, S4 (the rest not run): 3 x 0.05
    assert 'With 3 comparisons tested at the 5 % level, about 0.2 "holds" or' in flat
    assert "| S1.greedy | InfoReg beats Greedy |" in text
    error = "its configuration does not build: " + not_run_json(out)["greedy"]
    assert "model.fusion" in error and "late" in error
    assert f"not run: greedy: {error} |" in text
    assert "| Greedy | not run | – |" in text and f"- Greedy: not run ({error})" in flat
    # a started run that did not finish is listed, and its method keeps its other seeds
    assert "- `ogm` seeds 3: no metrics.jsonl; the trainer's last error: RuntimeError" in flat
    assert "| OGM | 88.50 ± 1.29 |" in text  # seeds 0, 1, 2, 4: 89, 87, 90, 88
    assert "| Joint training | 89.00 ± 1.58 |" in text
    assert "| +3.00 ± 0.71 (5/5) | 71.90 (video branch 49.65) | 92.00 ± 1.87 | 5 |" in text
    # the planned dose run at K = 0.04 is InfoReg itself; K = 0.08 regulated in seeds 1 and 3
    assert "| InfoReg, K = 0.08 | 3 | 0/1/0/1/0 (0.4) |" in text
    assert (
        "Series: Joint training, InfoReg, K = 0.08, InfoReg (paper), InfoReg, every epoch" in flat
    )
    # the audit recomputes each run's decisions from its records: these synthetic configs say
    # joint training, so the 17 runs whose records regulate audio disagree, and are listed
    assert "**27 of 44 finished runs agree with METHOD.md**:" in flat
    assert (
        "- `inforeg/seed0`: 1 problem(s); the first: step 29: joint training never regulates, "
        "but regulated is set" in flat
    )
    assert "- `joint/seed0`" not in text
    assert "**Chosen: b64**" in text and "![calibration](r/calibration.png)" in text
    if protocol_commit(ROOT) is not None:  # a git checkout
        assert "**23 of 24 regulated runs**" in flat
        assert "- `ogm/seed4`: unverified (no provenance.json)" in text

    summary = json.loads((results / "summary.json").read_text())
    claims = {c["spec"]["key"]: c for c in summary["claims"]}
    assert claims["P1"]["verdict"] == "holds"
    assert claims["P1"]["result"]["diffs"] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert claims["S1.greedy"]["verdict"] == "not run" and claims["S1.greedy"]["result"] is None
    assert summary["methods"]["greedy"]["not_run"] == error
    assert summary["methods"]["joint"]["per_seed"]["acc"]["0"] == 0.90
    assert summary["calibration"]["chosen"] == "b64"
    assert summary["dose_response"]["verdict"] in ("holds", "not shown")
    assert len(summary["runs"]) == 44 and all(len(r["sha256"]) == 64 for r in summary["runs"])
    per_run = json.loads((results / "runs" / "inforeg-seed1.json").read_text())
    assert per_run["final"]["acc"] == pytest.approx(0.90) and len(per_run["epochs"]) == 3


def test_why_a_planned_run_has_no_result(tmp_path: Path) -> None:
    (joint,) = plan(AVMNIST, tmp_path, [0], 3, ["joint"])
    broken = replace(joint, method="ogm", config=tmp_path / "missing.yaml",
                     out_dir=tmp_path / "runs" / "ogm" / "seed0")  # fmt: skip
    runs, not_run, unfinished = collect_runs([joint, broken], AVMNIST.methods, {"greedy": "E"})
    assert runs == []
    assert unfinished["joint/seed0"] == "no metrics.jsonl"  # its config builds: never started
    assert unfinished["ogm/seed0"].startswith("ConfigError: config file ")
    assert not_run["ogm"] == unfinished["ogm/seed0"]
    assert not_run["greedy"] == "its configuration does not build: E"
    assert not_run["pmr"] == "not in this report's plan of runs"
