"""The ZeRO-2 check: its DeepSpeed config is the shipped fragments' merge, and its whole path
(the trainer's glue, the hook, the proof) runs on CPU with gloo on one rank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_zero import ds_config
from launch.zero import deepspeed_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_config_is_the_shipped_zero2_and_bf16_fragments() -> None:
    frags = [str(ROOT / "deepspeed_configs" / f) for f in ("zero2.json", "bf16.json")]
    assert ds_config(64, bf16=True) == deepspeed_config(frags, micro_batch=64)
    assert ds_config(8, bf16=False) == deepspeed_config(frags[:1], micro_batch=8)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_zero2_step_is_proved_regulated_on_cpu_with_gloo() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.zero_cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PROVED" in proc.stdout and "the others bit-identical" in proc.stdout
