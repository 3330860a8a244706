"""CREMA-D: `VideoFlash/<clip>.flv` + `AudioWAV/<clip>.wav`, the emotion from the clip name.

Clip names are `<actor>_<sentence>_<emotion>_<level>` (e.g. `1001_DFA_ANG_XX`); the six emotions
are ANG, DIS, FEA, HAP, NEU, SAD. The train/test split is OGM-GE's (`data/train.csv` and
`data/CREMAD/test.csv` of GeWu-Lab/OGM-GE_CVPR2022: 6,698 and 744 clips), shipped as
`preprocess/data/cremad_{train,test}.csv`, one `clip,emotion` per line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from preprocess.manifest import ManifestRow
from preprocess.sources import relative_to

EMOTIONS: tuple[str, ...] = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
SPLIT_FILES: dict[str, str] = {"train": "cremad_train.csv", "test": "cremad_test.csv"}


@dataclass(frozen=True, kw_only=True)
class CremadReport:
    rows: tuple[ManifestRow, ...]
    missing: tuple[str, ...]
    """Clips of the split lists with a missing video or audio file (kept unless skip_missing)."""
    unlisted: int
    """Clips found under the root that neither list names (left out)."""


def split_list(split: str) -> list[tuple[str, str]]:
    """OGM-GE's (clip, emotion) list of a split, in its order."""
    text = resources.files("preprocess.data").joinpath(SPLIT_FILES[split]).read_text("utf-8-sig")
    return [(row[0], row[1]) for row in csv.reader(text.splitlines()) if row]


def emotion_of(clip: str) -> str:
    """The emotion code in a clip name; ValueError for a name that is not CREMA-D's."""
    parts = clip.split("_")
    if len(parts) != 4 or parts[2] not in EMOTIONS:
        raise ValueError(f"{clip!r} is not a CREMA-D clip name (actor_sentence_EMOTION_level)")
    return parts[2]


def cremad_rows(root: Path, out: Path, skip_missing: bool = False) -> CremadReport:
    """Manifest rows for every clip of the split lists, media paths relative to `out`."""
    video_dir, audio_dir = root / "VideoFlash", root / "AudioWAV"
    if not video_dir.is_dir() or not audio_dir.is_dir():
        raise FileNotFoundError(f"{root}: expected CREMA-D's VideoFlash/ and AudioWAV/ folders")
    rows: list[ManifestRow] = []
    missing: list[str] = []
    listed: set[str] = set()
    for split in ("train", "test"):
        for clip, emotion in split_list(split):
            if emotion_of(clip) != emotion:
                raise ValueError(f"split list {split}: {clip} is labelled {emotion}")
            listed.add(clip)
            video, audio = video_dir / f"{clip}.flv", audio_dir / f"{clip}.wav"
            if not (video.is_file() and audio.is_file()):
                missing.append(clip)
                if skip_missing:
                    continue
            rows.append(
                ManifestRow(
                    id=clip,
                    split=split,
                    label=emotion,
                    video=relative_to(video, out),
                    audio=relative_to(audio, out),
                )
            )
    on_disk = {p.stem for p in video_dir.glob("*.flv")} | {p.stem for p in audio_dir.glob("*.wav")}
    return CremadReport(rows=tuple(rows), missing=tuple(missing), unlisted=len(on_disk - listed))
