"""One manifest row -> one processed record: frame selection, resizing, JPEG, audio fitting, text.

The transforms are pure functions on arrays (tested on their own); `process_row` decodes the media
with `preprocess.media`, applies them and reports each bad input as a `SampleError` instead of
raising, so one broken file never stops a build.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from preprocess.manifest import ManifestRow
from preprocess.media import (
    MediaError,
    atomic_path,
    decode_audio,
    decode_video_frames,
    to_int16,
    write_wav,
)
from preprocess.schema import (
    AUDIO,
    PAD_ID,
    PAD_TOKEN,
    TEXT,
    UNK_ID,
    UNK_TOKEN,
    VIDEO,
    BuildOptions,
    file_digest,
)

FRAME_TIME_TOLERANCE = 1e-3
"""Seconds: a frame stamped this much before a target time still counts as at the target (rounded
container timestamps, e.g. 1/3 s in a 1/10240 time base)."""
_WORD = re.compile(r"\w+")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, kw_only=True)
class SampleError:
    """One bad input of one sample: one line of errors.jsonl."""

    id: str
    field: str
    path: str | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class ProcessedSample:
    """What the writers need from one sample (text is tokenized later, with the vocabulary)."""

    id: str
    jpegs: tuple[bytes, ...] = ()
    frame_shape: tuple[int, int] = (0, 0)
    """(height, width) of the stored frames (all frames of a clip share it)."""
    audio: np.ndarray | None = None
    """int16 (audio_samples,)."""
    frames_files: dict[str, tuple[str, int]] = field(default_factory=dict)
    """`frames` format files written for this sample: relative path -> (sha256, bytes)."""


class FrameSelector:
    """Online selection at `fps`: keep the first frame at or after each multiple of 1/fps.

    Called once per decoded frame with its time, in order; a frame covers every target it reaches,
    so a source slower than `fps` keeps every frame.
    """

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.next_target = 0.0

    def __call__(self, t: float) -> bool:
        if t < self.next_target - FRAME_TIME_TOLERANCE:
            return False
        steps = math.floor((t + FRAME_TIME_TOLERANCE) / self.period) + 1
        self.next_target = steps * self.period
        return True


def evenly_spaced(count: int, cap: int) -> list[int]:
    """Indices of at most `cap` of `count` items, evenly spaced, first and last included."""
    if count <= cap:
        return list(range(count))
    if cap == 1:
        return [0]
    return [round(i * (count - 1) / (cap - 1)) for i in range(cap)]


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side = `short_side`, aspect ratio kept (rounded)."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def resize_short_side(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (h, w, 3) with min(h, w) = short_side; area filter when shrinking."""
    height, width = rgb.shape[:2]
    new_h, new_w = resized_shape(height, width, short_side)
    if (new_h, new_w) == (height, width):
        return rgb
    shrink = new_h * new_w < height * width
    return cv2.resize(
        rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """uint8 RGB (H, W, 3) -> baseline JPEG (4:2:0), libjpeg-turbo through OpenCV."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise MediaError(f"JPEG encoding failed for a {rgb.shape} frame")
    return buf.tobytes()


def decode_jpeg(data: bytes | np.ndarray) -> np.ndarray:
    """JPEG bytes -> uint8 RGB (H, W, 3) (the inverse of `encode_jpeg`, for checks and tools)."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable JPEG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fit_audio(samples: np.ndarray, length: int) -> np.ndarray:
    """float (N,) -> int16 (length,): tiled then cropped, clipped to [-1, 1] (as the peers)."""
    if samples.size == 0:
        raise ValueError("no samples to fit")
    reps = -(-length // samples.size)  # ceil
    return to_int16(np.tile(samples, reps)[:length])


def tokenize(text: str) -> list[str]:
    """Lowercase words: maximal runs of Unicode word characters (letters, digits, underscore)."""
    return _WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str], min_count: int = 1) -> tuple[str, ...]:
    """Tokens by id: pad, unk, then words seen >= min_count times, most frequent first, then a-z."""
    counts = Counter(w for t in texts for w in tokenize(t))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return (PAD_TOKEN, UNK_TOKEN, *words)


def encode_text(text: str, ids: dict[str, int], length: int) -> np.ndarray:
    """int32 (length,): token ids (unknown words -> UNK_ID), truncated, padded with PAD_ID."""
    tokens = [ids.get(w, UNK_ID) for w in tokenize(text)][:length]
    out = np.full(length, PAD_ID, dtype=np.int32)
    out[: len(tokens)] = tokens
    return out


def frames_folder(sample_id: str) -> str:
    """Folder name of a clip in the `frames` format: the id when it is a safe file name, else a
    hash prefixed with `~` (a safe id never starts with `~`, so names never collide)."""
    if _SAFE_NAME.fullmatch(sample_id) and sample_id not in {".", ".."}:
        return sample_id
    return "~" + hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:32]


def _write_bytes(path: Path, data: bytes) -> tuple[str, int]:
    """Write `data` atomically; its sha256 and size (from memory, not read back)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(data)


def write_frames_format(
    frames_root: Path,
    split: str,
    sample_id: str,
    rgb_frames: Sequence[np.ndarray],
    source_audio: tuple[np.ndarray, int] | None,
    quality: int,
) -> dict[str, tuple[str, int]]:
    """The peers' layout for one clip: `frames/<split>/<folder>/00001.jpg...` at the source
    resolution, and `frames/<split>/<folder>.wav` (mono, source rate). Returns path -> digest."""
    folder = frames_folder(sample_id)
    written: dict[str, tuple[str, int]] = {}
    for i, rgb in enumerate(rgb_frames, start=1):
        rel = f"{split}/{folder}/{i:05d}.jpg"
        written[f"frames/{rel}"] = _write_bytes(frames_root / rel, encode_jpeg(rgb, quality))
    if source_audio is not None:
        rel = f"{split}/{folder}.wav"
        write_wav(frames_root / rel, source_audio[0], source_audio[1])
        digest = file_digest(frames_root / rel)
        written[f"frames/{rel}"] = (digest.sha256, digest.bytes)
    return written


def process_row(
    row: ManifestRow,
    root: Path,
    options: BuildOptions,
    modalities: tuple[str, ...],
    classes: tuple[str, ...],
    frames_root: Path | None,
) -> ProcessedSample | list[SampleError]:
    """Decode and transform one row; every bad input becomes a SampleError (all of them, not only
    the first). `frames_root` set = also write the `frames` format for this clip."""
    errors: list[SampleError] = []

    def bad(field_name: str, path: str | None, reason: str) -> None:
        errors.append(SampleError(id=row.id, field=field_name, path=path, reason=reason))

    if row.label not in classes:
        bad("label", None, f"unknown label {row.label!r} (classes: {', '.join(classes)})")
    for m in modalities:
        if getattr(row, m) is None:
            bad(m, None, f"empty {m} cell in a dataset with {m}")

    jpegs: list[bytes] = []
    shape = (0, 0)
    rgb_frames: list[np.ndarray] = []
    if VIDEO in modalities and row.video is not None:
        path = root / row.video
        try:
            rgb_frames = decode_video_frames(path, FrameSelector(options.fps))
            rgb_frames = [rgb_frames[i] for i in evenly_spaced(len(rgb_frames), options.max_frames)]
            if len(rgb_frames) < options.min_frames:
                raise MediaError(
                    f"clip too short: {len(rgb_frames)} frame(s) at {options.fps} fps, "
                    f"min_frames is {options.min_frames}"
                )
            resized = [resize_short_side(f, options.frame_size) for f in rgb_frames]
            shape = (int(resized[0].shape[0]), int(resized[0].shape[1]))
            if any(f.shape[:2] != shape for f in resized):
                raise MediaError("frame size changes within the clip")
            jpegs = [encode_jpeg(f, options.jpeg_quality) for f in resized]
        except (MediaError, OSError, cv2.error) as e:
            bad(VIDEO, str(path), str(e))

    audio = None
    source_audio = None
    if AUDIO in modalities and row.audio is not None:
        path = root / row.audio
        try:
            samples, _ = decode_audio(path, options.audio_sr)
            seconds = samples.size / options.audio_sr
            if seconds < options.min_audio_seconds:
                raise MediaError(
                    f"clip too short: {seconds:.3f} s of audio, min_audio_seconds is "
                    f"{options.min_audio_seconds}"
                )
            audio = fit_audio(samples, options.audio_samples)
            if frames_root is not None:
                source_audio = decode_audio(path, None)
        except (MediaError, OSError) as e:
            bad(AUDIO, str(path), str(e))

    if TEXT in modalities and row.text is not None:
        if "\x00" in row.text:
            bad(TEXT, None, "text contains a NUL character")
        elif not tokenize(row.text):
            bad(TEXT, None, f"text has no words: {row.text[:40]!r}")

    if errors:
        return errors
    frames_files: dict[str, tuple[str, int]] = {}
    if frames_root is not None:
        frames_files = write_frames_format(
            frames_root, row.split, row.id, rgb_frames, source_audio, options.frames_jpeg_quality
        )
    return ProcessedSample(
        id=row.id, jpegs=tuple(jpegs), frame_shape=shape, audio=audio, frames_files=frames_files
    )
