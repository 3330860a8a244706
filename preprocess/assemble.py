"""Assembly: the records of a build's good samples -> the dataset folder's outputs and metadata.

Per split, the FFCV file, the DALI shards and the frames index are written from the records, each
to a temporary name, then fsynced and renamed. An output whose marker (staging `outputs/`) says it
was written from the same plan, and whose bytes still hash to the marker's sha256, is skipped.
`dataset.json` is written last: its presence means the folder is complete.

The one-machine build and the merge of a sharded build both end here, with the same plan and the
same summaries, so they write the same bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

import preprocess
from preprocess import records
from preprocess.errors import BuildError
from preprocess.manifest import SPLITS
from preprocess.media import atomic_path
from preprocess.plan import BuildPlan, Item, OutputTask, plan_outputs, split_items
from preprocess.process import ProcessedSample, frames_folder
from preprocess.schema import (
    AUDIO,
    DATASET_JSON,
    ERRORS_JSONL,
    FORMAT_VERSION,
    FORMATS,
    VOCAB_TXT,
    DatasetInfo,
    FileDigest,
    SplitInfo,
    ffcv_file,
    field_specs,
    file_digest,
    frames_index,
    save_dataset_info,
)
from preprocess.stage import Summary, progress_bar
from preprocess.writers import dali as dali_writer
from preprocess.writers import frames as frames_writer


def _load(task: OutputTask, item: Item) -> ProcessedSample:
    sample = records.read_record(task.records, item.id)
    if sample is None:
        raise BuildError(f"record of sample {item.id!r} vanished from {task.records}; run again")
    return sample


def _ffcv_values(task: OutputTask) -> Iterator[tuple[Any, ...]]:
    from preprocess.writers import ffcv as ffcv_writer

    for item in task.items:
        s = _load(task, item)
        yield ffcv_writer.sample_values(
            task.modalities, s.jpegs, s.frame_shape, s.audio, item.text, item.label, item.index
        )


def _dali_members(task: OutputTask) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    for item in task.items:
        s = _load(task, item)
        yield dali_writer.sample_members(
            task.modalities, item.id, s.jpegs, s.audio, item.text, item.label, item.index
        )


def _marker_path(task: OutputTask) -> Path:
    return task.markers / (hashlib.sha256(task.rels[0].encode()).hexdigest()[:32] + ".json")


def _complete(task: OutputTask) -> dict[str, FileDigest] | None:
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


def write_output(task: OutputTask) -> tuple[dict[str, FileDigest], bool]:
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


def write_outputs(tasks: list[OutputTask], pool: Any, progress: bool) -> dict[str, FileDigest]:
    """Every FFCV file and DALI shard; their files' digests."""
    # The FFCV files are written here, one after the other, while the pool writes the shards:
    # importing FFCV costs seconds of CPU per process (numba compiles at import), so one process
    # pays it, not every worker.
    in_pool = [t for t in tasks if pool is not None and t.kind != "ffcv"]
    here = [t for t in tasks if pool is None or t.kind == "ffcv"]
    files: dict[str, FileDigest] = {}
    skipped = 0
    with progress_bar(progress, len(tasks), "write", "file") as bar:
        # imap_unordered hands the tasks to the workers at once; the results are read afterwards.
        pending = pool.imap_unordered(write_output, in_pool) if in_pool else iter(())
        for digests, was_complete in itertools.chain(map(write_output, here), pending):
            files.update(digests)
            skipped += was_complete
            bar.update(1)
    if skipped:
        tqdm.write(f"build: {skipped} output(s) already complete and verified, kept")
    return files


def _write_frames_index(
    plan: BuildPlan, split: str, items: list[Item], summaries: Mapping[str, Summary]
) -> tuple[str, dict[str, FileDigest]]:
    """The split's frames index; its path and the digests of the frames files it lists."""
    rel = frames_index(split)
    entries = []
    files: dict[str, FileDigest] = {}
    for item in items:
        s = summaries[item.id]
        folder = frames_folder(item.id)
        entries.append(
            frames_writer.index_entry(
                split=split,
                folder=folder,
                sample_id=item.id,
                label=item.label,
                class_name=plan.classes[item.label],
                index=item.index,
                frame_count=s.frames,
                has_wav=f"frames/{split}/{folder}.wav" in s.frames_files,
                text=None if item.text is None else item.text.tolist(),
            )
        )
        files.update({k: FileDigest(sha256=v[0], bytes=v[1]) for k, v in s.frames_files.items()})
    frames_writer.write_index(plan.out / rel, entries)
    files[rel] = file_digest(plan.out / rel)
    return rel, files


def _split_infos(
    plan: BuildPlan,
    items_by_split: Mapping[str, list[Item]],
    summaries: Mapping[str, Summary],
    files: dict[str, FileDigest],
) -> dict[str, SplitInfo]:
    """Per split with rows: its counts and files (writes the frames index; adds to `files`)."""
    formats = plan.options.formats
    splits: dict[str, SplitInfo] = {}
    for split in SPLITS:
        rows = plan.manifest.split(split)
        if not rows:
            continue
        items = items_by_split[split]
        frames_rel = None
        if "frames" in formats and items:
            frames_rel, frames_files = _write_frames_index(plan, split, items, summaries)
            files.update(frames_files)
        per_class = {c: 0 for c in plan.classes}
        for item in items:
            per_class[plan.classes[item.label]] += 1
        shards = (r for r in files if r.startswith(f"dali/{split}-") and r.endswith(".tar"))
        splits[split] = SplitInfo(
            samples=len(items),
            per_class=per_class,
            errors=sum(1 for r in rows if summaries[r.id].errors),
            frames=sum(summaries[i.id].frames for i in items),
            ffcv=ffcv_file(split) if "ffcv" in formats and items else None,
            dali=tuple(sorted(shards)),
            frames_index=frames_rel,
        )
    return splits


def _write_text(path: Path, text: str) -> FileDigest:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return file_digest(path)


def _write_errors_and_vocab(
    plan: BuildPlan,
    summaries: Mapping[str, Summary],
    vocab: tuple[str, ...] | None,
    files: dict[str, FileDigest],
) -> int:
    """errors.jsonl (manifest order) and vocab.txt (removed without text); the error count."""
    errors = [e for r in plan.manifest.rows for e in summaries[r.id].errors]
    files[ERRORS_JSONL] = _write_text(
        plan.out / ERRORS_JSONL,
        "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in errors),
    )
    if vocab is not None:
        files[VOCAB_TXT] = _write_text(plan.out / VOCAB_TXT, "".join(w + "\n" for w in vocab))
    else:
        (plan.out / VOCAB_TXT).unlink(missing_ok=True)
    return len(errors)


def assemble(
    plan: BuildPlan, summaries: Mapping[str, Summary], pool: Any, progress: bool
) -> DatasetInfo:
    """Write every output of `plan` from its records, then dataset.json; return what it says."""
    vocab, items_by_split = split_items(
        plan.manifest, summaries, plan.options, plan.modalities, plan.classes
    )
    tasks = plan_outputs(
        plan.out,
        plan.stage,
        plan.config,
        plan.options,
        plan.modalities,
        items_by_split,
        summaries,
    )
    files = write_outputs(tasks, pool, progress)
    splits = _split_infos(plan, items_by_split, summaries, files)
    for top in FORMATS:
        frames_writer.remove_stale(plan.out, set(files), top)
    errors = _write_errors_and_vocab(plan, summaries, vocab, files)
    options = plan.options
    info = DatasetInfo(
        format_version=FORMAT_VERSION,
        tool_version=preprocess.__version__,
        manifest_path=str(plan.manifest.path),
        manifest_sha256=plan.manifest_sha,
        config_sha256=plan.config,
        options=options,
        classes=plan.classes,
        modalities=plan.modalities,
        fields=field_specs(plan.modalities, options),
        audio_feature_shape=(
            options.audio_features.shape(options.audio_samples)
            if AUDIO in plan.modalities
            else None
        ),
        vocab_size=None if vocab is None else len(vocab),
        splits=splits,
        errors=errors,
        files=dict(sorted(files.items())),
    )
    save_dataset_info(plan.out / DATASET_JSON, info)
    return info
