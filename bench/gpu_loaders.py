"""GPU check, full nodes only: DALI's nvJPEG decoding and throughput, FFCV feeding the device
stage, and the project's gpu-marked tests.

DALI and FFCV are not in the bundle for offline nodes (DALI alone is ~0.5 GB, FFCV is built
against system libraries): where either cannot be imported its checks say "not run". They need
a synthetic dataset built with `inforeg-preprocess` (PyAV), made once per run in
``$INFOREG_GPU_CHECK_DATA`` (default: a folder under the system's temp dir) and reused by every
check of the run. The DALI throughput is timed inside one long epoch (3,072 clips, batches after
the first 4 of the epoch), so neither a pipeline build nor an epoch boundary is in the figure.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

NOT_RUN, PASS, FAIL = "not run", "PASS", "FAIL"
CLIPS, WARM_BATCHES, BATCH = 3072, 4, 64


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def data_dir() -> Path:
    """The run's dataset folder (built on first use; a build that fails raises)."""
    default = Path(tempfile.gettempdir()) / "inforeg-gpu-check-data"
    root = Path(os.environ.get("INFOREG_GPU_CHECK_DATA") or default)
    data = root / "shards"
    if (data / "dataset.json").is_file():
        return data
    cores = str(os.cpu_count() or 4)
    cli = [sys.executable, "-m", "preprocess.cli"]
    synth = [
        "synth",
        "--out",
        str(root / "raw"),
        "--samples",
        str(CLIPS),
        "--classes",
        "6",
        "--seed",
        "0",
        "--width",
        "320",
        "--height",
        "240",
        "--seconds",
        "1.5",
        "--fps",
        "30",
        "--val-fraction",
        "0.0",
        "--test-fraction",
        "0.0625",
        "--workers",
        cores,
    ]
    build = [
        "build",
        "--manifest",
        str(root / "raw" / "manifest.csv"),
        "--out",
        str(data),
        "--formats",
        "dali,ffcv",
        "--shard-size",
        "256",
        "--workers",
        cores,
        "--quiet",
    ]
    for args in (synth, build):
        subprocess.run([*cli, *args], check=True, timeout=600)
    return data


def _absent(*modules: str) -> str | None:
    missing = [m for m in modules if not installed(m)]
    if missing:
        return f"{', '.join(missing)} not installed (not in the offline bundle)"
    return None


def check_dali_decode() -> tuple[str, str]:
    why = _absent("nvidia.dali", "av")
    if why:
        return NOT_RUN, why
    from pipelines.contract import LoaderSpec
    from pipelines.dali import DaliLoader

    data = data_dir()

    def epoch(device: str, train: bool) -> list[dict[str, Any]]:
        spec = LoaderSpec(
            pipeline="dali",
            data_dir=data,
            split="test",
            train=train,
            batch_size=16,
            workers=4,
            device=device,
            finish=False,
            seed=5,
        )
        loader = DaliLoader(spec, whole_frame=True)  # the CPU decodes whole frames too
        return [{k: v.cpu() for k, v in b.items()} for b in loader]

    lines, ok = [], True
    for train in (False, True):
        cpu, gpu = epoch("cpu", train), epoch("cuda", train)
        same = len(cpu) == len(gpu) and all(
            torch.equal(x["index"], y["index"]) for x, y in zip(cpu, gpu, strict=True)
        )
        d = torch.cat([(x["video"].float() - y["video"].float()).abs().flatten()
                       for x, y in zip(cpu, gpu, strict=True)])  # fmt: skip
        # nvJPEG's IDCT and chroma upsampling vs libjpeg-turbo, CV-CUDA's bilinear vs OpenCV's:
        # a few 8-bit levels; a wrong crop or flip gives tens
        ok &= same and d.mean().item() < 1.5 and d.max().item() <= 24
        lines.append(f"{'train' if train else 'eval'}: same samples {same}, |GPU - CPU| mean "
                     f"{d.mean():.2f} max {d.max():.0f}")  # fmt: skip
    return (PASS if ok else FAIL), "; ".join(lines) + " (8-bit levels; limits 1.5 mean, 24 max)"


def epoch_rate(device: str, workers: int) -> tuple[float, int]:
    """(samples/s, timed batches) of DALI's full contract within one epoch of the train split,
    after its first WARM_BATCHES batches (pipeline built and warm)."""
    from pipelines.contract import LoaderSpec
    from pipelines.dali import DaliLoader

    spec = LoaderSpec(
        pipeline="dali",
        data_dir=data_dir(),
        split="train",
        train=True,
        batch_size=BATCH,
        workers=workers,
        device=device,
    )
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    samples = batches = 0
    start = 0.0
    for i, batch in enumerate(DaliLoader(spec)):
        if i == WARM_BATCHES - 1:
            sync()
            start = time.perf_counter()
        elif i >= WARM_BATCHES:
            samples += batch["index"].numel()
            batches += 1
    sync()
    return samples / (time.perf_counter() - start), batches


def check_dali_throughput() -> tuple[str, str]:
    why = _absent("nvidia.dali", "av")
    if why:
        return NOT_RUN, why
    workers = 8
    (gpu, n), (cpu, _) = epoch_rate("cuda", workers), epoch_rate("cpu", workers)
    return (PASS if gpu > cpu else FAIL), (
        f"DALI GPU {gpu:,.0f} vs CPU {cpu:,.0f} samples/s ({gpu / cpu:.1f}x) over {n} batches "
        f"of {BATCH} in one epoch, {workers} threads, full contract on the device"
    )


def check_ffcv_device() -> tuple[str, str]:
    why = _absent("ffcv", "av")
    if why:
        return NOT_RUN, why
    import json

    out = Path(tempfile.mkdtemp()) / "ffcv.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.cli",
        "loader",
        "--pipeline",
        "ffcv",
        "--data",
        str(data_dir()),
        "--split",
        "train",
        "--batch-size",
        str(BATCH),
        "--workers",
        "8",
        "--batches",
        "40",
        "--device",
        "cuda",
        "--stage",
        "device",
        "--json",
        str(out),
    ]
    subprocess.run(cmd, check=True, timeout=280, stdout=subprocess.DEVNULL)
    r = json.loads(out.read_text())
    return PASS, (
        f"FFCV -> CUDA device stage: {r['samples_per_s']:,.0f} samples/s, batch p50 "
        f"{r['p50_batch_s'] * 1e3:.1f} ms, p95 {r['p95_batch_s'] * 1e3:.1f} ms (8 threads, "
        f"batch {BATCH})"
    )


def check_pytest_gpu() -> tuple[str, str]:
    root = Path(__file__).resolve().parents[1]
    if not (root / "tests").is_dir():
        return NOT_RUN, "no tests/ beside the code (an installed bundle carries none)"
    if not installed("pytest"):
        return NOT_RUN, "pytest not installed"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=290)
    summary = [x for x in proc.stdout.splitlines() if " passed" in x or " failed" in x or
               "no tests ran" in x or " error" in x]  # fmt: skip
    last = summary[-1] if summary else proc.stdout.strip().splitlines()[-1:]
    if proc.returncode == 5:
        return NOT_RUN, "no gpu-marked tests collected"
    return (PASS if proc.returncode == 0 else FAIL), str(last)
