"""scripts/gpu_check.sh on a CPU machine: no GPU -> says so, exit 0; nvidia-smi lists a GPU
that torch cannot see (a CPU torch) -> exit 1. From a checkout, and from a bundle of wheels
(the project's wheel built here, offline) run by the bundle's own copy of the script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts.fake_env import env_with, fake_nvidia_smi

ROOT = Path(__file__).resolve().parents[2]


def run(
    script: Path, tmp: Path, sees_gpu: bool, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    base = env_with(fake_nvidia_smi(tmp, sees_gpu), PYTHON=sys.executable, **env)
    if "PYTHONPATH" not in env:
        base.pop("PYTHONPATH", None)
    return subprocess.run(
        ["bash", str(script)], cwd=cwd, env=base, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("sees_gpu", [False, True])
def test_from_a_checkout(tmp_path: Path, sees_gpu: bool) -> None:
    proc = run(ROOT / "scripts" / "gpu_check.sh", tmp_path, sees_gpu, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    if sees_gpu:
        assert proc.returncode == 1, out
        assert "nvidia-smi lists 1 GPU(s)" in out and "sees no CUDA device" in out
    else:
        assert proc.returncode == 0, out
        assert "no GPU on this machine" in out
    assert f"code from {ROOT}" in out


@pytest.mark.timeout(300)
def test_from_a_bundle_of_wheels(tmp_path: Path) -> None:
    bundle = tmp_path / "gpu-bundle"
    (bundle / "wheels").mkdir(parents=True)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(bundle / "wheels"), str(ROOT)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "PIP_NO_INPUT": "1"},
    )  # fmt: skip
    if build.returncode != 0:
        pytest.skip(f"cannot build the project's wheel offline here: {build.stderr[-300:]}")
    shutil.copy(ROOT / "scripts" / "gpu_check.sh", bundle / "gpu_check.sh")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for sees_gpu, code in ((False, 0), (True, 1)):
        proc = run(bundle / "gpu_check.sh", tmp_path, sees_gpu, cwd=ROOT)  # a checkout as cwd
        out = proc.stdout + proc.stderr
        assert proc.returncode == code, out
        assert "code from /" in out and f"code from {ROOT}" not in out  # the bundle's copy
