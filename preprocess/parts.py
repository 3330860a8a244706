"""Sharded builds: `build --num-shards N --shard-index I` runs the per-sample stage on one part.

A part processes the manifest rows at positions p with p % N == I (`plan.Sharding`) exactly as the
one-machine build does (`stage.process_one`), into the same staging area, `DIR/.staging/<key>/
records/` (one file per sample, so parts never write the same file; the `frames` format's clip
files go to `DIR/frames/` as in a one-machine build). When every row of the part is done, its
marker `DIR/.staging/<key>/parts/part-IIIII-of-NNNNN.json` is written atomically: the build's
identity (manifest, options) and one summary per row. A part killed mid-way has no marker; run
again, it keeps the records already written and finishes. A part whose marker is there and whose
records are all present is up to date and does nothing.

Nothing global is decided in a part (no vocabulary, no index, no error budget): `merge` decides it
once from all the parts (`preprocess.merge`), so the result does not depend on N.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preprocess import records
from preprocess.build import RunSettings, locked, prepare_folder, process_rows
from preprocess.manifest import read_manifest
from preprocess.media import atomic_path
from preprocess.plan import BuildPlan, Sharding
from preprocess.schema import BuildOptions
from preprocess.stage import Summary, local_pool

PARTS = "parts"
"""Folder of the part markers, beside `records/` in the staging area."""


@dataclass(frozen=True, kw_only=True)
class PartMarker:
    """A complete part: what it was built from and each of its rows' summaries."""

    sharding: Sharding
    config: str
    manifest_path: str
    manifest_sha256: str
    options: dict[str, Any]
    modalities: tuple[str, ...]
    summaries: tuple[Summary, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "num_shards": self.sharding.num_shards,
            "shard_index": self.sharding.shard_index,
            "config": self.config,
            "manifest_path": self.manifest_path,
            "manifest_sha256": self.manifest_sha256,
            "options": self.options,
            "modalities": list(self.modalities),
            "summaries": [s.to_json() for s in self.summaries],
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PartMarker:
        return PartMarker(
            sharding=Sharding(num_shards=data["num_shards"], shard_index=data["shard_index"]),
            config=data["config"],
            manifest_path=data["manifest_path"],
            manifest_sha256=data["manifest_sha256"],
            options=data["options"],
            modalities=tuple(data["modalities"]),
            summaries=tuple(Summary.from_json(s) for s in data["summaries"]),
        )


def marker_path(stage: Path, sharding: Sharding) -> Path:
    return stage / PARTS / f"{sharding.name}.json"


def read_marker(path: Path) -> PartMarker:
    """A part marker; ValueError naming the file when it is unreadable."""
    try:
        return PartMarker.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable part marker ({e})") from e


def missing_records(records_dir: Path, summaries: Sequence[Summary]) -> list[str]:
    """Ids of good samples whose record file is absent."""
    return [
        s.id
        for s in summaries
        if not s.errors and not records.record_path(records_dir, s.id).is_file()
    ]


@dataclass(frozen=True, kw_only=True)
class PartResult:
    sharding: Sharding
    rows: int
    bad: int
    processed: int
    process_seconds: float
    up_to_date: bool
    marker: Path


def _complete(plan: BuildPlan, sharding: Sharding) -> PartMarker | None:
    """The part's marker when it is from this plan and its records are all there."""
    path = marker_path(plan.stage, sharding)
    if not path.is_file():
        return None
    try:
        marker = read_marker(path)
    except ValueError:
        return None
    if marker.config != plan.config or missing_records(plan.records, marker.summaries):
        return None
    return marker


def build_part(
    manifest_path: str | Path,
    out: str | Path,
    options: BuildOptions,
    settings: RunSettings,
    sharding: Sharding,
    log: Callable[[str], None] = print,
) -> PartResult:
    """Process one part's rows into `out`'s staging area and write the part's marker."""
    plan = BuildPlan.create(read_manifest(manifest_path), Path(out).resolve(), options)
    if not settings.overwrite:
        prepare_folder(plan.out, plan.config, overwrite=False)  # refuses a foreign folder
    marker = marker_path(plan.stage, sharding)
    with locked(marker.with_suffix(".lock"), f"part {sharding.shard_index}"):
        rows = sharding.rows(plan.manifest.rows)
        done = _complete(plan, sharding)
        if done is not None:
            log(f"build: {sharding.name} of {plan.out} is complete ({marker}); nothing to do")
            bad = sum(1 for s in done.summaries if s.errors)
            return PartResult(
                sharding=sharding,
                rows=len(rows),
                bad=bad,
                processed=0,
                process_seconds=0.0,
                up_to_date=True,
                marker=marker,
            )
        plan.records.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with local_pool(settings.workers if settings.executor == "local" else 1) as pool:
            summaries = process_rows(plan, rows, settings, pool)
        seconds = time.perf_counter() - t0
        ordered = tuple(summaries[r.id] for r in rows)
        _write_marker(plan, sharding, ordered, marker)
    result = PartResult(
        sharding=sharding,
        rows=len(rows),
        bad=sum(1 for s in ordered if s.errors),
        processed=sum(1 for s in ordered if not s.reused),
        process_seconds=seconds,
        up_to_date=False,
        marker=marker,
    )
    log(part_text(plan.out, result))
    return result


def _write_marker(
    plan: BuildPlan, sharding: Sharding, summaries: tuple[Summary, ...], path: Path
) -> None:
    marker = PartMarker(
        sharding=sharding,
        config=plan.config,
        manifest_path=str(plan.manifest.path),
        manifest_sha256=plan.manifest_sha,
        options=plan.options.to_json(),
        modalities=plan.modalities,
        summaries=summaries,
    )
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(marker.to_json(), ensure_ascii=False), encoding="utf-8")


def part_text(out: Path, result: PartResult) -> str:
    rate = result.processed / result.process_seconds if result.process_seconds > 0 else 0.0
    n = result.sharding.num_shards
    return (
        f"build: {result.sharding.name} of {out}: {result.rows} rows, {result.bad} with errors; "
        f"processed {result.processed} clips in {result.process_seconds:.1f} s ({rate:.1f} "
        f"clips/s), reused {result.rows - result.processed}\n"
        f"build: when all {n} part(s) are done: inforeg-preprocess merge {out}"
    )
