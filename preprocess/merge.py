"""`inforeg-preprocess merge DIR`: N complete parts -> the dataset a one-machine build writes.

The merge first checks, writing nothing: every part marker under `DIR/.staging/*/parts/` is
readable; all were built from the same manifest bytes with the same options and the same N; parts
0..N-1 are all there; each covers exactly its rows (`plan.Sharding`); the manifest still has the
recorded bytes; every good sample's record is present. Any problem is named (each part's) and the
merge stops (`MergeError`, exit 1) with the folder as it was.

Then it runs the one-machine build's assembly (`preprocess.assemble`) on the union of the parts'
summaries: the vocabulary from the whole train split, `index` per split in manifest order, DALI
shard boundaries by index, errors.jsonl in manifest order and the error budget over all rows, so
that the folder is byte for byte the one-machine build's, for any N.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from preprocess.assemble import assemble
from preprocess.build import (
    BuildResult,
    RunSettings,
    locked,
    make_result,
    prepare_folder,
    summary_text,
    up_to_date,
)
from preprocess.errors import BuildError
from preprocess.manifest import Manifest, read_manifest
from preprocess.parts import PARTS, PartMarker, missing_records, read_marker
from preprocess.plan import BuildPlan
from preprocess.schema import DATASET_JSON, LOCK_FILE, STAGING_DIR, BuildOptions
from preprocess.stage import Summary, local_pool


class MergeError(BuildError):
    """Parts that cannot be merged; `problems` names each part's problem."""

    def __init__(self, out: Path, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"{out}: cannot merge, {len(problems)} problem(s); nothing was written:\n{lines}"
        )


def _describe(marker: PartMarker) -> str:
    return f"part {marker.sharding.shard_index} of {marker.sharding.num_shards}"


def _differences(ref: PartMarker, other: PartMarker) -> list[str]:
    """What makes `other` another build than `ref` (empty = the same build)."""
    diffs = []
    if other.sharding.num_shards != ref.sharding.num_shards:
        diffs.append(f"--num-shards {other.sharding.num_shards} != {ref.sharding.num_shards}")
    if other.manifest_sha256 != ref.manifest_sha256 or other.manifest_path != ref.manifest_path:
        diffs.append(f"manifest {other.manifest_path} (sha256 {other.manifest_sha256[:12]}...)")
    for key in sorted(set(ref.options) | set(other.options)):
        if ref.options.get(key) != other.options.get(key):
            diffs.append(f"{key} {other.options.get(key)!r} != {ref.options.get(key)!r}")
    if other.modalities != ref.modalities:
        diffs.append(f"modalities {other.modalities} != {ref.modalities}")
    if not diffs and other.config != ref.config:
        diffs.append("another build configuration")
    return diffs


def _consistency(markers: list[PartMarker]) -> list[str]:
    """Parts of another build than the first one's, and the first one's missing parts."""
    ref = markers[0]
    problems = []
    for other in markers[1:]:
        diffs = _differences(ref, other)
        if diffs:
            problems.append(
                f"{_describe(other)} was built differently from {_describe(ref)}: "
                + "; ".join(diffs)
            )
    n = ref.sharding.num_shards
    present = {m.sharding.shard_index for m in markers if m.sharding.num_shards == n}
    for index in range(n):
        if index not in present:
            problems.append(
                f"part {index} of {n}: missing (not run, still running, or stopped before it "
                f"finished): run build ... --num-shards {n} --shard-index {index}"
            )
    return problems


def _coverage(manifest: Manifest, markers: list[PartMarker], records: Path) -> list[str]:
    """Each part holds exactly its rows, and the records of its good samples."""
    problems = []
    for m in markers:
        want = [r.id for r in m.sharding.rows(manifest.rows)]
        if [s.id for s in m.summaries] != want:
            problems.append(f"{_describe(m)}: its samples are not the part's rows of the manifest")
            continue
        lost = missing_records(records, m.summaries)
        if lost:
            problems.append(
                f"{_describe(m)}: {len(lost)} record(s) missing (e.g. {lost[0]!r}) from "
                f"{records}: run the part again"
            )
    return problems


def _read_markers(out: Path) -> tuple[list[PartMarker], list[str]]:
    paths = sorted((out / STAGING_DIR).glob(f"*/{PARTS}/part-*-of-*.json"))
    if not paths:
        raise MergeError(
            out,
            [
                f"no parts under {out / STAGING_DIR} (run build --num-shards N --shard-index I "
                "for I = 0..N-1 first)"
            ],
        )
    markers, problems = [], []
    for path in paths:
        try:
            markers.append(read_marker(path))
        except ValueError as e:
            problems.append(str(e))
    # The reference build is the most common one (part count first, then configuration): the
    # parts that differ from it are named.
    counts = Counter(m.sharding.num_shards for m in markers)
    configs = Counter((m.sharding.num_shards, m.config) for m in markers)
    markers.sort(
        key=lambda m: (
            -counts[m.sharding.num_shards],
            -configs[(m.sharding.num_shards, m.config)],
            m.sharding.num_shards,
            m.sharding.shard_index,
        )
    )
    return markers, problems


def check_parts(out: Path) -> tuple[BuildPlan, dict[str, Summary]]:
    """The plan and every row's summary when the parts make one complete build; else
    MergeError naming every problem."""
    markers, problems = _read_markers(out)
    if markers:
        problems += _consistency(markers)
    if problems or not markers:
        raise MergeError(out, problems or ["no readable part marker"])
    ref = markers[0]
    try:
        manifest = read_manifest(ref.manifest_path)
    except (ValueError, FileNotFoundError) as e:
        raise MergeError(out, [f"the parts' manifest cannot be read: {e}"]) from e
    plan = BuildPlan.create(manifest, out, BuildOptions.from_json(ref.options))
    if plan.manifest_sha != ref.manifest_sha256 or plan.config != ref.config:
        raise MergeError(out, [f"manifest {manifest.path} changed since the parts were built"])
    problems = _coverage(manifest, markers, plan.records)
    if problems:
        raise MergeError(out, problems)
    return plan, {s.id: s for m in markers for s in m.summaries}


def merge(
    out: str | Path, settings: RunSettings, log: Callable[[str], None] = print
) -> BuildResult:
    """Check the parts under `out`, then write the dataset (as `build` writes it) into `out`."""
    started = time.perf_counter()
    out = Path(out).resolve()
    if not out.is_dir():
        raise MergeError(out, [f"{out} is not a folder"])
    plan, summaries = check_parts(out)
    with locked(out / LOCK_FILE, "this folder"):
        existing = prepare_folder(out, plan.config, settings.overwrite)
        done = None if existing is None else up_to_date(plan, existing, settings, started, log)
        if done is None:
            (out / DATASET_JSON).unlink(missing_ok=True)
            with local_pool(settings.workers) as pool:
                info = assemble(plan, summaries, pool, settings.progress)
        if not settings.keep_staging:
            shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
        if done is not None:
            return done
    total = len(plan.manifest.rows)
    bad = sum(1 for s in summaries.values() if s.errors)
    result = make_result(info, total, bad, 0, 0.0, started, settings)
    log(summary_text(out, result).replace("build:", "merge:", 1))
    return result
