"""AV-MNIST from MNIST and the Free Spoken Digit Dataset (FSDD), checked against SHA256SUMS.

Each sample pairs one FSDD recording of a digit (the audio, read in place) with `frames` different
MNIST images of the same digit rendered as a short H.264 clip (`frames` frames at `clip_fps`, the
28 x 28 digit centred on a `size` x `size` black frame). Splits never share a recording or an image:

- FSDD's standard split: takes 0-4 of every speaker and digit are test (300 recordings), the rest
  train (2,700); `val_takes` > 0 moves takes 5 .. 4 + val_takes of every speaker and digit to val.
- Images come from MNIST's test set for test samples and from its training set otherwise; train and
  val draw from disjoint parts of each digit's training images. Within a sample the images
  are distinct; across samples an image is reused only when a digit's pool runs out.

By default there is one sample per recording (2,700 train / 300 test, 32 px frames), small enough
for many training runs on a CPU. The visual stream can be degraded so that audio dominates, as in
the original AV-MNIST (Vielzeuf et al., 2018, which removed 75% of the images' energy with PCA):
`pca_energy_removed` keeps only the leading principal components (fit on MNIST train) that explain
`1 - pca_energy_removed` of the variance, then `image_noise` adds Gaussian noise (std, on [0, 1]).
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from preprocess.manifest import ManifestRow, write_manifest
from preprocess.media import write_mp4
from preprocess.parallel import map_in_processes
from preprocess.schema import file_digest
from preprocess.sources import relative_to

MNIST_FILES = {
    "train": ("mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz"),
    "test": ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"),
}
FSDD_DIR = "fsdd/recordings"
TEST_TAKES = 5
_RECORDING = re.compile(r"(\d)_([a-z]+)_(\d+)\.wav")


@dataclass(frozen=True, kw_only=True)
class AVMNISTConfig:
    frames: int = 3
    """MNIST images per clip (distinct, same digit)."""
    clip_fps: int = 3
    size: int = 32
    """Frame side in pixels (even, >= 28: the digit is padded, never resized)."""
    image_noise: float = 0.0
    pca_energy_removed: float = 0.0
    samples_per_recording: int = 1
    val_takes: int = 0
    max_per_digit: int | None = None
    """Per split, keep only the first N recordings of each digit (by speaker, then take)."""
    seed: int = 0
    qp: int = 10
    """H.264 constant quantiser of the rendered clips (lower = closer to the images)."""

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.clip_fps < 1:
            raise ValueError(f"clip_fps must be >= 1, got {self.clip_fps}")
        if self.size < 28 or self.size % 2:
            raise ValueError(f"size must be an even number >= 28, got {self.size}")
        if self.image_noise < 0:
            raise ValueError(f"image_noise must be >= 0, got {self.image_noise}")
        if not 0.0 <= self.pca_energy_removed < 1.0:
            raise ValueError(f"pca_energy_removed must be in [0, 1), got {self.pca_energy_removed}")
        if self.samples_per_recording < 1:
            raise ValueError(
                f"samples_per_recording must be >= 1, got {self.samples_per_recording}"
            )
        if not 0 <= self.val_takes < 45:
            raise ValueError(f"val_takes must be in [0, 45), got {self.val_takes}")
        if self.max_per_digit is not None and self.max_per_digit < 1:
            raise ValueError(f"max_per_digit must be >= 1, got {self.max_per_digit}")
        if not 0 <= self.qp <= 51:
            raise ValueError(f"qp must be in [0, 51], got {self.qp}")


def verify_checksums(source: Path) -> int:
    """Check every file SHA256SUMS lists; ValueError listing each missing or changed file."""
    sums = source / "SHA256SUMS"
    if not sums.is_file():
        raise FileNotFoundError(f"{sums}: missing (is --source the shared data folder?)")
    problems = []
    entries = 0
    for line in sums.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        entries += 1
        path = source / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif file_digest(path).sha256 != expected:
            problems.append(f"{name}: sha256 differs from SHA256SUMS")
    if problems:
        shown = "\n  ".join(problems[:20])
        raise ValueError(f"{sums}: {len(problems)} file(s) fail the check:\n  {shown}")
    return entries


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (MNIST's format): big-endian header, uint8 data."""
    data = gzip.decompress(path.read_bytes())
    magic = int.from_bytes(data[:4], "big")
    if magic not in (2049, 2051):
        raise ValueError(f"{path}: not an IDX1/IDX3 file (magic {magic})")
    ndim = magic - 2048
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def recordings(source: Path) -> list[tuple[int, str, int, Path]]:
    """(digit, speaker, take, path) of every FSDD recording, sorted."""
    found = []
    for path in sorted((source / FSDD_DIR).glob("*.wav")):
        m = _RECORDING.fullmatch(path.name)
        if m is None:
            raise ValueError(f"{path}: not an FSDD recording name (digit_speaker_take.wav)")
        found.append((int(m[1]), m[2], int(m[3]), path))
    if not found:
        raise FileNotFoundError(f"{source / FSDD_DIR}: no recordings")
    return sorted(found)


def recording_split(take: int, val_takes: int) -> str:
    if take < TEST_TAKES:
        return "test"
    return "val" if take < TEST_TAKES + val_takes else "train"


def pca_degrade(train: np.ndarray, removed: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean (784,), projection (784, 784)) keeping the leading principal components of MNIST
    train that explain >= 1 - removed of the variance; removed = 0 -> identity."""
    flat = train.reshape(len(train), -1).astype(np.float64) / 255.0
    mean = flat.mean(axis=0)
    if removed == 0:
        return mean, np.eye(flat.shape[1])
    cov = (flat - mean).T @ (flat - mean) / len(flat)  # (784, 784)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    keep = int(np.searchsorted(np.cumsum(values) / values.sum(), 1.0 - removed) + 1)
    basis = vectors[:, :keep]
    return mean, basis @ basis.T


def render_frames(
    images: np.ndarray,
    size: int,
    mean: np.ndarray,
    projection: np.ndarray,
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """(K, 28, 28) uint8 digits -> (K, size, size, 3) uint8 frames, degraded, padded, grey RGB."""
    flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
    flat = mean + (flat - mean) @ projection
    if noise > 0:
        flat = flat + rng.normal(0.0, noise, size=flat.shape)
    digits = (np.clip(flat, 0.0, 1.0) * 255.0).round().astype(np.uint8).reshape(-1, 28, 28)
    pad = (size - 28) // 2
    frames = np.zeros((len(images), size, size), dtype=np.uint8)
    frames[:, pad : pad + 28, pad : pad + 28] = digits
    return np.repeat(frames[..., None], 3, axis=-1)


def _train_val_pools(
    members: np.ndarray, val_need: int, rng: np.random.Generator
) -> dict[str, list[int]]:
    """Disjoint shuffled pools of one digit's MNIST training images: val takes what it needs
    (at most half), train the rest."""
    shuffled = [int(x) for x in rng.permutation(members)]
    n_val = min(val_need, len(shuffled) // 2)
    return {"val": shuffled[:n_val], "train": shuffled[n_val:]}


def _render_task(args: tuple[Path, np.ndarray, int, int]) -> None:
    path, frames, fps, qp = args
    write_mp4(path, frames, fps, qp=qp)


def avmnist_manifest(source: Path, out: Path, cfg: AVMNISTConfig, workers: int = 1) -> Path:
    """Render the clips into `out/media/`, write `out/manifest.csv` and `out/avmnist.json`."""
    checked = verify_checksums(source)
    images = {s: read_idx(source / MNIST_FILES[s][0]) for s in MNIST_FILES}
    labels = {s: read_idx(source / MNIST_FILES[s][1]) for s in MNIST_FILES}
    rng = np.random.default_rng([cfg.seed, 0])
    mean, projection = pca_degrade(images["train"], cfg.pca_energy_removed)

    chosen: dict[str, list[tuple[int, str, int, Path]]] = {"train": [], "val": [], "test": []}
    for digit, speaker, take, path in recordings(source):
        chosen[recording_split(take, cfg.val_takes)].append((digit, speaker, take, path))
    if cfg.max_per_digit is not None:
        for split, recs in chosen.items():
            kept = []
            for digit in range(10):
                kept += [r for r in recs if r[0] == digit][: cfg.max_per_digit]
            chosen[split] = kept

    rows: list[ManifestRow] = []
    tasks: list[tuple[Path, np.ndarray, int, int]] = []
    counts: dict[str, dict[str, int]] = {}
    images_used: dict[str, list[int]] = {}
    for digit in range(10):
        val_need = sum(r[0] == digit for r in chosen["val"]) * cfg.samples_per_recording
        members = np.flatnonzero(labels["train"] == digit)
        pools = _train_val_pools(members, val_need * cfg.frames, rng)
        pools["test"] = [int(x) for x in rng.permutation(np.flatnonzero(labels["test"] == digit))]
        cursor = dict.fromkeys(pools, 0)
        for split in ("train", "val", "test"):
            mnist_split = "test" if split == "test" else "train"
            for d, speaker, take, wav in chosen[split]:
                if d != digit:
                    continue
                for r in range(cfg.samples_per_recording):
                    pool = pools[split]
                    picks = [pool[(cursor[split] + k) % len(pool)] for k in range(cfg.frames)]
                    cursor[split] += cfg.frames
                    frames = render_frames(
                        images[mnist_split][picks],
                        cfg.size,
                        mean,
                        projection,
                        cfg.image_noise,
                        rng,
                    )
                    sample_id = f"{digit}_{speaker}_{take}" + (
                        f"_{r}" if cfg.samples_per_recording > 1 else ""
                    )
                    images_used[sample_id] = picks
                    video = Path("media") / split / f"{sample_id}.mp4"
                    tasks.append((out / video, frames, cfg.clip_fps, cfg.qp))
                    rows.append(
                        ManifestRow(
                            id=sample_id,
                            split=split,
                            label=str(digit),
                            video=video.as_posix(),
                            audio=relative_to(wav, out),
                        )
                    )
                    per = counts.setdefault(split, {})
                    per[str(digit)] = per.get(str(digit), 0) + 1
    out.mkdir(parents=True, exist_ok=True)
    map_in_processes(_render_task, tasks, workers)
    order = {"train": 0, "val": 1, "test": 2}
    rows.sort(key=lambda r: (order[r.split], r.label, r.id))
    meta = {
        "config": asdict(cfg),
        "source": str(source.resolve()),
        "checked_files": checked,
        "samples": {s: sum(c.values()) for s, c in counts.items()},
        "per_class": counts,
        "mnist_images": images_used,
        "mnist_images_note": "sample id -> MNIST indices (test set for test samples, else train)",
    }
    (out / "avmnist.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return write_manifest(out / "manifest.csv", rows)
