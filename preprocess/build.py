"""`inforeg-preprocess build`: a manifest -> the dataset folder, in parallel, resumable, checked.

Two phases; the parent only schedules and counts:

1. the per-sample stage (`preprocess.stage`): each row is decoded, transformed and written as a
   record in the staging area (`DIR/.staging/<key>/records/`), or as its errors; a record already
   there (and readable) is kept, so a re-run after a kill redoes only what was missing. It runs on
   the local process pool or, with `--executor ray`, as Ray tasks.
2. assembly (`preprocess.assemble`, planned by `preprocess.plan`): per split, the good samples in
   manifest order get their `index`; the FFCV file, the DALI shards and the frames index are
   written atomically from the records; `dataset.json` last.

Killing the build at any point and running it again gives the same samples (the outputs are
deterministic). A sharded build (`preprocess.parts`) runs phase 1 on a part of the rows per machine
and `merge` runs phase 2 once, with the same code.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preprocess.assemble import assemble
from preprocess.errors import BuildError
from preprocess.manifest import ManifestRow, read_manifest
from preprocess.plan import BuildPlan
from preprocess.schema import (
    DATASET_JSON,
    ERRORS_JSONL,
    FORMATS,
    LOCK_FILE,
    STAGING_DIR,
    VOCAB_TXT,
    BuildOptions,
    DatasetInfo,
    load_dataset_info,
)
from preprocess.stage import EXECUTORS, Summary, local_pool, progress_bar, run_stage

__all__ = ["BuildError", "BuildResult", "RunSettings", "build", "summary_text"]


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a build runs; none of it changes the bytes written."""

    workers: int = os.cpu_count() or 1
    """Local processes (and the CPUs of a local Ray cluster)."""
    max_error_rate: float = 0.01
    overwrite: bool = False
    keep_staging: bool = False
    progress: bool = True
    executor: str = "local"
    """`local` (a process pool) or `ray` (Ray tasks) for the per-sample stage."""
    ray_address: str | None = None
    """A Ray cluster to join (None: a local one of `workers` CPUs, or the connected one)."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(f"max_error_rate must be in [0, 1], got {self.max_error_rate}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.ray_address and self.executor != "ray":
            raise ValueError("--ray-address needs --executor ray")


def process_rows(
    plan: BuildPlan, rows: Sequence[ManifestRow], settings: RunSettings, pool: Any
) -> dict[str, Summary]:
    """The per-sample stage over `rows` on the settings' executor, with its progress bar: each
    row's summary by id (a whole build and a part alike)."""
    with progress_bar(settings.progress, len(rows), "process", "clip") as bar:
        return run_stage(
            plan.job(), rows, settings.executor, pool, bar, settings.ray_address, settings.workers
        )


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    info: DatasetInfo
    total: int
    bad: int
    error_rate: float
    exceeded: bool
    processed: int
    """Samples processed by this run (the rest were reused from the staging area)."""
    process_seconds: float
    seconds: float


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """One writer of `what` at a time (an advisory lock on `path`, released if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(f"{path.parent}: another run is writing {what}") from None
        yield


def _locked(out: Path) -> AbstractContextManager[None]:
    return locked(out / LOCK_FILE, "this folder")


def prepare_folder(out: Path, config: str, overwrite: bool) -> DatasetInfo | None:
    """Check the folder may be written; return the existing dataset.json if it has this config."""
    if (out / DATASET_JSON).exists():
        try:
            existing = load_dataset_info(out)
        except ValueError:
            existing = None
        if existing is not None and existing.config_sha256 == config:
            return existing
        if not overwrite:
            raise BuildError(
                f"{out} holds a dataset built from another manifest or other options; "
                "pass --overwrite to replace it, or choose another --out"
            )
    elif not (out / STAGING_DIR).exists():
        foreign = [n for n in (*FORMATS, ERRORS_JSONL, VOCAB_TXT) if (out / n).exists()]
        if foreign and not overwrite:
            raise BuildError(
                f"{out} has {', '.join(foreign)} but no dataset.json or staging area of this "
                "tool; pass --overwrite to replace them, or choose another --out"
            )
    if overwrite:
        for name in (DATASET_JSON, ERRORS_JSONL, VOCAB_TXT):
            (out / name).unlink(missing_ok=True)
        for name in FORMATS:
            shutil.rmtree(out / name, ignore_errors=True)
    return None


def up_to_date(
    plan: BuildPlan,
    existing: DatasetInfo,
    settings: RunSettings,
    started: float,
    log: Callable[[str], None],
) -> BuildResult | None:
    """The result of a folder already built from this plan when it verifies, else None."""
    from preprocess.verify import verify

    problems = verify(plan.out, workers=settings.workers)
    if problems:
        log(f"build: {plan.out} fails verification ({len(problems)} problem(s)); rebuilding")
        return None
    total = len(plan.manifest.rows)
    bad = total - sum(s.samples for s in existing.splits.values())
    log(f"build: {plan.out} is up to date and verified ({total - bad} samples)")
    return make_result(existing, total, bad, 0, 0.0, started, settings)


def build(
    manifest_path: str | Path,
    out: str | Path,
    options: BuildOptions,
    settings: RunSettings,
    log: Callable[[str], None] = print,
) -> BuildResult:
    """Build (or finish, or confirm) the dataset folder `out` from a manifest."""
    started = time.perf_counter()
    plan = BuildPlan.create(read_manifest(manifest_path), Path(out).resolve(), options)
    out = plan.out
    with _locked(out):
        existing = prepare_folder(out, plan.config, settings.overwrite)
        if existing is not None:
            done = up_to_date(plan, existing, settings, started, log)
            if done is not None:
                return done
        # From here until the end dataset.json is absent: its presence means "complete".
        (out / DATASET_JSON).unlink(missing_ok=True)
        for other in (out / STAGING_DIR).glob("*"):
            if other != plan.stage:
                shutil.rmtree(other, ignore_errors=True)  # records of other options: stale
        plan.records.mkdir(parents=True, exist_ok=True)

        with local_pool(settings.workers) as pool:
            t0 = time.perf_counter()
            rows = plan.manifest.rows
            summaries = process_rows(plan, rows, settings, pool)
            process_seconds = time.perf_counter() - t0
            processed = sum(1 for s in summaries.values() if not s.reused)
            info = assemble(plan, summaries, pool, settings.progress)
        total = len(rows)
        bad = sum(1 for s in summaries.values() if s.errors)
        if not settings.keep_staging:
            shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
        result = make_result(info, total, bad, processed, process_seconds, started, settings)
        log(summary_text(out, result))
        return result


def make_result(
    info: DatasetInfo,
    total: int,
    bad: int,
    processed: int,
    process_seconds: float,
    started: float,
    settings: RunSettings,
) -> BuildResult:
    rate = bad / total
    return BuildResult(
        info=info,
        total=total,
        bad=bad,
        error_rate=rate,
        exceeded=rate > settings.max_error_rate,
        processed=processed,
        process_seconds=process_seconds,
        seconds=time.perf_counter() - started,
    )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def summary_text(out: Path, result: BuildResult) -> str:
    """The final summary: samples per split, errors, throughput, bytes per format."""
    info = result.info
    lines = [f"build: {out}"]
    for split, s in info.splits.items():
        lines.append(
            f"  {split:5s} {s.samples:7d} samples written, {s.errors} skipped, {s.frames} frames"
        )
    rate = result.processed / result.process_seconds if result.process_seconds > 0 else 0.0
    lines.append(
        f"  errors: {result.bad} of {result.total} samples ({100 * result.error_rate:.2f}%), "
        f"see {ERRORS_JSONL}"
    )
    lines.append(
        f"  processed {result.processed} clips in {result.process_seconds:.1f} s "
        f"({rate:.1f} clips/s), reused {result.total - result.processed}; "
        f"total {result.seconds:.1f} s"
    )
    sizes: dict[str, int] = {}
    for rel, d in info.files.items():
        top = rel.split("/", 1)[0] if "/" in rel else "metadata"
        sizes[top] = sizes.get(top, 0) + d.bytes
    lines.append("  bytes: " + ", ".join(f"{k} {_human(v)}" for k, v in sorted(sizes.items())))
    return "\n".join(lines)
