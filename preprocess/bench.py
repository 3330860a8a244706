"""`inforeg-preprocess bench`: build throughput per executor and worker count, and a merge's cost.

Each run builds the manifest from scratch into a fresh temporary folder (nothing reused), and
reports the processing phase (decode, resample, resize, JPEG: clips/s), the whole build (wall s,
including writing the shards), and how busy the cores were: CPU seconds of the build and all its
worker processes over wall seconds x workers (1.0 = every worker busy the whole time). On a shared
machine the wall-clock figures depend on the other load (the table prints the load average);
clips per CPU-second does not, and times the worker count gives the rate on idle cores.

`ray` rows start a local Ray cluster of `workers` CPUs first (its start, `start_s`, is not in
`total_s`; its CPU seconds are those of the driver and every process of the cluster, Ray's own
included). `--merge-parts N` also builds the manifest as N parts, one after the other, then merges
them, and compares the merge's wall time with the one-machine build's (and checks the bytes).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from preprocess.build import RunSettings, build
from preprocess.merge import merge
from preprocess.parts import build_part
from preprocess.plan import Sharding
from preprocess.schema import BuildOptions


@dataclass(frozen=True, kw_only=True)
class BenchRow:
    workers: int
    clips: int
    process_s: float
    clips_per_s: float
    total_s: float
    cpu_s: float
    parent_cpu_s: float
    """CPU seconds of the parent process alone (all of it with one worker, which runs inline)."""
    utilisation: float
    output_bytes: int
    load_average: float
    """1-minute load average of the machine when the run ended."""
    executor: str = "local"
    start_s: float = 0.0
    """Seconds to start the executor (a local Ray cluster); not in total_s."""


@dataclass(frozen=True, kw_only=True)
class MergeRow:
    parts: int
    workers: int
    parts_s: float
    """Wall seconds of the N part builds, one after the other."""
    merge_s: float
    build_s: float
    """Wall seconds of the one-machine build of the same manifest (same workers)."""
    identical: bool
    """The merged folder's files hash as the one-machine build's."""
    load_average: float


def _cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children) CPU seconds, user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _tree_cpu_seconds() -> float:
    """CPU seconds of this process and every live descendant (a Ray cluster's processes)."""
    total = 0.0
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


@contextmanager
def _cpu_meter(executor: str) -> Iterator[list[float]]:
    """Yields [cpu_s, parent_cpu_s], filled on leaving: reaped children for the local pool,
    the live process tree for Ray (its workers are not our children)."""
    figures: list[float] = []
    own0, kids0 = _cpu_seconds()
    tree0 = _tree_cpu_seconds()
    yield figures
    own1, kids1 = _cpu_seconds()  # pool workers are reaped when the build returns
    cpu = own1 - own0 + (kids1 - kids0 if executor == "local" else _tree_cpu_seconds() - tree0)
    figures += [cpu, own1 - own0]


@contextmanager
def _executor(executor: str, workers: int) -> Iterator[float]:
    """Starts the executor's cluster (Ray) for the run; yields the seconds it took."""
    if executor != "ray":
        yield 0.0
        return
    from preprocess.ray_exec import ray_session

    t0 = time.perf_counter()
    with ray_session(None, workers) as ray:
        ray.get(ray.remote(lambda: None).remote())  # a worker is up
        yield time.perf_counter() - t0


def bench_build(
    manifest: Path, options: BuildOptions, workers: int, executor: str = "local"
) -> BenchRow:
    """One full build with `workers` processes into a temporary folder (deleted afterwards)."""
    with (
        tempfile.TemporaryDirectory(prefix="inforeg-bench-") as tmp,
        _executor(executor, workers) as start_s,
    ):
        out = Path(tmp) / "data"
        settings = RunSettings(
            workers=workers, max_error_rate=1.0, progress=False, executor=executor
        )
        with _cpu_meter(executor) as cpu:
            wall0 = time.perf_counter()
            result = build(manifest, out, options, settings, log=lambda _: None)
            wall = time.perf_counter() - wall0
        size = sum(d.bytes for d in result.info.files.values())
        shutil.rmtree(out, ignore_errors=True)
    return BenchRow(
        workers=workers,
        clips=result.processed,
        process_s=result.process_seconds,
        clips_per_s=result.processed / result.process_seconds,
        total_s=wall,
        cpu_s=cpu[0],
        parent_cpu_s=cpu[1],
        utilisation=cpu[0] / (wall * workers),
        output_bytes=size,
        load_average=os.getloadavg()[0],
        executor=executor,
        start_s=start_s,
    )


def bench_merge(manifest: Path, options: BuildOptions, parts: int, workers: int) -> MergeRow:
    """The manifest built whole, then as `parts` parts merged: wall times, bytes compared."""
    settings = RunSettings(workers=workers, max_error_rate=1.0, progress=False)
    quiet = lambda _: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="inforeg-bench-") as tmp:
        t0 = time.perf_counter()
        whole = build(manifest, Path(tmp) / "whole", options, settings, log=quiet)
        t1 = time.perf_counter()
        for index in range(parts):
            sharding = Sharding(num_shards=parts, shard_index=index)
            build_part(manifest, Path(tmp) / "parts", options, settings, sharding, log=quiet)
        t2 = time.perf_counter()
        merged = merge(Path(tmp) / "parts", settings, log=quiet)
        t3 = time.perf_counter()
    return MergeRow(
        parts=parts,
        workers=workers,
        parts_s=t2 - t1,
        merge_s=t3 - t2,
        build_s=t1 - t0,
        identical=merged.info.files == whole.info.files,
        load_average=os.getloadavg()[0],
    )


def format_table(rows: list[BenchRow]) -> str:
    base = rows[0].clips_per_s
    lines = [
        "workers  clips  process_s  clips/s  speedup  total_s  cpu_s  parent_cpu_s  clips/cpu_s  "
        "cpu/(wall*workers)  MiB  load  executor  start_s",
    ]
    for r in rows:
        lines.append(
            f"{r.workers:7d}  {r.clips:5d}  {r.process_s:9.1f}  {r.clips_per_s:7.1f}  "
            f"{r.clips_per_s / base:6.2f}x  {r.total_s:7.1f}  {r.cpu_s:5.1f}  "
            f"{r.parent_cpu_s:12.1f}  {r.clips / r.cpu_s:11.2f}  {r.utilisation:18.2f}  "
            f"{r.output_bytes / 2**20:4.0f}  {r.load_average:4.1f}  {r.executor:8s}  "
            f"{r.start_s:7.1f}"
        )
    return "\n".join(lines)


def format_merge(rows: list[MergeRow]) -> str:
    lines = ["parts  workers  build_s  parts_s  merge_s  merge/build  identical  load"]
    for r in rows:
        lines.append(
            f"{r.parts:5d}  {r.workers:7d}  {r.build_s:7.1f}  {r.parts_s:7.1f}  {r.merge_s:7.1f}  "
            f"{r.merge_s / r.build_s:11.2f}  {r.identical!s:9s}  {r.load_average:4.1f}"
        )
    return "\n".join(lines)


def run_bench(
    manifest: Path,
    options: BuildOptions,
    workers: list[int],
    json_path: Path | None,
    executors: tuple[str, ...] = ("local",),
    merge_parts: int = 0,
) -> tuple[list[BenchRow], list[MergeRow]]:
    rows = [bench_build(manifest, options, w, e) for e in executors for w in workers]
    merges = [bench_merge(manifest, options, merge_parts, max(workers))] if merge_parts else []
    if json_path is not None:
        figures = [{"kind": "build", **asdict(r)} for r in rows]
        figures += [{"kind": "merge", **asdict(m)} for m in merges]
        json_path.write_text(json.dumps(figures, indent=1) + "\n")
    return rows, merges
