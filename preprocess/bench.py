"""`inforeg-preprocess bench`: build throughput at several worker counts, printed as a table.

Each run builds the manifest from scratch into a fresh temporary folder (nothing reused), and
reports the processing phase (decode, resample, resize, JPEG: clips/s), the whole build (wall s,
including writing the shards), and how busy the cores were: CPU seconds of the build and all its
worker processes over wall seconds x workers (1.0 = every worker busy the whole time). On a shared
machine the wall-clock figures depend on the other load (the table prints the load average);
clips per CPU-second does not, and times the worker count gives the rate on idle cores.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from preprocess.build import RunSettings, build
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


def _cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children) CPU seconds, user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def bench_build(manifest: Path, options: BuildOptions, workers: int) -> BenchRow:
    """One full build with `workers` processes into a temporary folder (deleted afterwards)."""
    with tempfile.TemporaryDirectory(prefix="inforeg-bench-") as tmp:
        out = Path(tmp) / "data"
        settings = RunSettings(workers=workers, max_error_rate=1.0, progress=False)
        (own0, kids0), wall0 = _cpu_seconds(), time.perf_counter()
        result = build(manifest, out, options, settings, log=lambda _: None)
        wall = time.perf_counter() - wall0
        own1, kids1 = _cpu_seconds()  # pool workers are reaped when the build returns
        parent, cpu = own1 - own0, own1 - own0 + kids1 - kids0
        size = sum(d.bytes for d in result.info.files.values())
        shutil.rmtree(out, ignore_errors=True)
    return BenchRow(
        workers=workers,
        clips=result.processed,
        process_s=result.process_seconds,
        clips_per_s=result.processed / result.process_seconds,
        total_s=wall,
        cpu_s=cpu,
        parent_cpu_s=parent,
        utilisation=cpu / (wall * workers),
        output_bytes=size,
        load_average=os.getloadavg()[0],
    )


def format_table(rows: list[BenchRow]) -> str:
    base = rows[0].clips_per_s
    lines = [
        "workers  clips  process_s  clips/s  speedup  total_s  cpu_s  parent_cpu_s  clips/cpu_s  "
        "cpu/(wall*workers)  MiB  load",
    ]
    for r in rows:
        lines.append(
            f"{r.workers:7d}  {r.clips:5d}  {r.process_s:9.1f}  {r.clips_per_s:7.1f}  "
            f"{r.clips_per_s / base:6.2f}x  {r.total_s:7.1f}  {r.cpu_s:5.1f}  "
            f"{r.parent_cpu_s:12.1f}  {r.clips / r.cpu_s:11.2f}  {r.utilisation:18.2f}  "
            f"{r.output_bytes / 2**20:4.0f}  {r.load_average:4.1f}"
        )
    return "\n".join(lines)


def run_bench(
    manifest: Path, options: BuildOptions, workers: list[int], json_path: Path | None
) -> list[BenchRow]:
    rows = [bench_build(manifest, options, w) for w in workers]
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return rows
