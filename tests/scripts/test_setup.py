"""scripts/setup.sh installs the CUDA torch wherever a driver sees a GPU, whatever an earlier
set-up left (a +cpu torch of the pinned version, a stamp written without a GPU).

Runs the real script against a fake venv, pip and nvidia-smi (tests/scripts/fake_env.py):
nothing is downloaded or installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.scripts.fake_env import env_with, fake_nvidia_smi, fake_venv

ROOT = Path(__file__).resolve().parents[2]
APT = ("pkg-config", "libturbojpeg0-dev", "libopencv-dev", "build-essential", "python3-dev",
       "python3-venv")  # fmt: skip
TORCH = "2.13.0"


def _apt_ready() -> bool:
    for pkg in APT:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        )
        if "install ok installed" not in proc.stdout:
            return False
    return True


def setup(venv: Path, smi: Path | None) -> subprocess.CompletedProcess[str]:
    env = env_with(smi, VENV=str(venv), TORCH_CPU_INDEX_URL="file:///nonexistent/cpu-index")
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def torch_of(venv: Path) -> str:
    return (venv / "site" / "torch" / "__init__.py").read_text()


@pytest.fixture
def no_real_gpu() -> None:
    if not _apt_ready():
        pytest.skip("the set-up's Debian packages are not installed here (it would apt-get)")
    if subprocess.run(["sh", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0:
        pytest.skip("a real nvidia-smi is on PATH")


@pytest.mark.usefixtures("no_real_gpu")
def test_a_gpu_machine_replaces_the_cpu_torch_an_earlier_setup_left(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, TORCH)  # 2.13.0+cpu, as a set-up without a driver leaves it
    first = setup(venv, None)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "+cpu" in torch_of(venv)
    assert "torch==" not in (venv / "bin" / "pip.log").read_text()  # already the right build
    # the driver becomes visible (or the .venv is shared with a GPU node): not up to date
    smi = fake_nvidia_smi(tmp_path, sees_gpu=True)
    second = setup(venv, smi)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "up to date" not in second.stdout
    log = (venv / "bin" / "pip.log").read_text().splitlines()
    assert any(line.startswith("uninstall") and "torch" in line for line in log), log
    cuda_installs = [x for x in log if f"torch=={TORCH}" in x and "whl/cu130" in x]
    assert cuda_installs, log
    assert "+cu130" in torch_of(venv)
    third = setup(venv, smi)
    assert third.returncode == 0 and "up to date" in third.stdout


@pytest.mark.usefixtures("no_real_gpu")
def test_a_driver_without_a_gpu_keeps_the_cpu_build(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, TORCH)
    proc = setup(venv, fake_nvidia_smi(tmp_path, sees_gpu=False))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "+cpu" in torch_of(venv)


@pytest.mark.usefixtures("no_real_gpu")
def test_a_gpu_machine_refuses_an_index_that_serves_a_cpu_build(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path, None)
    env_index = "https://mirror.example/whl/cpu"  # the fake pip installs a +cpu build from it
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=env_with(fake_nvidia_smi(tmp_path, True), VENV=str(venv), TORCH_INDEX_URL=env_index),
    )  # fmt: skip
    assert proc.returncode != 0
    assert "not a CUDA build" in proc.stderr
