"""Shared fixtures for the preprocessing tests: one small synthetic raw dataset and its build."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocess.cli import main as preprocess_main

# Small enough to build in seconds on 2 cores, big enough for three splits and several shards;
# a clean video signal (10 dB), so JPEG error stays well below the difference between frames.
SYNTH_ARGS = ["--samples", "24", "--classes", "4", "--seed", "3", "--width", "64", "--height", "48"]
SYNTH_ARGS += ["--seconds", "1.5", "--fps", "10", "--video-snr", "10", "--workers", "2"]
BUILD_ARGS = ["--formats", "ffcv,dali,frames", "--frame-size", "40", "--fps", "4"]
BUILD_ARGS += ["--shard-size", "7", "--text-len", "12", "--workers", "2", "--quiet"]


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
