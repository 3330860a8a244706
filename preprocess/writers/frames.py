"""The `frames` format: the peers' layout, for the reference loader.

    frames/<split>/<folder>/00001.jpg ...   the kept frames at the SOURCE resolution (JPEG)
    frames/<split>/<folder>.wav             the audio, mono int16 at its source rate, untrimmed
    frames/<split>.jsonl                    the split's index, one JSON object per line

The clips' files are written by the processing workers (`process.write_frames_format`); this module
writes the per-split index, in index order: {"index", "id", "label", "class", "folder",
"frame_count", "wav", "text"} with `folder`/`wav` relative to `frames/` (null when absent) and
`text` the token ids (null without text).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from preprocess.media import atomic_path


def index_entry(
    *,
    split: str,
    folder: str,
    sample_id: str,
    label: int,
    class_name: str,
    index: int,
    frame_count: int,
    has_wav: bool,
    text: list[int] | None,
) -> dict[str, Any]:
    """One line of a split's index (`folder` is the clip's folder name under `frames/<split>/`)."""
    return {
        "index": index,
        "id": sample_id,
        "label": label,
        "class": class_name,
        "folder": f"{split}/{folder}" if frame_count else None,
        "frame_count": frame_count,
        "wav": f"{split}/{folder}.wav" if has_wav else None,
        "text": text,
    }


def write_index(path: Path, entries: Iterable[dict[str, Any]]) -> None:
    """Write a split's index atomically."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")


def read_index(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def remove_stale(root: Path, keep: set[str], top: str) -> list[str]:
    """Delete files under `root/top` whose path (relative to `root`) is not in `keep`, then empty
    folders; return what was removed. Leftovers of killed builds and of samples no longer written
    go; nothing outside `root/top` is touched."""
    base = root / top
    if not base.exists():
        return []
    removed = []
    for path in sorted(base.rglob("*"), reverse=True):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif rel not in keep:
            path.unlink()
            removed.append(rel)
    if base.is_dir() and not any(base.iterdir()):
        shutil.rmtree(base)
    return removed
