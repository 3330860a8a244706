"""Bad inputs, bad options, a SIGKILLed build, damaged outputs: the build and verify handle each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from preprocess.cli import main as preprocess_main
from preprocess.manifest import ManifestRow, read_manifest, write_manifest
from preprocess.schema import STAGING_DIR, load_dataset_info
from preprocess.verify import verify
from tests.preprocess.conftest import BUILD_ARGS, samples_in


def build_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["build", "--manifest", str(manifest), "--out", str(out), *BUILD_ARGS, *extra]


def inline_build_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    """One worker: the build runs in the test's process (no pool start-up, FFCV imported once);
    the pool itself is exercised by the shared build and the kill test."""
    return build_args(manifest, out, "--workers", "1", *extra)


def test_bad_inputs_are_listed_and_skipped(
    broken_manifest: Path, synth_built: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    code = preprocess_main(inline_build_args(broken_manifest, out, "--max-error-rate", "0.2"))
    assert code == 0
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["field"]) for e in errors] == [
        ("bad_truncated", "video"),
        ("bad_empty_wav", "audio"),
        ("bad_missing", "video"),
        ("bad_garbage", "video"),
    ]
    assert all(set(e) == {"id", "field", "path", "reason"} and e["reason"] for e in errors)
    assert "does not exist" in errors[2]["reason"] and "0 bytes" in errors[1]["reason"]
    assert errors[0]["path"].endswith("truncated.mp4")
    # The shards hold exactly the good samples: the same ones as the clean build.
    assert samples_in(out) == samples_in(synth_built)
    info = load_dataset_info(out)
    assert info.errors == 4 and sum(s.errors for s in info.splits.values()) == 4
    assert verify(out) == []


def test_error_rate_above_the_limit_exits_nonzero_with_consistent_outputs(
    broken_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    assert preprocess_main(inline_build_args(broken_manifest, out)) == 1  # 4 of 28 > 1%
    assert "more than --max-error-rate" in capsys.readouterr().err
    assert verify(out) == []
    # A second run finds the folder complete, and still says the rate is too high.
    assert preprocess_main(inline_build_args(broken_manifest, out)) == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--fps", "0", "fps must be > 0"),
        ("--formats", "ffcv,zip", "unknown format"),
        ("--frame-size", "-4", "frame_size"),
        ("--shard-size", "0", "shard_size"),
        ("--audio-seconds", "-1", "audio_seconds"),
        ("--max-error-rate", "2", "max_error_rate"),
        ("--workers", "0", "workers"),
        ("--jpeg-quality", "101", "jpeg_quality"),
    ],
)
def test_impossible_options_are_rejected_before_any_work(
    synth_raw: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    message: str,
) -> None:
    out = tmp_path / "never"
    args = ["build", "--manifest", str(synth_raw), "--out", str(out), option, value]
    assert preprocess_main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_label_and_wordless_text_are_errors(synth_raw: Path, tmp_path: Path) -> None:
    manifest = read_manifest(synth_raw)
    rows = list(manifest.rows)
    r0, r1 = rows[0], rows[1]
    rows[0] = ManifestRow(
        id=r0.id,
        split=r0.split,
        label="no_such_class",
        video=r0.video,
        audio=r0.audio,
        text=r0.text,
    )
    rows[1] = ManifestRow(
        id=r1.id, split=r1.split, label=r1.label, video=r1.video, audio=r1.audio, text="?! ..."
    )
    path = write_manifest(synth_raw.parent / "labels.csv", rows)
    classes = ",".join(c for c in manifest.classes())
    out = tmp_path / "data"
    args = inline_build_args(path, out, "--classes", classes, "--max-error-rate", "0.2")
    assert preprocess_main(args) == 0
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["field"]) for e in errors] == [(r0.id, "label"), (r1.id, "text")]


@pytest.mark.timeout(400)
def test_sigkill_midway_then_rerun_gives_the_same_samples(
    synth_raw: Path, synth_built: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "preprocess.cli", *build_args(synth_raw, out, "--keep-staging")]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    records = out / STAGING_DIR
    deadline = time.monotonic() + 120
    killed_after = 0
    while time.monotonic() < deadline and proc.poll() is None:
        killed_after = len(list(records.glob("*/records/*.npz"))) if records.exists() else 0
        if killed_after >= 6:
            os.killpg(proc.pid, signal.SIGKILL)  # the build and its pool workers
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert 6 <= killed_after < 24
    assert not (out / "dataset.json").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "reused" in rerun.stdout
    reused = int(rerun.stdout.split("reused ")[1].split(";")[0])
    assert reused >= killed_after  # the records written before the kill were kept
    assert verify(out) == []
    assert samples_in(out) == samples_in(synth_built)
    # The outputs are deterministic: byte for byte those of the uninterrupted build.
    assert load_dataset_info(out).files == load_dataset_info(synth_built).files

    # A re-run with complete outputs but no dataset.json (a kill at the very end) keeps the
    # outputs it can verify, and rewrites a damaged one.
    (out / "dataset.json").unlink()
    shard = out / load_dataset_info(synth_built).splits["train"].dali[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "already complete and verified" in again.stdout + again.stderr
    assert verify(out) == []
    assert load_dataset_info(out).files == load_dataset_info(synth_built).files


def test_verify_names_each_mismatch(synth_built: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(synth_built, out)
    assert verify(out) == []
    info = load_dataset_info(out)
    shard = info.splits["test"].dali[0]
    data = bytearray((out / shard).read_bytes())
    data[1000] ^= 0x01  # one bit of one JPEG
    (out / shard).write_bytes(bytes(data))
    ffcv = info.splits["val"].ffcv
    assert ffcv is not None
    (out / ffcv).unlink()
    frame = next(rel for rel in info.files if rel.endswith(".jpg"))
    (out / frame).unlink()
    (out / "frames" / "stray.txt").write_text("not ours")
    problems = verify(out)
    assert any(p.startswith(f"{shard}: sha256") for p in problems)
    assert any(p == f"{ffcv}: missing" for p in problems)
    assert any(p == f"{frame}: missing" for p in problems)
    assert any(p.startswith("frames/stray.txt: unexpected") for p in problems)
    assert len(problems) == 4

    code = subprocess.run(
        [sys.executable, "-m", "preprocess.cli", "verify", str(out), "--workers", "1"],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 1
    for name in (shard, ffcv, frame):
        assert name in code.stderr


def test_verify_checks_counts_against_dataset_json(synth_built: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(synth_built, out)
    data = json.loads((out / "dataset.json").read_text())
    data["splits"]["train"]["samples"] += 1
    data["splits"]["train"]["per_class"][data["classes"][0]] += 1
    (out / "dataset.json").write_text(json.dumps(data))
    problems = verify(out)
    assert any(p.startswith("ffcv/train.beton:") and "samples" in p for p in problems)
    assert any(p.startswith("dali/train-*.tar:") for p in problems)
    assert any(p.startswith("frames/train.jsonl:") for p in problems)


def test_a_finished_folder_is_not_overwritten_by_another_build(
    synth_raw: Path, synth_built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(synth_built, out)
    args = inline_build_args(synth_raw, out, "--jpeg-quality", "70")
    assert preprocess_main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert preprocess_main([*args, "--overwrite"]) == 0
    assert load_dataset_info(out).options.jpeg_quality == 70
    assert verify(out) == []


def test_bench_prints_throughput_per_worker_count(
    synth_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = tmp_path / "bench.json"
    args = ["bench", "--manifest", str(synth_raw), "--workers", "1", "--frame-size", "32"]
    assert preprocess_main([*args, "--json", str(figures)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("workers  clips  process_s  clips/s")
    (row,) = json.loads(figures.read_text())
    assert row["workers"] == 1 and row["clips"] == 24 and row["clips_per_s"] > 0
    assert 0 < row["utilisation"] <= 1.5
