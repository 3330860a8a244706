"""The dataset manifest: the one CSV every tool of the project reads.

Header: ``id,split,label,video,audio,text``.

- ``id``: unique, non-empty sample identifier.
- ``split``: ``train``, ``val`` or ``test``.
- ``label``: a class name (non-empty).
- ``video`` / ``audio``: paths relative to the manifest's folder; empty = modality absent. A video
  file may carry the audio track too: then ``audio`` may name the same file.
- ``text``: the text itself; empty = modality absent.

`read_manifest` validates every row and raises one `ManifestError` that lists every bad row with
its row number (the header is row 1, the first sample row 2), instead of failing on the first.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

COLUMNS: tuple[str, ...] = ("id", "split", "label", "video", "audio", "text")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MODALITY_COLUMNS: tuple[str, ...] = ("video", "audio", "text")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and every bad row."""

    def __init__(self, path: Path, problems: Sequence[str]):
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"manifest {path}: {len(self.problems)} problem(s):\n{lines}")


@dataclass(frozen=True, kw_only=True)
class ManifestRow:
    """One sample. Media paths are relative to the manifest's folder; None = modality absent."""

    id: str
    split: str
    label: str
    video: str | None = None
    audio: str | None = None
    text: str | None = None

    def modalities(self) -> tuple[str, ...]:
        """The modalities this sample has, in `MODALITY_COLUMNS` order."""
        return tuple(m for m in MODALITY_COLUMNS if getattr(self, m) is not None)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A validated manifest: its rows in file order and the folder media paths are relative to."""

    path: Path
    rows: tuple[ManifestRow, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """The absolute path of a media cell."""
        return (self.root / relative).resolve()

    def split(self, name: str) -> tuple[ManifestRow, ...]:
        return tuple(r for r in self.rows if r.split == name)

    def classes(self) -> tuple[str, ...]:
        """Class names, sorted; a class's position is its integer label everywhere downstream."""
        return tuple(sorted({r.label for r in self.rows}))

    def modalities(self) -> tuple[str, ...]:
        """Modalities present in at least one row, in `MODALITY_COLUMNS` order."""
        present = {m for r in self.rows for m in r.modalities()}
        return tuple(m for m in MODALITY_COLUMNS if m in present)

    def digest(self) -> str:
        """sha256 of the manifest file's bytes (recorded in every output built from it)."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def _cell(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _text_cell(value: str | None) -> str | None:
    # Text is kept as written (inner whitespace matters to a tokenizer); only all-blank is absent.
    if value is None or not value.strip():
        return None
    return value


def parse_rows(path: Path, lines: Iterable[str]) -> tuple[ManifestRow, ...]:
    """Parse and validate CSV lines; raise `ManifestError` listing every bad row."""
    reader = csv.DictReader(lines)
    header = tuple(reader.fieldnames or ())
    if header != COLUMNS:
        raise ManifestError(
            path,
            [f"row 1: header must be {','.join(COLUMNS)}, got {','.join(header) or '(empty)'}"],
        )
    problems: list[str] = []
    rows: list[ManifestRow] = []
    first_row_of_id: dict[str, int] = {}
    for row_number, raw in enumerate(reader, start=2):
        if None in raw:  # more cells than columns
            problems.append(f"row {row_number}: {len(COLUMNS) + len(raw[None])} cells, expected 6")
            continue
        row_problems: list[str] = []
        sample_id = _cell(raw["id"])
        split = _cell(raw["split"])
        label = _cell(raw["label"])
        if sample_id is None:
            row_problems.append("empty id")
        elif sample_id in first_row_of_id:
            row_problems.append(
                f"duplicate id {sample_id!r} (first on row {first_row_of_id[sample_id]})"
            )
        if split not in SPLITS:
            row_problems.append(f"unknown split {raw['split']!r} (expected one of {SPLITS})")
        if label is None:
            row_problems.append("missing label")
        video, audio, text = _cell(raw["video"]), _cell(raw["audio"]), _text_cell(raw["text"])
        for column, value in (("video", video), ("audio", audio)):
            if value is not None and Path(value).is_absolute():
                row_problems.append(f"{column} path {value!r} must be relative to the manifest")
        if video is None and audio is None and text is None:
            row_problems.append("no modality (video, audio and text are all empty)")
        if sample_id is not None and sample_id not in first_row_of_id:
            first_row_of_id[sample_id] = row_number
        if row_problems:
            problems.append(f"row {row_number}: " + "; ".join(row_problems))
            continue
        assert sample_id is not None and split is not None and label is not None
        rows.append(
            ManifestRow(id=sample_id, split=split, label=label, video=video, audio=audio, text=text)
        )
    if problems:
        raise ManifestError(path, problems)
    if not rows:
        raise ManifestError(path, ["no sample rows"])
    return tuple(rows)


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest CSV. Raises `ManifestError` or FileNotFoundError."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        rows = parse_rows(path, f)
    return Manifest(path=path, rows=rows)


def write_manifest(path: str | Path, rows: Iterable[ManifestRow]) -> Path:
    """Write rows as a manifest CSV (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r.id, r.split, r.label, r.video or "", r.audio or "", r.text or ""])
    tmp.replace(path)
    return path
