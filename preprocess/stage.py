"""The per-sample stage: manifest rows -> records in the staging area, on an executor.

`process_one` is the one unit of work (a row -> its record, or its errors), idempotent: a record
already there (and readable) is kept, every file appears only complete (temporary name, rename), so
a killed worker's row can be run again anywhere, by the local pool after a kill, by a re-run part
of a scheduler array, or by Ray after a lost worker. The parent keeps one small `Summary` per row.

Executors: `local` (a spawn process pool, inline for one worker) and `ray` (`preprocess.ray_exec`).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from preprocess import records
from preprocess.manifest import ManifestRow
from preprocess.process import ProcessedSample, SampleError, process_row
from preprocess.schema import BuildOptions

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True, kw_only=True)
class ProcessJob:
    """What every worker needs to process a row (picklable, small)."""

    root: Path
    options: BuildOptions
    modalities: tuple[str, ...]
    classes: tuple[str, ...]
    records: Path
    frames_root: Path | None


@dataclass(frozen=True, kw_only=True)
class Summary:
    """What the parent keeps per sample (small: the records stay on disk)."""

    id: str
    errors: tuple[SampleError, ...] = ()
    frames: int = 0
    nbytes: int = 0
    frames_files: dict[str, tuple[str, int]] = field(default_factory=dict)
    reused: bool = False

    def to_json(self) -> dict[str, Any]:
        """The part marker's form (`reused` is how this run got it, not what it is)."""
        return {
            "id": self.id,
            "errors": [asdict(e) for e in self.errors],
            "frames": self.frames,
            "nbytes": self.nbytes,
            "frames_files": {k: list(v) for k, v in sorted(self.frames_files.items())},
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Summary:
        return Summary(
            id=data["id"],
            errors=tuple(SampleError(**e) for e in data["errors"]),
            frames=int(data["frames"]),
            nbytes=int(data["nbytes"]),
            frames_files={k: (str(v[0]), int(v[1])) for k, v in data["frames_files"].items()},
            reused=True,
        )


def _summary_of(sample: ProcessedSample, reused: bool) -> Summary:
    nbytes = sum(len(j) for j in sample.jpegs)
    nbytes += 0 if sample.audio is None else sample.audio.nbytes
    return Summary(
        id=sample.id,
        frames=len(sample.jpegs),
        nbytes=nbytes,
        frames_files=sample.frames_files,
        reused=reused,
    )


def process_one(job: ProcessJob, row: ManifestRow) -> Summary:
    """One row -> its record (kept when already there) -> its summary."""
    existing = records.read_record(job.records, row.id)
    if existing is not None:
        return _summary_of(existing, reused=True)
    result = process_row(row, job.root, job.options, job.modalities, job.classes, job.frames_root)
    if isinstance(result, list):  # processed again by a resumed build (its input may be mended)
        return Summary(id=row.id, errors=tuple(result))
    records.write_record(job.records, result)
    return _summary_of(result, reused=False)


def process_rows(job: ProcessJob, rows: Sequence[ManifestRow]) -> list[Summary]:
    """`process_one` over a chunk of rows (a Ray task's unit)."""
    return [process_one(job, row) for row in rows]


@contextmanager
def local_pool(workers: int) -> Iterator[Any]:
    """One spawn pool for the whole build (None = run inline), so workers start only once."""
    if workers == 1:
        yield None
        return
    with mp.get_context("spawn").Pool(workers) as pool:
        yield pool


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], pool: Any, bar: tqdm, chunksize: int = 1
) -> Iterator[R]:
    """fn over items in the pool (inline without one), results as they complete."""
    if pool is None:
        for item in items:
            result = fn(item)
            bar.update(1)
            yield result
        return
    for result in pool.imap_unordered(fn, items, chunksize=chunksize):
        bar.update(1)
        yield result


def run_stage(
    job: ProcessJob,
    rows: Sequence[ManifestRow],
    executor: str,
    pool: Any,
    bar: tqdm,
    ray_address: str | None = None,
    ray_workers: int = 1,
) -> dict[str, Summary]:
    """Every row's summary, keyed by id, processed by the chosen executor."""
    if executor == "ray":
        from preprocess.ray_exec import ray_map

        chunks = ray_map(partial(process_rows, job), rows, bar, ray_address, ray_workers)
        return {s.id: s for chunk in chunks for s in chunk}
    summaries = parallel_map(partial(process_one, job), rows, pool, bar, chunksize=2)
    return {s.id: s for s in summaries}


def progress_bar(enabled: bool, total: int, desc: str, unit: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        smoothing=0.05,
        dynamic_ncols=True,
        mininterval=0.5,
    )
