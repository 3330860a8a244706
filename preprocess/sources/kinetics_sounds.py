"""Kinetics-Sounds (or any folder of videos with an audio track) from train/test list files.

A list file has one clip per line, comma-separated: `video,label` where `video` is a path relative
to the root (e.g. `playing_bagpipes/abc.mp4`) or a clip id (then `<root>/<id>.mp4`), and `label` a
class name. OGM-GE's three-column lists (`id,duration,label`) are read too (the last column is the
label). The audio is the video's own track: the manifest's audio cell names the same file.
"""

from __future__ import annotations

import csv
from pathlib import Path

from preprocess.manifest import ManifestRow
from preprocess.sources import relative_to


def read_list(path: Path) -> list[tuple[str, str]]:
    """(video, label) per line; ValueError naming the line for a malformed one."""
    entries = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        for line_number, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if len(cells) not in (2, 3) or not cells[0] or not cells[-1]:
                raise ValueError(f"{path}:{line_number}: expected 'video,label', got {row}")
            entries.append((cells[0], cells[-1]))
    if not entries:
        raise ValueError(f"{path}: no clips listed")
    return entries


def kinetics_rows(root: Path, lists: dict[str, Path], out: Path) -> list[ManifestRow]:
    """Rows for every listed clip (split -> list file), ids unique per split list entry."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    rows: list[ManifestRow] = []
    seen: dict[str, str] = {}
    for split, list_path in lists.items():
        for video, label in read_list(list_path):
            path = root / video if Path(video).suffix else root / f"{video}.mp4"
            clip_id = Path(video).with_suffix("").as_posix()
            if clip_id in seen:
                raise ValueError(
                    f"{list_path}: clip {clip_id!r} is also in the {seen[clip_id]} list"
                )
            seen[clip_id] = split
            cell = relative_to(path, out)
            rows.append(ManifestRow(id=clip_id, split=split, label=label, video=cell, audio=cell))
    return rows
