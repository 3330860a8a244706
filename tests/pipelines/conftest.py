"""A small real dataset, synthesized and built once per session with every format."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocess.cli import main as preprocess_main


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 clips of 160x120 at 10 fps for 2 s (6 kept frames each), 22.05 kHz audio, text; stored
    frames 96 px on the short side. Splits: train 36, val 4, test 8."""
    root = tmp_path_factory.mktemp("pipelines")
    raw, out = root / "raw", root / "ds"
    synth = ["synth", "--out", str(raw), "--samples", "48", "--classes", "4", "--seed", "0"]
    synth += ["--width", "160", "--height", "120", "--seconds", "2", "--video-snr", "6"]
    assert preprocess_main([*synth, "--workers", "2"]) == 0
    build = ["build", "--manifest", str(raw / "manifest.csv"), "--out", str(out)]
    build += ["--formats", "ffcv,dali,frames", "--frame-size", "96", "--workers", "2", "--quiet"]
    assert preprocess_main(build) == 0
    return out
