"""`inforeg-bench loader`: a loader's throughput, latency and CPU use, and how far it is from the
machine's JPEG-decode ceiling.

    inforeg-bench loader --pipeline ffcv --data DIR --split train --batch-size 64 --workers 2 \\
        --batches 100 [--stage host|device] [--decode-bound] [--json PATH]

Warm-up batches first (FFCV compiles its pipeline on the first batch, DataLoader workers start),
then `--batches` timed batches, crossing epochs as training does (`set_epoch`). `--stage host`
times the uint8/int16 host batches before the device stage (`LoaderSpec.finish=False`); `device`
(default) the full contract on `--device`. CPU use counts this process and its children (the
reference loader's workers). `--decode-bound` decodes the dataset's stored frames on one core with
libjpeg-turbo (FFCV's `imdecode`, as its pipeline does; frames per CPU-second of that thread) and
reports the loader's samples/s as a fraction of cores x that rate / K (no CPU JPEG pipeline can
beat that), and its samples per CPU-second as a fraction of that rate / K (the same comparison,
steadier on a shared machine).

`--host-only` (dali, ffcv) times the pipeline with the JPEG work taken out, host stage: for DALI
the GPU graph's host side (the batch source: order, the contract's parameters, the JPEG slices
read from the shards, PCM and tokens; DALI's executor) with the decode and warp removed (on a GPU
they run on the device); for FFCV its pipeline with the decode and resize skipped. The figure to
read is CPU microseconds per sample and samples per CPU-second (= per core).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from pipelines.registry import PIPELINE_FORMAT, pipeline_entry
from pipelines.spec import LoaderSpec
from preprocess.schema import VIDEO, DatasetInfo, ffcv_file, load_dataset_info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", required=True, help="ffcv, dali or reference")
    parser.add_argument("--data", required=True, type=Path, help="a built dataset folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--eval", action="store_true", help="eval mode (default: train mode)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batches", type=int, default=100, help="timed batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--frames", type=int, default=3, help="K frames per sample")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stage", choices=("host", "device"), default="device")
    parser.add_argument("--order", default=None, help="random, quasi_random or sequential")
    parser.add_argument("--no-os-cache", action="store_true", help="FFCV: process page cache")
    parser.add_argument("--no-verify", action="store_true", help="skip sha256 checks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--host-only",
        action="store_true",
        help="dali, ffcv: the pipeline's host work without JPEG decode and resize (implies "
        "--stage host)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="dali: also time the graph cut before the decode and before the warp (CPU per "
        "sample of each step)",
    )
    parser.add_argument(
        "--hw-decoder-load",
        type=float,
        default=None,
        help="dali on cuda: nvJPEG hardware decoder's share of the JPEG data (DALI's default "
        "0.65); the rest is Huffman-decoded on host threads",
    )
    parser.add_argument("--decode-bound", action="store_true")
    parser.add_argument("--decode-seconds", type=float, default=3.0, help="decode-bound timing")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


@dataclass(frozen=True, kw_only=True)
class Timing:
    batches: int
    samples: int
    wall_s: float
    latencies_s: np.ndarray
    cpu_s: float
    out_bytes: int


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of this process and its live children (DataLoader workers)."""
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def time_loader(loader: Any, warmup: int, batches: int) -> Timing:
    """Iterate `warmup` then `batches` batches (new epochs as needed); time the latter."""
    proc = psutil.Process()
    epoch = 0

    def stream() -> Any:
        nonlocal epoch
        while True:
            yielded = False
            for batch in loader:
                yielded = True
                yield batch
            if not yielded:
                raise ValueError("the loader yields no batch")
            epoch += 1
            loader.set_epoch(epoch)

    it = stream()
    for _ in range(warmup):
        next(it)
    latencies = np.zeros(batches)
    samples = out_bytes = 0
    cpu0, start = _cpu_seconds(proc), time.perf_counter()
    last = start
    for i in range(batches):
        batch = next(it)
        now = time.perf_counter()
        latencies[i], last = now - last, now
        samples += int(batch["index"].shape[0])
        out_bytes += sum(t.numel() * t.element_size() for t in batch.values())
    wall = time.perf_counter() - start
    cpu = _cpu_seconds(proc) - cpu0
    it.close()
    return Timing(
        batches=batches, samples=samples, wall_s=wall, latencies_s=latencies, cpu_s=cpu,
        out_bytes=out_bytes,
    )  # fmt: skip


def stored_frames(
    root: Path, info: DatasetInfo, split: str, limit: int
) -> list[tuple[np.ndarray, int, int]]:
    """Up to `limit` stored JPEG frames of a split with their (height, width), read from its .beton
    (the frames FFCV and DALI decode; the DALI tars hold the same bytes)."""
    from ffcv.reader import Reader

    from preprocess.ffcv_fields import CUSTOM_FIELDS, unpack_frames

    rel = info.splits[split].ffcv
    if rel is None:
        raise ValueError(f"{root}: --decode-bound reads the stored frames from {ffcv_file(split)}")
    path = root / rel
    reader = Reader(str(path), CUSTOM_FIELDS)
    meta = reader.metadata[f"f{list(reader.handlers).index(VIDEO)}"]
    out: list[tuple[np.ndarray, int, int]] = []
    with path.open("rb") as f:
        for row in meta:
            f.seek(int(row["ptr"]))
            blob = np.frombuffer(f.read(int(row["size"])), np.uint8)
            for jpeg in unpack_frames(blob):
                out.append((np.frombuffer(jpeg, np.uint8), int(row["height"]), int(row["width"])))
            if len(out) >= limit:
                return out[:limit]
    return out


def decode_rate(frames: list[tuple[np.ndarray, int, int]], seconds: float) -> float:
    """Frames one core decodes per CPU-second (libjpeg-turbo via FFCV's imdecode, as its
    pipeline), for `seconds` of wall time: CPU time of this thread, so a shared machine's load
    does not lower it."""
    from ffcv.libffcv import imdecode

    buffer = np.empty(max(h * w * 3 for _, h, w in frames), np.uint8)
    done, start, cpu = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - start < seconds:
        for jpeg, h, w in frames:
            if imdecode(jpeg, buffer, h, w, h, w, 0, 0, 1, 1, False, False) != 0:
                raise ValueError("a stored frame does not decode")
            done += 1
    return done / max(time.thread_time() - cpu, 1e-9)


def decode_bound(
    root: Path, info: DatasetInfo, split: str, k: int, seconds: float = 3.0
) -> dict[str, float]:
    """One core's decode rate on the stored frames, and the samples/s ceiling it implies."""
    frames = stored_frames(root, info, split, limit=300)
    if not frames:
        raise ValueError(f"{root}: split {split!r} has no stored frames to decode")
    rate = decode_rate(frames, seconds=seconds)
    cores = len(os.sched_getaffinity(0))
    return {
        "frames_per_s_per_core": rate,
        "cores": cores,
        "bound_samples_per_s": cores * rate / k,
        "frame_height": float(np.mean([h for _, h, _ in frames])),
        "frame_width": float(np.mean([w for _, _, w in frames])),
        "frame_kb": float(np.mean([j.size for j, _, _ in frames]) / 1024),
    }


def stored_mb_per_sample(info: DatasetInfo, pipeline: str, split: str) -> float:
    """Average stored bytes per sample of the format the pipeline reads (MB)."""
    fmt = PIPELINE_FORMAT.get(pipeline, pipeline)
    prefix = f"{fmt}/{split}"
    total = sum(d.bytes for name, d in info.files.items() if name.startswith(prefix))
    return total / max(1, info.splits[split].samples) / 1e6


def build(spec: LoaderSpec, info: DatasetInfo, args: argparse.Namespace) -> Any:
    """The loader the bench times: `build_loader`'s, or the pipeline's host-only variant, or
    DALI's with a hardware decoder share."""
    from pipelines import build_loader

    options: dict[str, Any] = {}
    if args.host_only:
        options["host_only"] = True
    if args.hw_decoder_load is not None:
        options["hw_decoder_load"] = args.hw_decoder_load
    if not options:
        return build_loader(spec, info)
    threads = torch.get_num_threads()
    try:
        return pipeline_entry(spec.pipeline).loader_class()(spec, info, **options)
    finally:
        torch.set_num_threads(threads)


def dali_profile(spec: LoaderSpec, info: DatasetInfo, warmup: int, batches: int) -> dict:
    """CPU microseconds per sample of the DALI graph's steps, from the graph cut before the
    decode, cut before the warp, and whole (host stage): each step's cost is a difference."""
    from pipelines.dali import DaliLoader

    host = replace(spec, finish=False)
    us = {}
    for cut in ("decode", "warp", ""):
        timing = time_loader(DaliLoader(host, info, cut=cut), warmup, batches)
        us[cut or "whole"] = 1e6 * timing.cpu_s / max(timing.samples, 1)
    return {
        "source_us": us["decode"],
        "decode_us": us["warp"] - us["decode"],
        "warp_us": us["whole"] - us["warp"],
        "whole_us": us["whole"],
    }


def run(args: argparse.Namespace) -> int:
    if args.profile and args.pipeline != "dali":
        raise ValueError("--profile: only the dali graph is cut in steps")
    if args.host_only and args.pipeline not in ("dali", "ffcv"):
        raise ValueError(f"--host-only: {args.pipeline} has no decode-free variant (dali, ffcv)")
    if args.hw_decoder_load is not None and args.pipeline != "dali":
        raise ValueError("--hw-decoder-load: only the dali pipeline decodes with nvJPEG")
    info = load_dataset_info(args.data)
    if args.split not in info.splits:
        raise ValueError(f"--split {args.split!r}: {args.data} has {sorted(info.splits)}")
    spec = LoaderSpec(
        pipeline=args.pipeline,
        data_dir=args.data,
        split=args.split,
        train=not args.eval,
        batch_size=args.batch_size,
        frames=args.frames,
        size=args.size,
        workers=args.workers,
        seed=args.seed,
        device=args.device,
        order=args.order,
        os_cache=not args.no_os_cache,
        finish=args.stage == "device" and not args.host_only,
        verify=not args.no_verify,
    )
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    loader = build(spec, info, args)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    timing = time_loader(loader, args.warmup, args.batches)
    total_s = time.perf_counter() - t0
    rate = timing.samples / timing.wall_s
    figures: dict[str, Any] = {
        "pipeline": args.pipeline,
        "data": str(args.data),
        "split": args.split,
        "mode": "eval" if args.eval else "train",
        "stage": "host-only" if args.host_only else args.stage,
        "device": spec.device,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "frames": args.frames,
        "size": args.size,
        "batches": timing.batches,
        "warmup": args.warmup,
        "samples_per_s": rate,
        "in_mb_per_s": rate * stored_mb_per_sample(info, args.pipeline, args.split),
        "out_mb_per_s": timing.out_bytes / timing.wall_s / 1e6,
        "p50_batch_s": float(np.percentile(timing.latencies_s, 50)),
        "p95_batch_s": float(np.percentile(timing.latencies_s, 95)),
        "cpu_cores_used": timing.cpu_s / timing.wall_s,
        "hw_decoder_load": args.hw_decoder_load,
        "samples_per_cpu_s": timing.samples / max(timing.cpu_s, 1e-9),
        "cpu_us_per_sample": 1e6 * timing.cpu_s / max(timing.samples, 1),
        "cpu_count": len(os.sched_getaffinity(0)),
        "build_s": build_s,
        "warmup_s": total_s - timing.wall_s,
        "loadavg_1m_before": load_start,
        "loadavg_1m_after": os.getloadavg()[0],
    }
    if args.profile:
        figures["profile_us_per_sample"] = dali_profile(spec, info, args.warmup, args.batches)
    if args.decode_bound:
        bound = decode_bound(args.data, info, args.split, args.frames, args.decode_seconds)
        figures["decode_bound"] = bound
        figures["fraction_of_decode_bound"] = rate / bound["bound_samples_per_s"]
        per_core = bound["frames_per_s_per_core"] / args.frames  # samples per CPU-s, decode only
        figures["fraction_of_decode_bound_per_cpu_s"] = figures["samples_per_cpu_s"] / per_core
    print(format_table(figures))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


def format_table(f: dict[str, Any]) -> str:
    rows = [
        ("samples/s", f"{f['samples_per_s']:,.1f}"),
        ("stored MB/s read", f"{f['in_mb_per_s']:,.1f}"),
        ("batch MB/s out", f"{f['out_mb_per_s']:,.1f}"),
        ("batch p50", f"{f['p50_batch_s'] * 1e3:,.1f} ms"),
        ("batch p95", f"{f['p95_batch_s'] * 1e3:,.1f} ms"),
        ("CPU", f"{f['cpu_cores_used']:.2f} cores of {f['cpu_count']}"),
        ("samples per CPU-s", f"{f['samples_per_cpu_s']:,.0f}"),
        ("CPU per sample", f"{f['cpu_us_per_sample']:,.0f} us"),
        ("build / warm-up", f"{f['build_s']:.1f} s / {f['warmup_s']:.1f} s"),
        ("load average", f"{f['loadavg_1m_before']:.2f} -> {f['loadavg_1m_after']:.2f}"),
    ]
    if "decode_bound" in f:
        b = f["decode_bound"]
        rows.append(
            (
                "decode bound",
                f"{b['bound_samples_per_s']:,.0f} samples/s = {b['cores']} cores x "
                f"{b['frames_per_s_per_core']:,.0f} frames/s ({b['frame_width']:.0f}x"
                f"{b['frame_height']:.0f}, {b['frame_kb']:.1f} KB) / {f['frames']}",
            )
        )
        rows.append(("of the bound", f"{100 * f['fraction_of_decode_bound']:.0f}%"))
        rows.append(
            (
                "per CPU-s, of the bound",
                f"{100 * f['fraction_of_decode_bound_per_cpu_s']:.0f}% (samples per CPU-s / "
                "(frames decoded per CPU-s / K))",
            )
        )
    if "profile_us_per_sample" in f:
        p = f["profile_us_per_sample"]
        rows.append(
            (
                "CPU per sample by step",
                f"source {p['source_us']:,.0f} us + decode {p['decode_us']:,.0f} us + warp "
                f"{p['warp_us']:,.0f} us = {p['whole_us']:,.0f} us",
            )
        )
    head = (
        f"inforeg-bench loader: {f['pipeline']} on {f['data']} [{f['split']}, {f['mode']}], "
        f"batch {f['batch_size']}, workers {f['workers']}, K={f['frames']} at {f['size']}, "
        f"stage {f['stage']} ({f['device']}), {f['batches']} batches after {f['warmup']}"
    )
    width = max(len(name) for name, _ in rows)
    return "\n".join([head, *(f"  {name:<{width}}  {value}" for name, value in rows)])
