"""Shared fixtures for the preprocessing tests: one small synthetic raw dataset and its build."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from preprocess.cli import main as preprocess_main
from preprocess.manifest import ManifestRow, read_manifest, write_manifest
from preprocess.schema import load_dataset_info

# Small enough to build in seconds on 2 cores, big enough for three splits and several shards;
# a clean video signal (10 dB), so JPEG error stays well below the difference between frames.
SYNTH_ARGS = ["--samples", "24", "--classes", "4", "--seed", "3", "--width", "64", "--height", "48"]
SYNTH_ARGS += ["--seconds", "1.5", "--fps", "10", "--video-snr", "10", "--workers", "2"]
BUILD_ARGS = ["--formats", "ffcv,dali,frames", "--frame-size", "40", "--fps", "4"]
BUILD_ARGS += ["--shard-size", "7", "--text-len", "12", "--workers", "2", "--quiet"]


def samples_in(out: Path) -> Counter[tuple[str, str, int, int, str, str, str]]:
    """The multiset of samples in a folder's DALI shards: (split, id, label, index, and the
    sha256 of the frames, audio and text bytes)."""
    import hashlib

    info = load_dataset_info(out)
    found: Counter[tuple[str, str, int, int, str, str, str]] = Counter()
    for split, s in info.splits.items():
        if not s.dali:
            continue
        for sample in wds.WebDataset([str(out / rel) for rel in s.dali], shardshuffle=False):
            found[
                (
                    split,
                    sample["id"].decode(),
                    int(np.frombuffer(sample["label"], "<i8")[0]),
                    int(np.frombuffer(sample["index"], "<i8")[0]),
                    hashlib.sha256(sample["frames"]).hexdigest(),
                    hashlib.sha256(sample["audio"]).hexdigest(),
                    hashlib.sha256(sample["text"]).hexdigest(),
                )
            ] += 1
    return found


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic raw dataset (mp4 + wav + text); returns its manifest."""
    out = tmp_path_factory.mktemp("synth_raw")
    assert preprocess_main(["synth", "--out", str(out), *SYNTH_ARGS]) == 0
    return out / "manifest.csv"


@pytest.fixture(scope="session")
def synth_built(synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_raw` built into all three formats; returns the dataset folder."""
    out = tmp_path_factory.mktemp("synth_built") / "data"
    args = ["build", "--manifest", str(synth_raw), "--out", str(out), *BUILD_ARGS]
    assert preprocess_main(args) == 0
    return out


@pytest.fixture(scope="session")
def broken_manifest(synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic manifest plus four bad rows: a truncated mp4, a zero-byte wav, a missing
    file and a garbage "video" (each row's other media are good)."""
    folder = tmp_path_factory.mktemp("broken")
    manifest = read_manifest(synth_raw)
    good = manifest.rows[0]
    assert good.video and good.audio
    media = folder / "bad"
    media.mkdir()
    video = manifest.resolve(good.video).read_bytes()
    (media / "truncated.mp4").write_bytes(video[: len(video) // 2])
    (media / "empty.wav").write_bytes(b"")
    (media / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(20000))

    def moved(cell: str | None) -> str | None:  # the same file, relative to the new manifest
        return None if cell is None else os.path.relpath(manifest.resolve(cell), folder)

    rows = [
        ManifestRow(
            id=r.id,
            split=r.split,
            label=r.label,
            video=moved(r.video),
            audio=moved(r.audio),
            text=r.text,
        )
        for r in manifest.rows
    ]
    good_audio, good_video = rows[0].audio, rows[0].video
    bad = [
        ManifestRow(
            id="bad_truncated",
            split="train",
            label=good.label,
            video="bad/truncated.mp4",
            audio=good_audio,
            text="some words",
        ),
        ManifestRow(
            id="bad_empty_wav",
            split="test",
            label=good.label,
            video=good_video,
            audio="bad/empty.wav",
            text="some words",
        ),
        ManifestRow(
            id="bad_missing",
            split="train",
            label=good.label,
            video="bad/not_there.mp4",
            audio=good_audio,
            text="some words",
        ),
        ManifestRow(
            id="bad_garbage",
            split="val",
            label=good.label,
            video="bad/garbage.mp4",
            audio=good_audio,
            text="some words",
        ),
    ]
    return write_manifest(folder / "manifest.csv", rows[:5] + bad[:2] + rows[5:] + bad[2:])
