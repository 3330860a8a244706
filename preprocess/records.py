"""The staging area: one file per processed sample, so a killed build resumes where it stopped.

`DIR/.staging/<config>/records/<name>.npz` holds a good sample (JPEG frames, PCM), `<name>.err.json`
a bad one (its errors). Both appear only complete (temporary name, fsync, rename). Reading a record
checks it: npz members carry a CRC-32 that `zipfile` verifies on a full read, so a damaged record
reads as missing and is processed again.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from preprocess.media import atomic_path
from preprocess.process import ProcessedSample


def record_name(sample_id: str) -> str:
    """A file-system-safe name for a sample's record (ids may hold any character)."""
    return hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:40]


def record_path(records: Path, sample_id: str) -> Path:
    return records / f"{record_name(sample_id)}.npz"


def write_record(records: Path, sample: ProcessedSample) -> Path:
    """Write a good sample's record atomically."""
    sizes = np.array([len(j) for j in sample.jpegs], dtype=np.int64)
    arrays = {
        "id": np.array(sample.id),
        "jpeg": np.frombuffer(b"".join(sample.jpegs), dtype=np.uint8),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "frame_shape": np.array(sample.frame_shape, dtype=np.int64),
        "frames_files": np.array(json.dumps(sample.frames_files, sort_keys=True)),
    }
    if sample.audio is not None:
        arrays["audio"] = sample.audio
    path = record_path(records, sample.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, allow_pickle=False, **arrays)
    return path


def read_record(records: Path, sample_id: str) -> ProcessedSample | None:
    """The sample's record, or None when it is absent or damaged (then it is processed again)."""
    path = record_path(records, sample_id)
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["id"]) != sample_id:
                return None
            jpeg = z["jpeg"].tobytes()
            offsets = z["offsets"]
            shape = z["frame_shape"]
            frames_files = json.loads(str(z["frames_files"]))
            audio = z["audio"] if "audio" in z.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    jpegs = tuple(jpeg[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1))
    return ProcessedSample(
        id=sample_id,
        jpegs=jpegs,
        frame_shape=(int(shape[0]), int(shape[1])),
        audio=audio,
        frames_files={k: (v[0], int(v[1])) for k, v in frames_files.items()},
    )
