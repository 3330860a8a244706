"""`inforeg-preprocess verify DIR`: re-hash every output and check the counts against dataset.json.

Returns (and the CLI prints) one line per mismatch: a missing, changed or unexpected file, a
split whose FFCV file, DALI shards or frames index hold another number of samples, other labels or
other indices than recorded, an errors.jsonl of another length.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from preprocess.parallel import map_in_processes
from preprocess.schema import (
    ERRORS_JSONL,
    FORMATS,
    INDEX,
    LABEL,
    DatasetInfo,
    FileDigest,
    SplitInfo,
    dali_index,
    file_digest,
    load_dataset_info,
)
from preprocess.writers import dali as dali_writer
from preprocess.writers import frames as frames_writer


def _hash(path: Path) -> FileDigest | None:
    return file_digest(path) if path.is_file() else None


def _check_hashes(root: Path, info: DatasetInfo, workers: int) -> list[str]:
    rels = sorted(info.files)
    paths = [root / rel for rel in rels]
    found = map_in_processes(_hash, paths, workers if len(paths) > 8 else 1)
    problems = []
    for rel, digest in zip(rels, found, strict=True):
        expected = info.files[rel]
        if digest is None:
            problems.append(f"{rel}: missing")
        elif digest.bytes != expected.bytes:
            problems.append(f"{rel}: {digest.bytes} bytes, dataset.json says {expected.bytes}")
        elif digest.sha256 != expected.sha256:
            problems.append(
                f"{rel}: sha256 {digest.sha256[:16]}... differs from dataset.json's "
                f"{expected.sha256[:16]}... (file changed or corrupt)"
            )
    for top in FORMATS:
        base = root / top
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                rel = path.relative_to(root).as_posix()
                if path.is_file() and rel not in info.files:
                    problems.append(f"{rel}: unexpected file (not in dataset.json)")
    return problems


def _check_labels(
    where: str,
    split: str,
    s: SplitInfo,
    classes: tuple[str, ...],
    labels: np.ndarray,
    indices: np.ndarray,
) -> list[str]:
    problems = []
    if len(labels) != s.samples:
        problems.append(f"{where}: {len(labels)} samples, dataset.json says {s.samples} ({split})")
        return problems
    if not np.array_equal(np.sort(indices), np.arange(s.samples)):
        problems.append(f"{where}: indices are not 0..{s.samples - 1} ({split})")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        problems.append(f"{where}: labels outside 0..{len(classes) - 1} ({split})")
        return problems
    counts = Counter(classes[int(label)] for label in labels)
    found = {c: counts.get(c, 0) for c in classes}
    if found != s.per_class:
        problems.append(f"{where}: per-class counts {found} differ from {s.per_class} ({split})")
    return problems


def _ffcv_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from ffcv.reader import Reader

    from preprocess.ffcv_fields import CUSTOM_FIELDS

    reader = Reader(str(path), CUSTOM_FIELDS)
    names = list(reader.handlers)
    columns = reader.metadata.dtype.names
    return (
        reader.metadata[columns[names.index(LABEL)]].astype(np.int64),
        reader.metadata[columns[names.index(INDEX)]].astype(np.int64),
    )


def _dali_labels(root: Path, shards: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    labels: list[int] = []
    indices: list[int] = []
    for rel in shards:
        entries = dali_writer.read_index(root / dali_index(rel))
        with (root / rel).open("rb") as f:
            for entry in entries:
                for name, out in ((LABEL, labels), (INDEX, indices)):
                    offset, size = entry[name]
                    f.seek(offset)
                    out.append(int(np.frombuffer(f.read(size), "<i8")[0]))
    return np.array(labels, np.int64), np.array(indices, np.int64)


def _check_counts(root: Path, info: DatasetInfo, bad_files: set[str]) -> list[str]:
    problems = []
    for split, s in info.splits.items():
        if sum(s.per_class.values()) != s.samples:
            problems.append(f"dataset.json: split {split} per-class counts do not sum to samples")
        checks = []
        if s.ffcv is not None and s.ffcv not in bad_files:
            checks.append((s.ffcv, lambda s=s: _ffcv_labels(root / s.ffcv)))
        shard_files = {f for rel in s.dali for f in (rel, dali_index(rel))}
        if s.dali and not shard_files & bad_files:
            checks.append((f"dali/{split}-*.tar", lambda s=s: _dali_labels(root, s.dali)))
        if s.frames_index is not None and s.frames_index not in bad_files:

            def frames(s: SplitInfo = s) -> tuple[np.ndarray, np.ndarray]:
                entries = frames_writer.read_index(root / str(s.frames_index))
                return (
                    np.array([e["label"] for e in entries], np.int64),
                    np.array([e["index"] for e in entries], np.int64),
                )

            checks.append((s.frames_index, frames))
        for where, read in checks:
            try:
                labels, indices = read()
            except (OSError, ValueError, KeyError, AssertionError) as e:
                problems.append(f"{where}: unreadable ({e})")
                continue
            problems += _check_labels(where, split, s, info.classes, labels, indices)
    if ERRORS_JSONL not in bad_files and (root / ERRORS_JSONL).is_file():
        with (root / ERRORS_JSONL).open(encoding="utf-8") as f:
            lines = sum(1 for line in f if line.strip())
        if lines != info.errors:
            problems.append(f"{ERRORS_JSONL}: {lines} lines, dataset.json says {info.errors}")
    return problems


def verify(root: str | Path, workers: int = 1) -> list[str]:
    """Every mismatch between the folder and its dataset.json; empty = verified."""
    root = Path(root)
    try:
        info = load_dataset_info(root)
    except ValueError as e:
        return [str(e)]
    problems = _check_hashes(root, info, workers)
    bad_files = {p.split(":", 1)[0] for p in problems}
    return problems + _check_counts(root, info, bad_files)
