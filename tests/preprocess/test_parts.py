"""Sharded builds: N parts merged equal the one-machine build, byte for byte; a killed part re-runs
alone; merge names every missing or inconsistent part and writes nothing; bad arguments exit 2.

"Equal" is checked on every output file's sha256 (dataset.json's `files`: the FFCV files, DALI
shards and indices, frames, errors.jsonl, vocab.txt), on dataset.json itself, and sample for sample
in the DALI shards (id, label, index, frames, audio and text bytes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from preprocess.cli import main as preprocess_main
from preprocess.plan import Sharding
from preprocess.schema import DATASET_JSON, STAGING_DIR, load_dataset_info
from preprocess.verify import verify
from tests.preprocess.conftest import BUILD_ARGS, samples_in


def part_args(manifest: Path, out: Path, parts: int, index: int, *extra: str) -> list[str]:
    """One part, inline (one worker: no pool start-up, FFCV imported once per test process)."""
    return [
        "build",
        *("--manifest", str(manifest), "--out", str(out), *BUILD_ARGS, "--workers", "1"),
        *("--num-shards", str(parts), "--shard-index", str(index), *extra),
    ]


def merge_args(out: Path, *extra: str) -> list[str]:
    return ["merge", str(out), "--workers", "1", "--quiet", *extra]


def assert_same_dataset(out: Path, reference: Path) -> None:
    assert verify(out) == []
    assert load_dataset_info(out).files == load_dataset_info(reference).files
    assert (out / DATASET_JSON).read_bytes() == (reference / DATASET_JSON).read_bytes()
    assert samples_in(out) == samples_in(reference)


def test_sharding_takes_every_row_once_and_balances_splits() -> None:
    rows = list(range(10))
    parts = [Sharding(num_shards=3, shard_index=i).rows(rows) for i in range(3)]  # type: ignore[arg-type]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert Sharding(num_shards=3, shard_index=1).name == "part-00001-of-00003"


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_merged_parts_equal_the_one_machine_build(
    synth_raw: Path, synth_built: Path, tmp_path: Path, parts: int
) -> None:
    out = tmp_path / "data"
    for index in reversed(range(parts)):  # in any order
        assert preprocess_main(part_args(synth_raw, out, parts, index)) == 0
        assert not (out / DATASET_JSON).exists()
    assert preprocess_main(merge_args(out)) == 0
    assert_same_dataset(out, synth_built)
    assert not (out / STAGING_DIR).exists()


def test_merged_parts_with_bad_rows_keep_the_builds_errors_and_budget(
    broken_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """errors.jsonl in manifest order, the vocabulary from the whole train split, and the error
    budget over all rows: a part never fails on its own share of bad rows, the merge does."""
    whole, out = tmp_path / "whole", tmp_path / "parts"
    args = ["build", "--manifest", str(broken_manifest), "--out", str(whole), *BUILD_ARGS]
    assert preprocess_main([*args, "--workers", "1"]) == 1  # 4 of 28 > 1 %
    for index in range(3):
        assert preprocess_main(part_args(broken_manifest, out, 3, index)) == 0
    capsys.readouterr()
    assert preprocess_main(merge_args(out)) == 1
    assert "more than --max-error-rate" in capsys.readouterr().err
    assert_same_dataset(out, whole)
    assert (out / "errors.jsonl").read_bytes() == (whole / "errors.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-shards", "2", "--shard-index", "2"], "--shard-index must be in [0, 1]"),
        (["--num-shards", "0", "--shard-index", "0"], "--num-shards must be >= 1"),
        (["--num-shards", "2", "--shard-index", "-1"], "--shard-index must be in [0, 1]"),
        (["--shard-index", "1"], "--shard-index must be in [0, 0]"),
        (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
    ],
)
def test_bad_sharding_arguments_exit_2_before_any_work(
    synth_raw: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "never"
    args = ["build", "--manifest", str(synth_raw), "--out", str(out), *extra]
    assert preprocess_main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_merge_names_missing_and_mixed_parts_and_writes_nothing(
    synth_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    assert preprocess_main(part_args(synth_raw, out, 3, 0)) == 0
    assert preprocess_main(part_args(synth_raw, out, 3, 2, "--jpeg-quality", "70")) == 0
    assert preprocess_main(part_args(synth_raw, out, 2, 0)) == 0
    before = _tree(out)
    capsys.readouterr()
    assert preprocess_main(merge_args(out)) == 1
    err = capsys.readouterr().err
    assert "3 problem(s); nothing was written" in err
    assert "part 1 of 3: missing" in err
    assert "part 2 of 3 was built differently from part 0 of 3: jpeg_quality 70 != 90" in err
    assert "part 0 of 2 was built differently from part 0 of 3: --num-shards 2 != 3" in err
    assert _tree(out) == before
    assert not (out / DATASET_JSON).exists()

    # An empty folder, and one whose part lost a record, are named too.
    assert preprocess_main(merge_args(tmp_path)) == 1
    assert "no parts under" in capsys.readouterr().err
    good = tmp_path / "good"
    for index in range(2):
        assert preprocess_main(part_args(synth_raw, good, 2, index)) == 0
    next(good.glob(f"{STAGING_DIR}/*/records/*.npz")).unlink()
    capsys.readouterr()
    assert preprocess_main(merge_args(good)) == 1
    assert re.search(r"part [01] of 2: 1 record\(s\) missing", capsys.readouterr().err)


def _count(pattern: str, out: Path) -> int:
    return len(list(out.glob(pattern))) if out.exists() else 0


@pytest.mark.timeout(400)
def test_a_killed_part_reruns_alone_and_changes_nothing_complete(
    synth_raw: Path, synth_built: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    assert preprocess_main(part_args(synth_raw, out, 2, 0)) == 0
    complete = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert _count(f"{STAGING_DIR}/*/records/*.npz", out) == 12

    cmd = [
        sys.executable,
        "-m",
        "preprocess.cli",
        *part_args(synth_raw, out, 2, 1, "--workers", "2"),
    ]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline, killed_after = time.monotonic() + 120, 0
    while time.monotonic() < deadline and proc.poll() is None:
        killed_after = _count(f"{STAGING_DIR}/*/records/*.npz", out) - 12
        if killed_after >= 3:
            os.killpg(proc.pid, signal.SIGKILL)  # the part and its pool workers
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the part finished before it could be killed"
    assert 3 <= killed_after < 12
    assert _count(f"{STAGING_DIR}/*/parts/part-00001-of-00002.json", out) == 0
    assert preprocess_main(merge_args(out)) == 1  # part 1 is not complete

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert int(rerun.stdout.split("reused ")[1].split()[0]) >= killed_after
    for path, (mtime, data) in complete.items():  # part 0's records, frames and marker
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, data), path
    assert preprocess_main(merge_args(out)) == 0
    assert_same_dataset(out, synth_built)
