"""The plain-PyTorch loader: what the peers (OGM-GE / InfoReg `CramedDataset`) do, per sample.

It reads the `frames` format (JPEG frames at the source resolution, one folder per clip, and the
wav at its source rate) and, per sample in `DataLoader` worker processes: loads the wav, resamples
it to `audio_sr`, tiles/crops it to `audio_seconds`, computes the features; opens and decodes the
K chosen frames with PIL, RandomResizedCrop + flip (train) or resize (eval) to size x size, to
float, normalises. It is the oracle of the tests and the baseline of `inforeg-bench loader`, so it
does no more than the peers and nothing slower; its frame choice, crops and flips come from
`pipelines.contract` so that it matches the other loaders sample for sample.

Deliberate differences from the peers' code: the K frames are those the contract chooses (the
peers' `image_samples[i]` takes the first K of an unsorted `os.listdir`), the resampler is
FFmpeg's (the build's; the peers' librosa uses soxr), and the batch layout is the contract's
(B, K, 3, H, W).
"""

from __future__ import annotations

import hashlib
import io
import json
import wave
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import av
import numpy as np
import torch
from einops import reduce
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipelines.contract import (
    TEXT_MASK,
    Batch,
    CursorLoader,
    EpochCursor,
    LoaderError,
    LoaderSpec,
    audio_features,
    batch_slices,
    choose_frames,
    normalize_video,
    num_batches,
    spec_order,
    video_params,
)
from preprocess.schema import (
    AUDIO,
    AUDIO_SCALE,
    INDEX,
    LABEL,
    PAD_ID,
    TEXT,
    VIDEO,
    DatasetInfo,
    frames_index,
)

FRAMES_DIR = "frames"


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """float (N,) at `orig_sr` -> float32 (about N * new_sr / orig_sr,) at `new_sr`.

    FFmpeg's resampler (swr, through PyAV) with its defaults: the one `inforeg-preprocess build`
    used for the stored PCM, so the reference's audio matches the other loaders' as closely as the
    frames format's re-quantised wav allows (the peers use librosa's soxr; any band-limited
    resampler is equivalent for them). A few milliseconds for 3 s of audio.
    """
    if orig_sr == new_sr:
        return x.astype(np.float32, copy=False)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=new_sr)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(x, dtype=np.float32)[None, :], format="flt", layout="mono"
    )
    frame.sample_rate = orig_sr
    chunks = [*resampler.resample(frame), *resampler.resample(None)]
    return np.concatenate([c.to_ndarray().reshape(-1) for c in chunks]).astype(np.float32)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Tile then crop to `length`, clip to [-1, 1] (the peers' `np.tile(...)[:length]`)."""
    reps = -(-length // x.size)
    return np.clip(np.tile(x, reps)[:length], -1.0, 1.0)


def read_wav(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """16-bit PCM wav bytes -> (float32 (N,) mono in [-1, 1], rate); ValueError naming `name`."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2:
                raise ValueError(f"{w.getsampwidth() * 8}-bit samples, expected 16-bit PCM")
            rate, channels = w.getframerate(), w.getnchannels()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{name}: not a readable wav: {e}") from e
    if pcm.size == 0:
        raise ValueError(f"{name}: no audio samples")
    if channels > 1:  # interleaved channels, averaged (float64, as numpy averages int16)
        pcm = reduce(pcm.astype(np.float64), "(n c) -> n", "mean", c=channels)
    return pcm.astype(np.float32) / AUDIO_SCALE, rate


def crop_resize(img: Image.Image, box: tuple[int, ...], size: int, flip: bool) -> np.ndarray:
    """torchvision's `resized_crop` on a PIL image, then the flip: uint8 (size, size, 3).

    Crop first, then resize (PIL's `resize(box=...)` would let pixels outside the box into the
    filter at its edges, which torchvision does not).
    """
    top, left, h, w = box
    img = img.crop((left, top, left + w, top + h)).resize((size, size), Image.Resampling.BILINEAR)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(img)


class FramesDataset(Dataset[dict[str, Any]]):
    """One split of the `frames` format; item (epoch, index) -> one sample (the epoch picks the
    augmentation, so workers need no state)."""

    def __init__(self, spec: LoaderSpec, info: DatasetInfo, entries: Sequence[Mapping[str, Any]]):
        self.spec, self.info = spec, info
        self.entries = entries
        self.root = spec.data_dir / FRAMES_DIR
        self.digests = {k: v.sha256 for k, v in info.files.items()} if spec.verify else None

    def __len__(self) -> int:
        return len(self.entries)

    def _read(self, rel: str) -> bytes:
        """A file of the frames format (path relative to frames/), checked against its sha256."""
        path = self.root / rel
        data = path.read_bytes()
        if self.digests is not None:
            want = self.digests.get(f"{FRAMES_DIR}/{rel}")
            if want is None:
                raise ValueError(f"{path}: not listed in dataset.json")
            if hashlib.sha256(data).hexdigest() != want:
                raise ValueError(f"{path}: sha256 mismatch with dataset.json (corrupt file)")
        return data

    def _audio(self, entry: Mapping[str, Any]) -> np.ndarray:
        rel = entry["wav"]
        samples, rate = read_wav(self._read(rel), str(self.root / rel))
        options = self.info.options
        return fit_length(resample(samples, rate, options.audio_sr), options.audio_samples)

    def _open(self, folder: str, frame: int) -> Image.Image:
        return Image.open(io.BytesIO(self._read(f"{folder}/{frame + 1:05d}.jpg")))

    def _video(self, entry: Mapping[str, Any], epoch: int) -> np.ndarray:
        """uint8 (K, size, size, 3)."""
        spec, folder = self.spec, entry["folder"]
        index, count = np.array([entry["index"]]), np.array([int(entry["frame_count"])])
        chosen = choose_frames(
            seed=spec.seed,
            epoch=epoch,
            indices=index,
            frame_counts=count,
            k=spec.frames,
            train=spec.train,
        )[0]
        images = {int(chosen[0]): self._open(folder, int(chosen[0]))}
        width, height = images[int(chosen[0])].size  # every frame of a clip has this size
        params = video_params(
            seed=spec.seed,
            epoch=epoch,
            indices=index,
            frame_counts=count,
            heights=np.array([height]),
            widths=np.array([width]),
            k=spec.frames,
            train=spec.train,
        )
        out = np.empty((spec.frames, spec.size, spec.size, 3), dtype=np.uint8)
        for slot, frame in enumerate(int(f) for f in chosen):
            img = images.pop(frame) if frame in images else self._open(folder, frame)
            img = img.convert("RGB")
            if img.size != (width, height):
                raise ValueError(f"frame {frame + 1} is {img.size}, not {(width, height)}")
            box = tuple(int(v) for v in params.boxes[0, slot])
            out[slot] = crop_resize(img, box, spec.size, bool(params.flips[0, slot]))
        return out

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        entry = self.entries[index]
        sample: dict[str, Any] = {
            LABEL: torch.tensor(int(entry["label"])),
            INDEX: torch.tensor(int(entry["index"])),
        }
        modalities, options = self.info.modalities, self.info.options
        try:
            if VIDEO in modalities:
                frames = torch.from_numpy(self._video(entry, epoch))
                sample[VIDEO] = (
                    normalize_video(frames, options.video_mean, options.video_std)
                    if self.spec.finish
                    else frames
                )
            if AUDIO in modalities:
                wave_ = self._audio(entry)
                sample[AUDIO] = (
                    audio_features(
                        torch.from_numpy(wave_)[None], options.audio_features, options.audio_sr
                    )[0]
                    if self.spec.finish
                    else torch.from_numpy((wave_ * AUDIO_SCALE).round().astype(np.int16))
                )
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise LoaderError(
                f"{self.spec.split} sample {index} ({entry.get('id')!r}, {self.root}): {e}"
            ) from e
        if TEXT in modalities:
            sample[TEXT] = torch.tensor(entry["text"], dtype=torch.int32)
        return sample


def _collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


class _EpochBatches:
    """The batch sampler: the current plan's batches as lists of (epoch, index) keys."""

    def __init__(self) -> None:
        self.epoch = 0
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            yield [(self.epoch, int(i)) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)


def read_frames_index(spec: LoaderSpec, info: DatasetInfo) -> list[dict[str, Any]]:
    """The split's entries in index order, checked (file digest, count, indices 0..N-1)."""
    split = info.splits.get(spec.split)
    if split is None or split.samples == 0:
        raise ValueError(f"{spec.data_dir}: no split {spec.split!r} (has {sorted(info.splits)})")
    rel = frames_index(spec.split)
    path = spec.data_dir / rel
    if "frames" not in info.options.formats or not path.is_file():
        raise ValueError(f"{path}: no frames format (rebuild with --formats including frames)")
    data = path.read_bytes()
    if spec.verify and hashlib.sha256(data).hexdigest() != info.files[rel].sha256:
        raise ValueError(f"{path}: sha256 mismatch with dataset.json (corrupt file)")
    try:
        entries = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: malformed index: {e}") from e
    if [e.get("index") for e in entries] != list(range(split.samples)):
        raise ValueError(f"{path}: expected indices 0..{split.samples - 1} in order")
    return entries


class ReferenceLoader(CursorLoader):
    """`contract.Loader` over the frames format with a `torch.utils.data.DataLoader`."""

    def __init__(self, spec: LoaderSpec, info: DatasetInfo):
        self.spec, self.info = spec, info
        self.entries = read_frames_index(spec, info)
        self.n = len(self.entries)
        per_rank = spec_order(spec, self.n, 0).size
        self.cursor = EpochCursor(num_batches(per_rank, spec.batch_size, spec.train))
        self.device = torch.device(spec.device)
        self._batches = _EpochBatches()
        self._loader = DataLoader(
            FramesDataset(spec, info, self.entries),
            batch_sampler=self._batches,
            num_workers=spec.workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            timeout=spec.timeout_s,
            prefetch_factor=spec.prefetch,
            persistent_workers=True,
        )

    def __iter__(self) -> Iterator[Batch]:
        start = self.cursor.start()
        order = spec_order(self.spec, self.n, self.cursor.epoch)
        self._batches.epoch = self.cursor.epoch
        self._batches.batches = list(batch_slices(order, self.spec.batch_size, start))
        for host in self._loader:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in host.items()}
            if TEXT in batch and self.spec.finish:
                batch[TEXT] = batch[TEXT].to(torch.int64)
                batch[TEXT_MASK] = batch[TEXT] != PAD_ID
            self.cursor.batches += 1
            yield batch
