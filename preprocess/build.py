"""`inforeg-preprocess build`: a manifest -> the dataset folder, in parallel, resumable, checked.

Two phases, both spread over a process pool (the parent only schedules and counts):

1. process: each row is decoded, transformed and written as a record in the staging area
   (`DIR/.staging/<config>/records/`), or as its errors; a record already there (and readable) is
   kept, so a re-run after a kill redoes only what was missing.
2. assemble: per split, the good samples in manifest order get their `index`; the FFCV file, the
   DALI shards and the frames index are written from the records, each to a temporary name, then
   fsynced and renamed. An output whose marker (staging `outputs/`) says it was written from the
   same plan, and whose bytes still hash to the marker's sha256, is skipped.

`dataset.json` is written last: its presence means the folder is complete. Killing the build at
any point and running it again gives the same samples (the outputs are deterministic).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

import preprocess
from preprocess import records
from preprocess.manifest import SPLITS, Manifest, ManifestRow, read_manifest
from preprocess.media import atomic_path
from preprocess.process import (
    ProcessedSample,
    SampleError,
    build_vocabulary,
    encode_text,
    frames_folder,
    process_row,
)
from preprocess.schema import (
    AUDIO,
    AUDIO_DTYPE,
    DATASET_JSON,
    ERRORS_JSONL,
    FORMAT_VERSION,
    FORMATS,
    LOCK_FILE,
    SCALAR_DTYPE,
    STAGING_DIR,
    TEXT,
    TEXT_DTYPE,
    VIDEO,
    VOCAB_TXT,
    BuildOptions,
    DatasetInfo,
    FileDigest,
    SplitInfo,
    dali_index,
    dali_key,
    dali_shard,
    ffcv_file,
    field_specs,
    file_digest,
    frames_index,
    save_dataset_info,
)
from preprocess.writers import dali as dali_writer
from preprocess.writers import frames as frames_writer

T = TypeVar("T")
R = TypeVar("R")


class BuildError(RuntimeError):
    """A build that cannot start or finish (busy folder, foreign folder); the message says why."""


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a build runs; none of it changes the bytes written."""

    workers: int = os.cpu_count() or 1
    max_error_rate: float = 0.01
    overwrite: bool = False
    keep_staging: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(f"max_error_rate must be in [0, 1], got {self.max_error_rate}")


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


@dataclass(frozen=True, kw_only=True)
class _ProcessJob:
    root: Path
    options: BuildOptions
    modalities: tuple[str, ...]
    classes: tuple[str, ...]
    records: Path
    frames_root: Path | None


@dataclass(frozen=True, kw_only=True)
class _Summary:
    """What the parent keeps per sample (small: the records stay on disk)."""

    id: str
    errors: tuple[SampleError, ...] = ()
    frames: int = 0
    nbytes: int = 0
    frames_files: dict[str, tuple[str, int]] = field(default_factory=dict)
    reused: bool = False


@dataclass(frozen=True, kw_only=True)
class _Item:
    """One sample of an output: where its record is and what the assembly adds to it."""

    id: str
    label: int
    index: int
    text: np.ndarray | None


@dataclass(frozen=True, kw_only=True)
class _OutputTask:
    kind: str  # "ffcv" | "dali"
    rels: tuple[str, ...]  # the files it writes (relative to DIR)
    items: tuple[_Item, ...]
    plan: str
    out: Path
    records: Path
    markers: Path
    modalities: tuple[str, ...]
    options: BuildOptions
    page_size: int = 0


def _json_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def config_digest(manifest_sha256: str, options: BuildOptions, modalities: Sequence[str]) -> str:
    """Identity of a build: same manifest bytes + same options = same outputs."""
    return _json_digest(
        {
            "format_version": FORMAT_VERSION,
            "manifest": manifest_sha256,
            "options": options.to_json(),
            "modalities": list(modalities),
        }
    )


def staging_key(manifest_sha256: str, options: BuildOptions, modalities: Sequence[str]) -> str:
    """Identity of the records: only what shapes one sample's processing."""
    return _json_digest(
        {
            "manifest": manifest_sha256,
            "record": options.record_key(),
            "modalities": list(modalities),
        }
    )[:16]


# ---------------------------------------------------------------------------------------------
# phase 1: process rows into records (runs in the workers)


def _summary_of(sample: ProcessedSample, reused: bool) -> _Summary:
    nbytes = sum(len(j) for j in sample.jpegs)
    nbytes += 0 if sample.audio is None else sample.audio.nbytes
    return _Summary(
        id=sample.id,
        frames=len(sample.jpegs),
        nbytes=nbytes,
        frames_files=sample.frames_files,
        reused=reused,
    )


def _process_one(job: _ProcessJob, row: ManifestRow) -> _Summary:
    existing = records.read_record(job.records, row.id)
    if existing is not None:
        return _summary_of(existing, reused=True)
    result = process_row(row, job.root, job.options, job.modalities, job.classes, job.frames_root)
    if isinstance(result, list):  # processed again by a resumed build (its input may be mended)
        return _Summary(id=row.id, errors=tuple(result))
    records.write_record(job.records, result)
    return _summary_of(result, reused=False)


@contextmanager
def _pool(workers: int) -> Iterator[Any]:
    """One spawn pool for the whole build (None = run inline), so workers start only once."""
    if workers == 1:
        yield None
        return
    with mp.get_context("spawn").Pool(workers) as pool:
        yield pool


def _parallel_map(
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


# ---------------------------------------------------------------------------------------------
# phase 2: assemble outputs (runs in the workers)


def _load(task: _OutputTask, item: _Item) -> ProcessedSample:
    sample = records.read_record(task.records, item.id)
    if sample is None:
        raise BuildError(f"record of sample {item.id!r} vanished from {task.records}; run again")
    return sample


def _ffcv_values(task: _OutputTask) -> Iterator[tuple[Any, ...]]:
    for item in task.items:
        sample = _load(task, item)
        values: list[Any] = []
        if VIDEO in task.modalities:
            values.append((sample.jpegs, sample.frame_shape))
        if AUDIO in task.modalities:
            values.append(sample.audio)
        if TEXT in task.modalities:
            values.append(item.text)
        values += [item.label, item.index]
        yield tuple(values)


def _dali_members(task: _OutputTask) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    for item in task.items:
        sample = _load(task, item)
        members = [("id", item.id.encode("utf-8"))]
        if VIDEO in task.modalities:
            sizes = np.array([len(j) for j in sample.jpegs], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype("<i4")
            members += [("frames", b"".join(bytes(j) for j in sample.jpegs))]
            members += [("offsets", offsets.tobytes())]
        if AUDIO in task.modalities:
            assert sample.audio is not None
            members.append(("audio", sample.audio.astype(AUDIO_DTYPE).tobytes()))
        if TEXT in task.modalities:
            assert item.text is not None
            members.append(("text", item.text.astype(TEXT_DTYPE).tobytes()))
        members.append(("label", np.array([item.label], SCALAR_DTYPE).tobytes()))
        members.append(("index", np.array([item.index], SCALAR_DTYPE).tobytes()))
        yield dali_key(item.index), members


def _marker_path(task: _OutputTask) -> Path:
    return task.markers / (hashlib.sha256(task.rels[0].encode()).hexdigest()[:32] + ".json")


def _complete(task: _OutputTask) -> dict[str, FileDigest] | None:
    """The outputs' digests when they exist from the same plan and still hash as recorded."""
    try:
        marker = json.loads(_marker_path(task).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("plan") != task.plan or sorted(marker.get("files", {})) != sorted(task.rels):
        return None
    digests = {}
    for rel in task.rels:
        path = task.out / rel
        expected = FileDigest(**marker["files"][rel])
        if not path.is_file() or path.stat().st_size != expected.bytes:
            return None
        if file_digest(path) != expected:
            return None
        digests[rel] = expected
    return digests


def _write_output(task: _OutputTask) -> tuple[dict[str, FileDigest], bool]:
    """Write one output (skipped when complete); return its files' digests and whether skipped."""
    done = _complete(task)
    if done is not None:
        return done, True
    finals = [task.out / rel for rel in task.rels]
    temps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in finals]
    for p in finals:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        if task.kind == "ffcv":
            # Imported here: FFCV pulls in numba and torch, which the processing workers skip.
            from preprocess.ffcv_fields import dataset_fields
            from preprocess.writers import ffcv as ffcv_writer

            fields = dataset_fields(task.modalities, task.options)
            ffcv_writer.write_beton(
                temps[0], fields, _ffcv_values(task), len(task.items), task.page_size
            )
        else:
            dali_writer.write_shard(temps[0], temps[1], _dali_members(task))
        for tmp, final in zip(temps, finals, strict=True):
            tmp.replace(final)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    digests = {rel: file_digest(task.out / rel) for rel in task.rels}
    marker = {"plan": task.plan, "files": {rel: asdict(d) for rel, d in digests.items()}}
    task.markers.mkdir(parents=True, exist_ok=True)
    with atomic_path(_marker_path(task)) as tmp:
        tmp.write_text(json.dumps(marker))
    return digests, False


# ---------------------------------------------------------------------------------------------
# the parent


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One build per folder at a time (an advisory lock, released if the process dies)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOCK_FILE).open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(f"{out}: another build is running in this folder") from None
        yield


def _write_text(path: Path, text: str) -> FileDigest:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return file_digest(path)


def _prepare_folder(out: Path, config: str, overwrite: bool) -> DatasetInfo | None:
    """Check the folder may be written; return the existing dataset.json if it has this config."""
    from preprocess.schema import load_dataset_info

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


def _plan_outputs(
    out: Path,
    stage: Path,
    config: str,
    options: BuildOptions,
    modalities: tuple[str, ...],
    items_by_split: dict[str, list[_Item]],
    summaries: dict[str, _Summary],
) -> list[_OutputTask]:
    tasks = []
    common = {
        "out": out,
        "records": stage / "records",
        "markers": stage / "outputs",
        "modalities": modalities,
        "options": options,
    }
    for split, items in items_by_split.items():
        if not items:
            continue

        def plan(rel: str, part: Sequence[_Item]) -> str:
            return _json_digest(
                {
                    "config": config,
                    "output": rel,
                    "items": [
                        [i.id, i.label, i.index, None if i.text is None else i.text.tolist()]
                        for i in part
                    ],
                }
            )

        if "ffcv" in options.formats:
            rel = ffcv_file(split)
            largest = max(summaries[i.id].nbytes + 16 * summaries[i.id].frames for i in items)
            tasks.append(
                _OutputTask(
                    kind="ffcv",
                    rels=(rel,),
                    items=tuple(items),
                    plan=plan(rel, items),
                    page_size=page_size_for(largest + 4 * options.text_len + 4096),
                    **common,  # type: ignore[arg-type]
                )
            )
        if "dali" in options.formats:
            for shard, start in enumerate(range(0, len(items), options.shard_size)):
                part = items[start : start + options.shard_size]
                rel = dali_shard(split, shard)
                tasks.append(
                    _OutputTask(
                        kind="dali",
                        rels=(rel, dali_index(rel)),
                        items=tuple(part),
                        plan=plan(rel, part),
                        **common,  # type: ignore[arg-type]
                    )
                )
    # Largest first, so one big FFCV file does not start last and leave the other workers idle.
    return sorted(tasks, key=lambda t: -len(t.items) * (4 if t.kind == "ffcv" else 1))


def page_size_for(largest_sample: int) -> int:
    """FFCV page size: a power of two >= 2 MiB (FFCV's minimum) holding 8 of the largest samples
    (a sample never straddles pages, so the waste per page is below one sample)."""
    size = 1 << 21
    while size < 8 * largest_sample:
        size *= 2
    return size


def _bar(settings: RunSettings, total: int, desc: str, unit: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not settings.progress,
        smoothing=0.05,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def build(
    manifest_path: str | Path,
    out: str | Path,
    options: BuildOptions,
    settings: RunSettings,
    log: Callable[[str], None] = print,
) -> BuildResult:
    """Build (or finish, or confirm) the dataset folder `out` from a manifest."""
    started = time.perf_counter()
    manifest = read_manifest(manifest_path)
    out = Path(out).resolve()
    modalities = manifest.modalities()
    classes = tuple(sorted(options.classes)) if options.classes else manifest.classes()
    manifest_sha = manifest.digest()
    config = config_digest(manifest_sha, options, modalities)
    stage = out / STAGING_DIR / staging_key(manifest_sha, options, modalities)

    with _locked(out):
        existing = _prepare_folder(out, config, settings.overwrite)
        if existing is not None:
            from preprocess.verify import verify

            problems = verify(out, workers=settings.workers)
            if not problems:
                total = len(manifest.rows)
                bad = total - sum(s.samples for s in existing.splits.values())
                log(f"build: {out} is up to date and verified ({total - bad} samples)")
                return _result(existing, total, bad, 0, 0.0, started, settings)
            log(f"build: {out} fails verification ({len(problems)} problem(s)); rebuilding")
        # From here until the end dataset.json is absent: its presence means "complete".
        (out / DATASET_JSON).unlink(missing_ok=True)
        for other in (out / STAGING_DIR).glob("*"):
            if other != stage:
                shutil.rmtree(other, ignore_errors=True)  # records of other options: stale
        (stage / "records").mkdir(parents=True, exist_ok=True)

        # Phase 1 ------------------------------------------------------------------------
        job = _ProcessJob(
            root=manifest.root,
            options=options,
            modalities=modalities,
            classes=classes,
            records=stage / "records",
            frames_root=out / "frames" if "frames" in options.formats else None,
        )
        with _pool(settings.workers) as pool:
            t0 = time.perf_counter()
            summaries: dict[str, _Summary] = {}
            with _bar(settings, len(manifest.rows), "process", "clip") as bar:
                for summary in _parallel_map(
                    partial(_process_one, job), manifest.rows, pool, bar, chunksize=2
                ):
                    summaries[summary.id] = summary
            process_seconds = time.perf_counter() - t0
            processed = sum(1 for s in summaries.values() if not s.reused)

            # Phase 2 --------------------------------------------------------------------
            info = _assemble(
                out,
                stage,
                config,
                manifest,
                manifest_sha,
                options,
                modalities,
                classes,
                summaries,
                settings,
                pool,
            )
        total = len(manifest.rows)
        bad = sum(1 for s in summaries.values() if s.errors)
        if not settings.keep_staging:
            shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
        result = _result(info, total, bad, processed, process_seconds, started, settings)
        log(summary_text(out, result))
        return result


def _result(
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


def _assemble(
    out: Path,
    stage: Path,
    config: str,
    manifest: Manifest,
    manifest_sha: str,
    options: BuildOptions,
    modalities: tuple[str, ...],
    classes: tuple[str, ...],
    summaries: dict[str, _Summary],
    settings: RunSettings,
    pool: Any,
) -> DatasetInfo:
    good = [r for r in manifest.rows if not summaries[r.id].errors]
    vocab = None
    ids: dict[str, int] = {}
    if TEXT in modalities:
        vocab = build_vocabulary(
            (r.text or "" for r in good if r.split == "train"), options.min_word_count
        )
        ids = {w: i for i, w in enumerate(vocab)}
    label_of = {c: i for i, c in enumerate(classes)}
    items_by_split: dict[str, list[_Item]] = {s: [] for s in SPLITS}
    for row in good:
        part = items_by_split[row.split]
        text = encode_text(row.text or "", ids, options.text_len) if TEXT in modalities else None
        part.append(_Item(id=row.id, label=label_of[row.label], index=len(part), text=text))

    tasks = _plan_outputs(out, stage, config, options, modalities, items_by_split, summaries)
    # The FFCV files are written here, one after the other, while the pool writes the shards:
    # importing FFCV costs seconds of CPU per process (numba compiles at import), so one process
    # pays it, not every worker.
    in_pool = [t for t in tasks if pool is not None and t.kind != "ffcv"]
    here = [t for t in tasks if pool is None or t.kind == "ffcv"]
    files: dict[str, FileDigest] = {}
    skipped = 0
    with _bar(settings, len(tasks), "write", "file") as bar:
        # imap_unordered hands the tasks to the workers at once; the results are read afterwards.
        pending = pool.imap_unordered(_write_output, in_pool) if in_pool else iter(())
        for digests, was_complete in itertools.chain(map(_write_output, here), pending):
            files.update(digests)
            skipped += was_complete
            bar.update(1)
    if skipped:
        tqdm.write(f"build: {skipped} output(s) already complete and verified, kept")

    splits: dict[str, SplitInfo] = {}
    for split in SPLITS:
        rows = manifest.split(split)
        if not rows:
            continue
        items = items_by_split[split]
        frames_rel = None
        if "frames" in options.formats and items:
            frames_rel = frames_index(split)
            entries = []
            for item in items:
                s = summaries[item.id]
                folder = frames_folder(item.id)
                wav = f"{split}/{folder}.wav"
                entries.append(
                    {
                        "index": item.index,
                        "id": item.id,
                        "label": item.label,
                        "class": classes[item.label],
                        "folder": f"{split}/{folder}" if s.frames else None,
                        "frame_count": s.frames,
                        "wav": wav if f"frames/{wav}" in s.frames_files else None,
                        "text": None if item.text is None else item.text.tolist(),
                    }
                )
                files.update(
                    {k: FileDigest(sha256=v[0], bytes=v[1]) for k, v in s.frames_files.items()}
                )
            frames_writer.write_index(out / frames_rel, entries)
            files[frames_rel] = file_digest(out / frames_rel)
        per_class = {c: 0 for c in classes}
        for item in items:
            per_class[classes[item.label]] += 1
        splits[split] = SplitInfo(
            samples=len(items),
            per_class=per_class,
            errors=sum(1 for r in rows if summaries[r.id].errors),
            frames=sum(summaries[i.id].frames for i in items),
            ffcv=ffcv_file(split) if "ffcv" in options.formats and items else None,
            dali=tuple(
                sorted(
                    rel
                    for rel in files
                    if rel.startswith(f"dali/{split}-") and rel.endswith(".tar")
                )
            ),
            frames_index=frames_rel,
        )
    for top in FORMATS:
        frames_writer.remove_stale(out, set(files), top)

    errors = [e for r in manifest.rows for e in summaries[r.id].errors]
    files[ERRORS_JSONL] = _write_text(
        out / ERRORS_JSONL,
        "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in errors),
    )
    if vocab is not None:
        files[VOCAB_TXT] = _write_text(out / VOCAB_TXT, "".join(w + "\n" for w in vocab))
    else:
        (out / VOCAB_TXT).unlink(missing_ok=True)

    info = DatasetInfo(
        format_version=FORMAT_VERSION,
        tool_version=preprocess.__version__,
        manifest_path=str(manifest.path),
        manifest_sha256=manifest_sha,
        config_sha256=config,
        options=options,
        classes=classes,
        modalities=modalities,
        fields=field_specs(modalities, options),
        audio_feature_shape=(
            options.audio_features.shape(options.audio_samples) if AUDIO in modalities else None
        ),
        vocab_size=None if vocab is None else len(vocab),
        splits=splits,
        errors=len(errors),
        files=dict(sorted(files.items())),
    )
    save_dataset_info(out / DATASET_JSON, info)
    return info


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
