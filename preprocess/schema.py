"""The dataset folder's one schema: `dataset.json` as typed dataclasses, for writers and loaders.

Writers (`preprocess.writers.*`) and loaders (`pipelines.*`) both import the field names, dtypes and
paths from here, so a change to the stored layout is a change in one place. `dataset.json` is the
JSON form of `DatasetInfo`; `load_dataset_info` validates it and rebuilds the dataclasses.

Per sample, every format stores the same fields:

| field   | dtype  | shape          | what                                                        |
|---------|--------|----------------|-------------------------------------------------------------|
| `video` | uint8  | (variable,)    | the kept frames as JPEG, `frame_count` of them              |
| `audio` | <i2    | (audio_samples,) | mono PCM at `audio.sample_rate`, tiled/cropped, int16      |
| `text`  | <i4    | (text.length,) | token ids, 0 = pad, 1 = unknown                             |
| `label` | <i8    | ()             | position of the class in `classes` (sorted)                 |
| `index` | <i8    | ()             | position among the written samples of its split             |
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
FORMATS: tuple[str, ...] = ("ffcv", "dali", "frames")
DATASET_JSON = "dataset.json"
ERRORS_JSONL = "errors.jsonl"
VOCAB_TXT = "vocab.txt"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"

PAD_ID = 0
UNK_ID = 1
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"

# Per-sample field names (FFCV field names, DALI member extensions and batch keys agree).
VIDEO, AUDIO, TEXT, LABEL, INDEX = "video", "audio", "text", "label", "index"
AUDIO_DTYPE = "<i2"
TEXT_DTYPE = "<i4"
SCALAR_DTYPE = "<i8"
AUDIO_SCALE = 32767.0
"""int16 PCM -> float in [-1, 1]: divide by this (the writer multiplied by it and rounded)."""

# DALI tar members per sample `<key>.<ext>`; `key` is the sample's index, zero-padded.
DALI_KEY_DIGITS = 8
DALI_MEMBERS: dict[str, str] = {
    "id": "sample id, UTF-8",
    "frames": "the kept frames' JPEG files concatenated (uint8)",
    "offsets": "<i4 (frame_count + 1,): byte offsets of each JPEG in `frames`, last = its size",
    "audio": "<i2 (audio_samples,): mono PCM",
    "text": "<i4 (text_len,): token ids",
    "label": "<i8 (1,): class position",
    "index": "<i8 (1,): position in the split",
}
_MEMBER_MODALITY = {"frames": VIDEO, "offsets": VIDEO, "audio": AUDIO, "text": TEXT}
"""The modality a member exists for; the others are in every sample."""
DALI_INDEX_VERSION = "v1.2"

AUDIO_FEATURE_KINDS: tuple[str, ...] = ("log_stft", "log_mel")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def ffcv_file(split: str) -> str:
    """Relative path of a split's FFCV file."""
    return f"ffcv/{split}.beton"


def dali_shard(split: str, shard: int) -> str:
    """Relative path of one DALI tar shard; its index file is the same path ending in `.idx`."""
    return f"dali/{split}-{shard:05d}.tar"


def dali_index(shard_path: str) -> str:
    return shard_path.removesuffix(".tar") + ".idx"


def dali_key(index: int) -> str:
    return f"{index:0{DALI_KEY_DIGITS}d}"


def frames_index(split: str) -> str:
    """Relative path of a split's frames index (one JSON object per line, in index order)."""
    return f"frames/{split}.jsonl"


@dataclass(frozen=True, kw_only=True)
class AudioFeatures:
    """What the loaders compute from the stored PCM, on the training device.

    `log_stft`: `log(|STFT(x)| + eps)` with `n_fft`, `hop_length`, `win_length`, a periodic Hann
    window, `center=True` with reflect padding (librosa's and torch.stft's defaults), as the peers.
    `log_mel`: `log(mel(|STFT(x)|^2) + eps)` with `n_mels` HTK-scale triangular filters between
    `f_min` and `f_max`, no filter normalisation (torchaudio's `MelSpectrogram` defaults).
    """

    kind: str = "log_stft"
    n_fft: int = 512
    hop_length: int = 353
    win_length: int = 512
    window: str = "hann"
    center: bool = True
    pad_mode: str = "reflect"
    eps: float = 1e-7
    n_mels: int | None = None
    f_min: float = 0.0
    f_max: float | None = None
    mel_scale: str = "htk"

    def __post_init__(self) -> None:
        if self.kind not in AUDIO_FEATURE_KINDS:
            raise ValueError(f"audio features kind must be one of {AUDIO_FEATURE_KINDS}")
        if self.n_fft < 2 or self.hop_length < 1 or not 1 <= self.win_length <= self.n_fft:
            raise ValueError("n_fft must be >= 2, hop_length >= 1 and 1 <= win_length <= n_fft")
        if self.kind == "log_mel" and (self.n_mels is None or self.n_mels < 1):
            raise ValueError("n_mels must be >= 1 for log_mel features")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def shape(self, num_samples: int) -> tuple[int, int]:
        """(F, T) of the features of `num_samples` samples (e.g. 257 x 188 for 3 s at 22.05 kHz)."""
        bins = self.n_fft // 2 + 1 if self.kind == "log_stft" else int(self.n_mels or 0)
        frames = (
            1 + num_samples // self.hop_length
            if self.center
            else 1 + (num_samples - self.n_fft) // self.hop_length
        )
        return bins, frames


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """Every option of `inforeg-preprocess build` that shapes the output (recorded in dataset.json).

    `workers` and `max_error_rate` are not here: they change how fast a build runs and whether it
    exits non-zero, never the bytes written.
    """

    formats: tuple[str, ...] = ("ffcv", "dali")
    fps: float = 3.0
    """Frames kept per second of video: the first frame at or after each multiple of 1/fps."""
    max_frames: int = 32
    """Cap on kept frames; a longer clip keeps `max_frames` evenly spaced among them."""
    min_frames: int = 1
    """A video with fewer kept frames is an error (clip too short)."""
    frame_size: int = 256
    """Short side of the stored frames, in pixels (the long side keeps the aspect ratio)."""
    jpeg_quality: int = 90
    frames_jpeg_quality: int = 95
    """JPEG quality of the `frames` format (source resolution, the peers' layout)."""
    audio_sr: int = 22050
    audio_seconds: float = 3.0
    min_audio_seconds: float = 0.0
    """Audio shorter than this (before tiling) is an error (clip too short)."""
    text_len: int = 32
    min_word_count: int = 1
    """A train-split word enters the vocabulary when it occurs at least this often."""
    shard_size: int = 1000
    """Samples per DALI tar shard."""
    audio_features: AudioFeatures = field(default_factory=AudioFeatures)
    video_mean: tuple[float, float, float] = IMAGENET_MEAN
    video_std: tuple[float, float, float] = IMAGENET_STD
    classes: tuple[str, ...] | None = None
    """The class list; None = the manifest's labels. A row with another label is an error."""

    def __post_init__(self) -> None:
        if not self.formats or len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats must be a non-empty list without repeats: {self.formats}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"formats: unknown format(s) {unknown}; choose from {FORMATS}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"min_frames must be in [1, max_frames], got {self.min_frames}")
        if not 8 <= self.frame_size <= 4096:
            raise ValueError(f"frame_size must be in [8, 4096], got {self.frame_size}")
        for name in ("jpeg_quality", "frames_jpeg_quality"):
            if not 1 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} must be in [1, 100], got {getattr(self, name)}")
        if not 1000 <= self.audio_sr <= 384000:
            raise ValueError(f"audio_sr must be in [1000, 384000], got {self.audio_sr}")
        if not (math.isfinite(self.audio_seconds) and self.audio_seconds > 0):
            raise ValueError(f"audio_seconds must be > 0, got {self.audio_seconds}")
        if self.audio_samples < self.audio_features.n_fft:
            raise ValueError(
                f"audio_seconds * audio_sr = {self.audio_samples} samples is shorter than "
                f"n_fft = {self.audio_features.n_fft}"
            )
        if not 0 <= self.min_audio_seconds <= self.audio_seconds:
            raise ValueError(
                f"min_audio_seconds must be in [0, audio_seconds], got {self.min_audio_seconds}"
            )
        if self.text_len < 1:
            raise ValueError(f"text_len must be >= 1, got {self.text_len}")
        if self.min_word_count < 1:
            raise ValueError(f"min_word_count must be >= 1, got {self.min_word_count}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if len(self.video_mean) != 3 or len(self.video_std) != 3 or min(self.video_std) <= 0:
            raise ValueError("video_mean and video_std must have 3 values, std > 0")
        if self.classes is not None and (
            not self.classes or len(set(self.classes)) != len(self.classes)
        ):
            raise ValueError(f"classes must be non-empty and without repeats: {self.classes}")

    @property
    def audio_samples(self) -> int:
        """Stored PCM length per sample."""
        return round(self.audio_sr * self.audio_seconds)

    def record_key(self) -> dict[str, Any]:
        """The options that shape one sample's processed record (the staging area's identity)."""
        return {
            "fps": self.fps,
            "max_frames": self.max_frames,
            "min_frames": self.min_frames,
            "frame_size": self.frame_size,
            "jpeg_quality": self.jpeg_quality,
            "frames_jpeg_quality": self.frames_jpeg_quality if "frames" in self.formats else None,
            "audio_sr": self.audio_sr,
            "audio_seconds": self.audio_seconds,
            "min_audio_seconds": self.min_audio_seconds,
            "classes": list(self.classes) if self.classes is not None else None,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> BuildOptions:
        data = dict(data)
        data["formats"] = tuple(data["formats"])
        data["audio_features"] = AudioFeatures(**data["audio_features"])
        data["video_mean"] = tuple(data["video_mean"])
        data["video_std"] = tuple(data["video_std"])
        if data.get("classes") is not None:
            data["classes"] = tuple(data["classes"])
        return BuildOptions(**data)


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    """One stored per-sample field: numpy dtype string and shape (None = variable length)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    description: str


def field_specs(modalities: tuple[str, ...], options: BuildOptions) -> tuple[FieldSpec, ...]:
    """The fields every format stores, for the dataset's modalities, in storage order."""
    specs: list[FieldSpec] = []
    if VIDEO in modalities:
        specs.append(
            FieldSpec(
                name=VIDEO,
                dtype="|u1",
                shape=(None,),
                description="frame_count JPEG frames (short side frame_size), see the formats",
            )
        )
    if AUDIO in modalities:
        specs.append(
            FieldSpec(
                name=AUDIO,
                dtype=AUDIO_DTYPE,
                shape=(options.audio_samples,),
                description="mono PCM at audio_sr, tiled/cropped to audio_seconds; / 32767",
            )
        )
    if TEXT in modalities:
        specs.append(
            FieldSpec(
                name=TEXT,
                dtype=TEXT_DTYPE,
                shape=(options.text_len,),
                description=f"token ids, {PAD_ID} = pad, {UNK_ID} = unknown, see vocab.txt",
            )
        )
    specs.append(FieldSpec(name=LABEL, dtype=SCALAR_DTYPE, shape=(), description="class position"))
    specs.append(FieldSpec(name=INDEX, dtype=SCALAR_DTYPE, shape=(), description="split position"))
    return tuple(specs)


@dataclass(frozen=True, kw_only=True)
class FileDigest:
    sha256: str
    bytes: int


def file_digest(path: Path) -> FileDigest:
    """sha256 and size of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return FileDigest(sha256=h.hexdigest(), bytes=size)


@dataclass(frozen=True, kw_only=True)
class SplitInfo:
    """What was written for one split."""

    samples: int
    per_class: dict[str, int]
    errors: int
    frames: int = 0
    """Total kept frames over the split's samples (0 without video)."""
    ffcv: str | None = None
    dali: tuple[str, ...] = ()
    frames_index: str | None = None


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """`dataset.json`: everything a loader needs, and everything `verify` checks."""

    format_version: int
    tool_version: str
    manifest_path: str
    manifest_sha256: str
    config_sha256: str
    options: BuildOptions
    classes: tuple[str, ...]
    modalities: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    audio_feature_shape: tuple[int, int] | None
    vocab_size: int | None
    splits: dict[str, SplitInfo]
    errors: int
    files: dict[str, FileDigest]
    """Every output file (relative path) with its sha256 and size; dataset.json excepted."""

    @property
    def dali_members(self) -> tuple[str, ...]:
        """The tar member extensions of each sample, in tar order."""
        return tuple(m for m in DALI_MEMBERS if _MEMBER_MODALITY.get(m) in (None, *self.modalities))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = self.options.to_json()
        return data


def save_dataset_info(path: Path, info: DatasetInfo) -> None:
    """Write dataset.json atomically (temporary name, fsync, rename)."""
    from preprocess.media import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info.to_json(), indent=1, sort_keys=True) + "\n")


def load_dataset_info(root: str | Path) -> DatasetInfo:
    """Read `root/dataset.json`; ValueError naming the file when it is missing or malformed."""
    path = Path(root) / DATASET_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ValueError(f"{path}: no dataset.json (not a built dataset folder?)") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    try:
        if data["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"format_version {data['format_version']}, this tool reads {FORMAT_VERSION}"
            )
        return DatasetInfo(
            format_version=data["format_version"],
            tool_version=data["tool_version"],
            manifest_path=data["manifest_path"],
            manifest_sha256=data["manifest_sha256"],
            config_sha256=data["config_sha256"],
            options=BuildOptions.from_json(data["options"]),
            classes=tuple(data["classes"]),
            modalities=tuple(data["modalities"]),
            fields=tuple(
                FieldSpec(
                    name=f["name"],
                    dtype=f["dtype"],
                    shape=tuple(f["shape"]),
                    description=f["description"],
                )
                for f in data["fields"]
            ),
            audio_feature_shape=(
                None
                if data["audio_feature_shape"] is None
                else (int(data["audio_feature_shape"][0]), int(data["audio_feature_shape"][1]))
            ),
            vocab_size=data["vocab_size"],
            splits={
                name: SplitInfo(**{**s, "dali": tuple(s["dali"])})
                for name, s in data["splits"].items()
            },
            errors=data["errors"],
            files={name: FileDigest(**d) for name, d in data["files"].items()},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed dataset.json: {e!r}") from e
