"""The GPU check's orchestration on a CPU machine: the device verdict, the table, every check
resolvable, and the CLI's exit status with no GPU and with a GPU torch cannot use."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from bench.gpu_check import (
    CHECKS,
    FAIL,
    NOT_RUN,
    PASS,
    Check,
    Result,
    run_checks,
    run_child,
    smi_gpus,
    table,
    verdict,
)
from tests.scripts.fake_env import env_with, fake_nvidia_smi

ROOT = Path(__file__).resolve().parents[2]
H200 = "GPU 0: NVIDIA H200 (UUID: GPU-1234)"


def test_verdict_runs_only_where_torch_sees_the_gpu() -> None:
    assert verdict([H200], True, "torch 2.11.0+cu130, CUDA 13.0") == ("", -1)
    message, code = verdict([], False, "torch 2.13.0+cpu, a CPU build")
    assert code == 0 and message.startswith("no GPU")
    message, code = verdict([H200], False, "torch 2.13.0+cpu, a CPU build")
    assert code == 1 and message.startswith("FAIL") and "NVIDIA H200" in message
    assert "scripts/setup.sh" in message


def test_smi_gpus_reads_the_listing_and_survives_no_driver() -> None:
    listing = f"{H200}\nGPU 1: NVIDIA H200 (UUID: GPU-5678)\n"
    fake = lambda *a, **k: SimpleNamespace(stdout=listing, returncode=0)  # noqa: E731
    assert smi_gpus(fake) == [H200, "GPU 1: NVIDIA H200 (UUID: GPU-5678)"]
    none = lambda *a, **k: SimpleNamespace(stdout="No devices were found\n", returncode=6)  # noqa: E731
    assert smi_gpus(none) == []

    def missing(*a: object, **k: object) -> None:
        raise FileNotFoundError("nvidia-smi")

    assert smi_gpus(missing) == []


def test_every_check_names_a_function_and_the_limits_fit_ten_minutes() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    for check in CHECKS:
        module, func = check.target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), check.target
    bare = [c for c in CHECKS if c.name.split("-")[0] in ("triton", "device", "train", "zero2")]
    assert len(bare) == 5 and sum(c.limit_s for c in bare) <= 600  # limits, not expectations


def test_the_table_has_one_line_per_check() -> None:
    rows = [Result("triton-pass", PASS, "ok"), Result("dali-nvjpeg", "not run", "no DALI"),
            Result("zero2-nccl", FAIL, "timed out")]  # fmt: skip
    lines = table(rows).splitlines()
    assert lines[0].split()[:3] == ["CHECK", "STATUS", "FIGURE"]
    assert [x.split()[0] for x in lines[2:]] == ["triton-pass", "dali-nvjpeg", "zero2-nccl"]
    assert "not run" in lines[3]


def _cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_cpu_machine_says_no_gpu_and_exits_0(tmp_path: Path) -> None:
    proc = _cli(env_with(fake_nvidia_smi(tmp_path, sees_gpu=False), PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no GPU on this machine" in proc.stdout


def test_a_gpu_that_torch_cannot_see_fails(tmp_path: Path) -> None:
    proc = _cli(env_with(fake_nvidia_smi(tmp_path, sees_gpu=True), PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "nvidia-smi lists 1 GPU(s)" in proc.stdout and "sees no CUDA device" in proc.stdout


def test_each_check_runs_in_its_own_process_under_its_limit(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fake = "tests.bench.fake_checks"
    got = {
        name: run_child(Check(name, f"{fake}:{name}", limit, ""), env, tmp_path)
        for name, limit in (("passes", 60), ("raises", 60), ("hangs", 5), ("passes_then_dies", 60))
    }
    assert (got["passes"].status, got["passes"].figure) == (PASS, "42 things/s")
    assert (
        got["raises"].status == FAIL
        and "RuntimeError: the device fell over" in got["raises"].figure
    )
    assert got["hangs"].status == FAIL and "timed out after 5 s" in got["hangs"].figure
    assert got["passes_then_dies"].status == FAIL and "exit 3" in got["passes_then_dies"].figure
    assert (tmp_path / "raises.log").read_text().count("Traceback") == 1


def test_a_spent_budget_cuts_a_check_and_skips_the_rest(tmp_path: Path) -> None:
    fake = "tests.bench.fake_checks"
    checks = [Check(n, f"{fake}:{n}", 60, "") for n in ("passes", "hangs", "raises")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    got = run_checks(checks, env, tmp_path, budget=8, min_left=1)
    assert [r.status for r in got] == [PASS, FAIL, NOT_RUN]
    assert "timed out after" in got[1].figure and "budget is spent" in got[2].figure
