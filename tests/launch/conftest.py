"""A tiny built synthetic dataset and helpers to launch the trainer as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from preprocess.cli import main as preprocess
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 samples, 4 classes, 32 px, 1 s audio, in every format."""
    root = tmp_path_factory.mktemp("tiny")
    synth = ["synth", "--out", str(root / "raw"), "--samples", "48", "--classes", "4"]
    synth += ["--width", "32", "--height", "32", "--seconds", "1", "--workers", "1"]
    assert preprocess(synth) == 0
    build = [
        "build",
        "--manifest",
        str(root / "raw" / "manifest.csv"),
        "--out",
        str(root / "shards"),
    ]
    build += ["--formats", "ffcv,dali,frames", "--frame-size", "32", "--audio-seconds", "1"]
    build += ["--workers", "1"]
    assert preprocess(build) == 0
    return root / "shards"


def train_args(shards: Path, out: Path, *overrides: str) -> list[str]:
    """The trainer's arguments for the tiny set: small model, 32 px, batch 8."""
    return [
        "--config",
        str(ROOT / "configs" / "synthetic.yaml"),
        f"data.dir={shards}",
        "data.size=32",
        "data.batch_size=8",
        f"run.out_dir={out}",
        "run.progress=false",
        "run.log_every=2",
        *overrides,
    ]


def run_deepspeed(
    args: Sequence[str], nproc: int = 2, zero: str = "zero0", timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`deepspeed --num_gpus nproc launch/train.py`; `zero`: fragment names, e.g. "zero2,bf16"."""
    fragments = ",".join(str(ROOT / "deepspeed_configs" / f"{z}.json") for z in zero.split(","))
    port = free_port()
    cmd = [str(BIN / "deepspeed"), "--num_gpus", str(nproc), "--master_port", str(port)]
    cmd += [str(ROOT / "launch" / "train.py"), "--deepspeed_config", fragments, *args]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=clean_env()
    )
    if proc.returncode == 0:
        leaked = sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
        assert not leaked, f"a finished run left its all-reduce buffers in /dev/shm: {leaked}"
    return proc


def clean_env() -> dict[str, str]:
    """The test process's environment without launcher variables (a launcher sets its own)."""
    drop = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"}
    return {k: v for k, v in os.environ.items() if k not in drop}
