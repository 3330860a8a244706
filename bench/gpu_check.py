"""The GPU check: every GPU path of the project once, on one CUDA device, as one table.

    python -m bench.gpu_check                 # what scripts/gpu_check.sh runs
    python -m bench.gpu_check --only triton-pass,train-bf16 --json out.json

Runs with a bare node's own ``python3`` (torch with CUDA, Triton, numpy) plus the bundle that
``scripts/gpu_bundle.sh`` makes (this project as a wheel, DeepSpeed and the pure-Python wheels it
needs); the DALI and FFCV checks run only where those are installed and otherwise say
"not run". Each check runs in its own process under a time limit, so a failure or a hang never
hides the others; the whole check is sized for well under 10 minutes on one GPU.

Exit status: 0 when every check that ran passed, or when the machine has no GPU (nvidia-smi
lists none and torch sees none: nothing to check); 1 when a check failed, and when nvidia-smi
lists a GPU that torch cannot use (a CPU build of torch, or a driver too old for its CUDA): a
GPU node must never pass with nothing checked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_TAG = "GPU-CHECK-RESULT "
PASS, FAIL, NOT_RUN = "PASS", "FAIL", "not run"
MIN_LEFT_S = 20  # a check is not started with less of the budget left


@dataclass(frozen=True)
class Result:
    name: str
    status: str  # PASS | FAIL | not run
    figure: str


@dataclass(frozen=True)
class Check:
    name: str
    target: str  # "module:function" returning (status, figure)
    limit_s: int
    what: str  # one line for --list and the README


CHECKS = (
    Check("triton-pass", "bench.gpu_kernel:check_pass", 120,
          "Triton regulator pass equals the reference (InfoReg pull, OGM-GE noise, moments)"),
    Check("triton-bandwidth", "bench.gpu_kernel:check_bandwidth", 90,
          "Triton pass device time vs a device-to-device copy of the same buffer (goal >= 70%)"),
    Check("device-stage", "bench.gpu_stage:check_device_stage", 60,
          "normalisation and log-STFT / log-mel on CUDA equal the CPU within stated tolerances"),
    Check("train-bf16", "bench.gpu_train:check_train_bf16", 150,
          "ResNet-18 audio-video bf16 step with InfoReg: gradients proven regulated, samples/s"),
    Check("zero2-nccl", "bench.gpu_zero:check_zero2", 180,
          "the same step under DeepSpeed ZeRO-2 + bf16, NCCL on one rank"),
    Check("dali-nvjpeg", "bench.gpu_loaders:check_dali_decode", 300,
          "DALI nvJPEG decoding equals the CPU graph (full node only)"),
    Check("dali-throughput", "bench.gpu_loaders:check_dali_throughput", 300,
          "DALI GPU vs CPU samples/s over one long epoch (full node only)"),
    Check("ffcv-device", "bench.gpu_loaders:check_ffcv_device", 300,
          "FFCV with the device stage on CUDA, samples/s (full node only)"),
    Check("pytest-gpu", "bench.gpu_loaders:check_pytest_gpu", 300,
          "the gpu-marked tests (from a checkout with tests/ only)"),
)  # fmt: skip


# ----- the device, before anything else ------------------------------------------------------
def smi_gpus(run: Callable[..., Any] = subprocess.run) -> list[str]:
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H200 (UUID: ...)"); [] without a driver."""
    try:
        proc = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (FileNotFoundError, PermissionError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.startswith("GPU ")]


def verdict(gpus: Sequence[str], torch_cuda: bool, torch_desc: str) -> tuple[str, int]:
    """(message, exit code) when nothing can be checked; ("", -1) when the checks should run.

    `gpus`: what nvidia-smi lists; `torch_cuda`: torch.cuda.is_available(); `torch_desc`: torch's
    version and build for the message."""
    if torch_cuda:
        return "", -1
    if gpus:
        return (
            f"FAIL: nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0]}) but {torch_desc} sees no CUDA "
            "device: a CPU build of torch, or a driver older than its CUDA. Install the CUDA "
            "build (scripts/setup.sh does where nvidia-smi sees a GPU) and run this again.",
            1,
        )
    return f"no GPU on this machine (nvidia-smi lists none; {torch_desc}): nothing to check", 0


def torch_state() -> tuple[bool, str]:
    """(torch.cuda.is_available(), a description of torch's build); (False, why) if no torch."""
    try:
        import torch
    except ImportError as e:
        return False, f"torch cannot be imported ({e})"
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
    return torch.cuda.is_available(), f"torch {torch.__version__}, {build}"


# ----- running the checks -------------------------------------------------------------------
def run_child(check: Check, env: dict[str, str], log_dir: Path, limit_s: float = 0) -> Result:
    """`check` in its own process under its time limit (or `limit_s` where that is sooner and
    > 0); its last result line is the result."""
    log = log_dir / f"{check.name}.log"
    cmd = [sys.executable, "-m", "bench.gpu_check", "--run", check.target]
    limit = min(check.limit_s, limit_s) if limit_s > 0 else check.limit_s
    try:
        with log.open("w") as f:
            proc = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=limit, check=False
            )
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        rc = None
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.startswith(RESULT_TAG)]
    if rc is None:
        return Result(check.name, FAIL, f"timed out after {limit:.0f} s (log: {log})")
    if not lines:
        tail = " ".join(log.read_text(errors="replace").splitlines()[-3:])[-200:]
        return Result(check.name, FAIL, f"exit {rc}, no result: {tail} (log: {log})")
    payload = json.loads(lines[-1][len(RESULT_TAG) :])
    status, figure = payload["status"], payload["figure"]
    if rc != 0 and status == PASS:
        status, figure = FAIL, f"{figure}; but exit {rc}"
    return Result(check.name, status, figure)


def run_one(target: str) -> int:
    """The child side: run the check function `target` ("module:function"), print its result."""
    import importlib
    import traceback

    module_name, func_name = target.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        status, figure = func()
    except Exception as e:  # the check's own failure is its result, named
        traceback.print_exc()
        status, figure = FAIL, f"{type(e).__name__}: {e}"[:300]
    print(RESULT_TAG + json.dumps({"status": status, "figure": figure}), flush=True)
    return 0 if status != FAIL else 1


def run_checks(
    checks: Sequence[Check], env: dict[str, str], logs: Path, budget: float,
    min_left: float = MIN_LEFT_S,
) -> list[Result]:  # fmt: skip
    """Each check in turn, cut at what is left of `budget` seconds; once less than `min_left`
    is left, the rest are "not run". Prints a line per check as it ends."""
    results: list[Result] = []
    start = time.monotonic()
    for check in checks:
        t0 = time.monotonic()
        left = budget - (t0 - start)
        if left < min_left:
            result = Result(check.name, NOT_RUN, f"the {budget:.0f} s budget is spent")
        else:
            result = run_child(check, env, logs, limit_s=left)
        results.append(result)
        took = time.monotonic() - t0
        print(f"  {result.name:<18} {result.status:<7} ({took:.0f} s) {result.figure}", flush=True)
    return results


def table(results: Sequence[Result]) -> str:
    """The one table: check, status, figure (long figures wrap under the figure column)."""
    width = max([len("CHECK"), *(len(r.name) for r in results)])
    lines = [f"{'CHECK':<{width}}  {'STATUS':<7}  FIGURE", "-" * 100]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.status:<7}  {r.figure}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated check names (default: all)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--logs", type=Path, default=None, help="folder for each check's log")
    p.add_argument(
        "--budget",
        type=float,
        default=570,
        help="seconds for all checks together (default 570: the bare-node checks in 10 min); "
        "a check is cut at what is left, and later ones are not run once it is spent",
    )
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)  # the child side
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run is not None:
        return run_one(args.run)
    if args.list:
        for c in CHECKS:
            print(f"{c.name:<18} {c.limit_s:>4} s  {c.what}")
        return 0
    chosen = [c for c in CHECKS if not args.only or c.name in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - {c.name for c in CHECKS}
    if unknown:
        print(f"gpu check: unknown check(s) {sorted(unknown)}; --list names them")
        return 2
    print(f"gpu check: the project's code from {Path(__file__).resolve().parents[1]}")
    cuda, desc = torch_state()
    message, code = verdict(smi_gpus(), cuda, desc)
    if code >= 0:
        print(f"gpu check: {message}")
        return code
    logs = args.logs or Path(os.environ.get("TMPDIR", "/tmp")) / f"inforeg-gpu-check-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    print(f"gpu check: {desc}; {len(chosen)} check(s), logs in {logs}", flush=True)
    results = run_checks(chosen, env, logs, args.budget)
    print(f"\n{table(results)}\n(total {time.monotonic() - start:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2) + "\n")
    return 1 if any(r.status == FAIL for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
