"""The batch contract as code: the spec every loader is built from, the pure functions they share.

Every loader (FFCV, DALI, the plain-PyTorch reference) yields, per step, a dict of tensors on the
spec's device, with the keys of the dataset's modalities only:

    video      float32 (B, K, 3, H, W)  normalised with dataset.json's mean/std
    audio      float32 (B, 1, F, T)     features per dataset.json's `AudioFeatures`
    text       int64   (B, L)           token ids
    text_mask  bool    (B, L)           True where a real token is
    label      int64   (B,)
    index      int64   (B,)             the sample's position in its split

So that results never depend on the loader, everything random is a pure function here, not a
stateful RNG inside a loader: the epoch's sample order for a rank (`epoch_order`), and each
sample's augmentation (`video_params`: which K frames, the RandomResizedCrop box and the flip of
each frame) from a counter-based hash of (seed, epoch, sample index). Two loaders given the same
spec therefore draw the same samples in the same order with the same crops, and a resumed epoch
yields exactly the batches an uninterrupted one would have. The device stage (`finish_batch`:
uint8 frames -> normalised float, int16 PCM -> audio features) is one function used by all.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from preprocess.schema import (
    AUDIO,
    AUDIO_SCALE,
    INDEX,
    LABEL,
    PAD_ID,
    TEXT,
    VIDEO,
    AudioFeatures,
    DatasetInfo,
)

ORDERS: tuple[str, ...] = ("random", "quasi_random", "sequential")
TEXT_MASK = "text_mask"

# RandomResizedCrop as torchvision's defaults (the peers use them).
CROP_SCALE: tuple[float, float] = (0.08, 1.0)
CROP_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
CROP_TRIES = 10


class LoaderError(RuntimeError):
    """A loader could not produce a correct batch (corrupt bytes, a failed or stalled pipeline);
    every loader raises it (or a subclass), and the message names the file and the samples."""


@dataclass(frozen=True, kw_only=True)
class LoaderSpec:
    """Everything that decides what a loader yields (and how fast). One spec, any pipeline."""

    pipeline: str
    """Which loader: `ffcv`, `dali` or `reference` (see `pipelines.build_loader`)."""
    data_dir: Path
    """A dataset folder written by `inforeg-preprocess build` (holds dataset.json)."""
    split: str = "train"
    train: bool = True
    """Train: a new random order and augmentation per epoch, full batches only. Eval: sequential,
    evenly spaced frames, resize, every sample once across ranks (the last batch may be short)."""
    batch_size: int = 64
    """Per rank."""
    frames: int = 3
    """K, frames per sample."""
    size: int = 224
    """H = W of the output frames."""
    workers: int = 2
    """CPU parallelism: FFCV/DALI threads, or DataLoader processes for the reference."""
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    device: str | torch.device = "cpu"
    """Where batches are yielded and the finishing stage runs (`cuda` when training on GPU)."""
    order: str | None = None
    """Train order: `random` (default), `quasi_random` (page-local, for `os_cache=False`) or
    `sequential`. Eval is always sequential; None = the mode's default."""
    os_cache: bool = True
    """FFCV: read through the OS page cache (mmap) rather than the process's own page cache."""
    finish: bool = True
    """False: yield the host batch before the device stage (uint8 (B, K, H, W, 3) frames, int16
    (B, N) PCM, int32 text), for benchmarks; such a batch may be a view of the pipeline's buffers,
    valid until the next batch is drawn. True: the contract above (always fresh tensors)."""
    verify: bool = True
    """Check the files read against dataset.json's sha256 before trusting their bytes."""
    timeout_s: float = 120.0
    """A batch not ready after this many seconds is an error (a stalled pipeline never hangs)."""
    prefetch: int = 3
    """Batches prepared ahead of the consumer."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not self.pipeline:
            raise ValueError("pipeline must be named (ffcv, dali or reference)")
        if not self.split:
            raise ValueError("split must be a non-empty split name")
        for name in ("batch_size", "frames", "size", "workers", "world_size", "prefetch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")
        if self.order is not None and self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if not self.train and self.order not in (None, "sequential"):
            raise ValueError(f"order {self.order!r} in eval mode: eval is always sequential")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        try:
            object.__setattr__(self, "device", str(torch.device(self.device)))
        except RuntimeError as e:
            raise ValueError(f"device {self.device!r} is not a torch device: {e}") from e

    @property
    def traversal(self) -> str:
        """The order actually used: `order`, or the mode's default."""
        if self.order is not None:
            return self.order
        return "random" if self.train else "sequential"


Batch = dict[str, torch.Tensor]


@runtime_checkable
class Loader(Protocol):
    """What the trainer builds through `pipelines.build_loader(spec)` and iterates.

    `state_dict()` is {"epoch", "batches"}: batches already yielded in that epoch. A loader given
    it back with `load_state_dict` yields the rest of that epoch, exactly the batches an
    uninterrupted run would have yielded. A completed epoch iterated again restarts it from its
    first batch; `set_epoch(e)` starts epoch e (a new order, the same for a given seed and e).
    """

    spec: LoaderSpec
    info: DatasetInfo

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same on every rank in train mode)."""
        ...

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, int]: ...

    def load_state_dict(self, state: Mapping[str, int]) -> None: ...


class CursorLoader:
    """The `Loader` protocol's bookkeeping for a loader that keeps its place in `self.cursor`."""

    cursor: EpochCursor

    def __len__(self) -> int:
        return self.cursor.num_batches

    def set_epoch(self, epoch: int) -> None:
        self.cursor.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.cursor.state_dict()

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.cursor.load_state_dict(state)


class EpochCursor:
    """(epoch, batches yielded) of one loader; the bookkeeping every loader shares."""

    def __init__(self, num_batches: int):
        self.num_batches = num_batches
        self.epoch = 0
        self.batches = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch, self.batches = int(epoch), 0

    def start(self) -> int:
        """The batch an iteration starts at (a completed epoch restarts from 0)."""
        if self.batches >= self.num_batches:
            self.batches = 0
        return self.batches

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if set(state) != {"epoch", "batches"}:
            raise ValueError(f"loader state must have keys epoch, batches; got {sorted(state)}")
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if epoch < 0:
            raise ValueError(f"loader state: epoch must be >= 0, got {epoch}")
        if not 0 <= batches <= self.num_batches:
            raise ValueError(
                f"loader state: batches must be in [0, {self.num_batches}], got {batches}"
            )
        self.epoch, self.batches = epoch, batches


# --- counter-based randomness -------------------------------------------------------------------

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
# Independent streams of draws per (seed, epoch, index).
STREAM_ORDER, STREAM_FRAMES, STREAM_CROP, STREAM_FLIP = 1, 2, 3, 4


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (wrapping): a bijection whose outputs look independent.

    Plain arithmetic only, so the same code compiles with numba (`numba.njit(splitmix64)`) on
    uint64 scalars; numpy arrays wrap silently on overflow.
    """
    z = x + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def counter_hash(seed: int, epoch: int, stream: int, index: np.ndarray) -> np.ndarray:
    """uint64 hash of (seed, epoch, stream, index), elementwise over `index` (any shape)."""
    with np.errstate(over="ignore"):
        key = np.full(1, seed, dtype=np.uint64)
        key = splitmix64(splitmix64(splitmix64(key) + np.uint64(epoch)) + np.uint64(stream))
        return splitmix64(key + np.asarray(index, dtype=np.uint64))


def uniforms(seed: int, epoch: int, stream: int, index: np.ndarray, draws: int) -> np.ndarray:
    """float64 (*index.shape, draws) in [0, 1): the `draws` uniforms of each index in a stream."""
    with np.errstate(over="ignore"):
        base = counter_hash(seed, epoch, stream, index)[..., None]
        counter = np.arange(1, draws + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
        bits = splitmix64(base ^ counter)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# --- the epoch's order --------------------------------------------------------------------------


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    keys = counter_hash(seed, epoch, STREAM_ORDER, np.arange(n))
    return np.argsort(keys, kind="stable").astype(np.int64)


def _quasi_random(seed: int, epoch: int, groups: np.ndarray, window: int) -> np.ndarray:
    """Groups (pages) in a random order; samples shuffled within windows of `window` groups, so a
    batch reads few pages while still mixing samples of several."""
    uniq, group_of = np.unique(groups, return_inverse=True)
    group_rank = np.empty(uniq.size, dtype=np.int64)
    group_rank[_permutation(seed + 1, epoch, uniq.size)] = np.arange(uniq.size)
    windows = group_rank[group_of] // window
    keys = counter_hash(seed, epoch, STREAM_ORDER, np.arange(groups.size))
    return np.lexsort((keys, windows)).astype(np.int64)


def epoch_order(
    *,
    n: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    batch_size: int,
    train: bool,
    order: str = "random",
    groups: np.ndarray | None = None,
    window: int = 8,
) -> np.ndarray:
    """int64 (samples of this rank,): the sample indices `rank` reads in `epoch`, in order.

    Train: the split's order for the epoch (`random`: a seeded permutation; `quasi_random`: see
    `_quasi_random`, `groups` = each sample's page or shard, None = one group per sample;
    `sequential`), cut to `n // (world_size * batch_size)` full batches per rank: every rank takes
    the same number of steps (DeepSpeed needs it), the < world_size * batch_size remainder is
    dropped (a different set each epoch unless sequential). Rank r reads the r-th contiguous part.
    Eval: 0..n-1 in order, split in `world_size` contiguous parts (sizes differ by at most one),
    every sample exactly once across ranks.
    """
    if n < 1:
        raise ValueError(f"the split has no samples (n={n})")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if not train:
        return np.array_split(np.arange(n, dtype=np.int64), world_size)[rank]
    if order == "random":
        perm = _permutation(seed, epoch, n)
    elif order == "sequential":
        perm = np.arange(n, dtype=np.int64)
    elif order == "quasi_random":
        g = np.arange(n) if groups is None else np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups must have one entry per sample ({n}), got shape {g.shape}")
        perm = _quasi_random(seed, epoch, g, window)
    else:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    steps = n // (world_size * batch_size)
    if steps == 0:
        raise ValueError(
            f"batch_size {batch_size} x world_size {world_size} exceeds the split's {n} samples: "
            "no full batch per rank"
        )
    per_rank = steps * batch_size
    return perm[rank * per_rank : (rank + 1) * per_rank]


def num_batches(samples: int, batch_size: int, train: bool) -> int:
    """Batches from `samples` indices: full ones only in train, the last may be short in eval."""
    return samples // batch_size if train else -(-samples // batch_size)


def batch_slices(order: np.ndarray, batch_size: int, start: int = 0) -> Iterator[np.ndarray]:
    """The batches of an epoch's order (int64 index arrays), from batch `start` on."""
    for b in range(start, -(-order.size // batch_size)):
        yield order[b * batch_size : (b + 1) * batch_size]


def spec_order(
    spec: LoaderSpec, n: int, epoch: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """`epoch_order` for a spec (what every loader calls)."""
    return epoch_order(
        n=n,
        seed=spec.seed,
        epoch=epoch,
        rank=spec.rank,
        world_size=spec.world_size,
        batch_size=spec.batch_size,
        train=spec.train,
        order=spec.traversal,
        groups=groups,
    )


# --- per-sample augmentation --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class VideoParams:
    """What a loader does to the frames of n samples (row i = the i-th of the given indices)."""

    frames: np.ndarray
    """int64 (n, K): the chosen frames, ascending (positions among the sample's stored frames)."""
    boxes: np.ndarray
    """int64 (n, K, 4): per chosen frame, the crop (top, left, height, width) in its pixels, which
    is resized to size x size (eval: the whole frame)."""
    flips: np.ndarray
    """bool (n, K): flip the frame horizontally after the crop."""


def choose_frames(
    *, seed: int, epoch: int, indices: np.ndarray, frame_counts: np.ndarray, k: int, train: bool
) -> np.ndarray:
    """int64 (n, K), ascending: which of each sample's `frame_count` frames are read.

    Train: K distinct frames at random (with replacement only when frame_count < K). Eval: the
    centres of K equal segments of the clip (repeats when frame_count < K).
    """
    counts = np.asarray(frame_counts, dtype=np.int64)
    if counts.size and counts.min() < 1:
        bad = int(np.asarray(indices)[np.argmin(counts)])
        raise ValueError(f"sample {bad} has no frames")
    if not train:
        slots = np.arange(k, dtype=np.int64)
        return (2 * slots[None, :] + 1) * counts[:, None] // (2 * k)
    width = max(int(counts.max(initial=1)), k)
    u = uniforms(seed, epoch, STREAM_FRAMES, np.asarray(indices), width)  # (n, width)
    # Without replacement: the K frames with the smallest keys among the first frame_count.
    keys = np.where(np.arange(width)[None, :] < counts[:, None], u, np.inf)
    distinct = np.argsort(keys, axis=1, kind="stable")[:, :k]
    # With replacement (frame_count < K): K uniform draws.
    repeated = np.floor(u[:, :k] * counts[:, None]).astype(np.int64)
    chosen = np.where((counts >= k)[:, None], distinct, repeated)
    return np.sort(chosen, axis=1).astype(np.int64)


def crop_boxes(u: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """torchvision's RandomResizedCrop.get_params from uniforms, vectorised.

    u: float64 (..., 2 * CROP_TRIES + 2); heights, widths broadcast to u's leading shape.
    Returns int64 (..., 4) = (top, left, height, width): the first of CROP_TRIES (area in
    CROP_SCALE, log-uniform aspect ratio in CROP_RATIO) that fits, else the centre crop clamped to
    the ratio range, as torchvision.
    """
    height = np.asarray(heights, dtype=np.float64)[..., None]
    width = np.asarray(widths, dtype=np.float64)[..., None]
    area = height * width
    scale = CROP_SCALE[0] + u[..., 0:CROP_TRIES] * (CROP_SCALE[1] - CROP_SCALE[0])
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = np.exp(lo + u[..., CROP_TRIES : 2 * CROP_TRIES] * (hi - lo))
    w = np.rint(np.sqrt(area * scale * ratio))
    h = np.rint(np.sqrt(area * scale / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = np.argmax(fits, axis=-1)[..., None]
    any_fit = fits.any(axis=-1)
    w_try = np.take_along_axis(w, first, axis=-1)[..., 0]
    h_try = np.take_along_axis(h, first, axis=-1)[..., 0]
    height, width = height[..., 0], width[..., 0]
    # Fallback: the whole frame, cut to the nearest allowed aspect ratio, centred.
    in_ratio = width / height
    w_fb = np.where(in_ratio > CROP_RATIO[1], np.rint(height * CROP_RATIO[1]), width)
    h_fb = np.where(in_ratio < CROP_RATIO[0], np.rint(width / CROP_RATIO[0]), height)
    w_out = np.where(any_fit, w_try, w_fb)
    h_out = np.where(any_fit, h_try, h_fb)
    top_try = np.floor(u[..., 2 * CROP_TRIES] * (height - h_out + 1))
    left_try = np.floor(u[..., 2 * CROP_TRIES + 1] * (width - w_out + 1))
    top = np.where(any_fit, top_try, (height - h_out) // 2)
    left = np.where(any_fit, left_try, (width - w_out) // 2)
    return np.stack([top, left, h_out, w_out], axis=-1).astype(np.int64)


def video_params(
    *,
    seed: int,
    epoch: int,
    indices: np.ndarray,
    frame_counts: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    k: int,
    train: bool,
) -> VideoParams:
    """The frames, crops and flips of samples `indices` (n,) in `epoch`, as a pure function.

    `frame_counts`, `heights`, `widths` (n,) describe each sample's stored frames in the format
    the loader reads; the draws depend only on (seed, epoch, index), so loaders reading frames of
    different sizes take proportional boxes (equal up to rounding).
    """
    idx = np.asarray(indices, dtype=np.int64)
    n = idx.size
    frames = choose_frames(
        seed=seed, epoch=epoch, indices=idx, frame_counts=frame_counts, k=k, train=train
    )
    h = np.broadcast_to(np.asarray(heights, dtype=np.int64)[:, None], (n, k))
    w = np.broadcast_to(np.asarray(widths, dtype=np.int64)[:, None], (n, k))
    if not train:
        zeros = np.zeros((n, k), dtype=np.int64)
        boxes = np.stack([zeros, zeros, h, w], axis=-1)
        return VideoParams(frames=frames, boxes=boxes, flips=np.zeros((n, k), dtype=bool))
    # One independent crop and flip per chosen frame (the peers transform each frame on its own);
    # draws are keyed by (index, slot) so they do not depend on the other samples.
    slot_keys = idx[:, None] * k + np.arange(k)[None, :]
    u_crop = uniforms(seed, epoch, STREAM_CROP, slot_keys, 2 * CROP_TRIES + 2)  # (n, K, 22)
    boxes = crop_boxes(u_crop, h, w)
    flips = uniforms(seed, epoch, STREAM_FLIP, slot_keys, 1)[..., 0] < 0.5
    return VideoParams(frames=frames, boxes=boxes, flips=flips)


# --- the device stage ---------------------------------------------------------------------------


def normalize_video(
    frames: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W), contiguous: (x / 255 - mean) / std.

    Per-channel Python scalars, not a constants tensor: building one on a GPU would be a
    synchronous host -> device copy every batch.
    """
    dims = frames.dim()
    chw = frames.permute(*range(dims - 3), dims - 1, dims - 3, dims - 2)
    out = torch.empty(chw.shape, dtype=torch.float32, device=frames.device)
    out.copy_(chw)
    for c, (m, s) in enumerate(zip(mean, std, strict=True)):
        out.select(-3, c).mul_(1.0 / (255.0 * s)).sub_(m / s)
    return out


@functools.lru_cache(maxsize=16)  # per device and parameters: built once, only ever read
def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    f_min: float,
    f_max: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """float32 (n_freqs, n_mels): HTK-scale triangles, no normalisation (torchaudio's defaults).

    Built on `device` (float64, then cast), so a GPU batch needs no host -> device copy.
    """

    def hz_to_mel(f: float) -> float:
        return 2595.0 * math.log10(1.0 + f / 700.0)

    f64 = torch.float64
    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=f64, device=device)
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=f64, device=device)
    points = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    diffs = points.diff()
    slopes = points[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / diffs[:-1]
    up = slopes[:, 2:] / diffs[1:]
    return torch.minimum(down, up).clamp_min(0.0).to(torch.float32)


@functools.lru_cache(maxsize=16)  # per device and length: built once, only ever read
def hann_window(length: int, device: torch.device) -> torch.Tensor:
    """The periodic Hann window (librosa's), on `device`."""
    return torch.hann_window(length, periodic=True, device=device)


def audio_features(wave: torch.Tensor, features: AudioFeatures, sample_rate: int) -> torch.Tensor:
    """float (B, N) waveform in [-1, 1] -> float32 (B, 1, F, T), on `wave`'s device.

    `log_stft`: log(|STFT| + eps) with a periodic Hann window, centred with reflect padding
    (librosa's stft, as the peers); `log_mel`: log(mel(|STFT|^2) + eps).
    """
    if features.window != "hann":
        raise ValueError(f"audio features: window {features.window!r} is not supported (hann)")
    x = wave.to(torch.float32)
    window = hann_window(features.win_length, x.device)
    spec = torch.stft(
        x,
        n_fft=features.n_fft,
        hop_length=features.hop_length,
        win_length=features.win_length,
        window=window,
        center=features.center,
        pad_mode=features.pad_mode,
        return_complex=True,
    ).abs()  # (B, F, T)
    if features.kind == "log_mel":
        fb = mel_filterbank(
            spec.shape[1],
            int(features.n_mels or 0),
            sample_rate,
            features.f_min,
            features.f_max if features.f_max is not None else sample_rate / 2,
            x.device,
        )
        spec = torch.einsum("bft,fm->bmt", spec.square(), fb)
    return spec.add_(features.eps).log_().unsqueeze(1)  # in place: spec is ours


def _column(t: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if t.numel() != batch:
        raise ValueError(f"{name}: expected {batch} values, got shape {tuple(t.shape)}")
    return t.reshape(batch)


def finish_batch(
    raw: Mapping[str, torch.Tensor], info: DatasetInfo, device: torch.device | str
) -> Batch:
    """A host (or device) batch -> the contract on `device`. Every output is a fresh tensor.

    raw: `video` uint8 (B, K, H, W, 3), `audio` int16 (B, N) PCM (or float already in [-1, 1]),
    `text` int (B, L), `label` and `index` int (B,) or (B, 1); keys of absent modalities absent.
    The host -> device copy is non-blocking when the source is pinned.
    """
    device = torch.device(device)
    batch_size = int(raw[INDEX].shape[0])
    out: Batch = {}
    options = info.options
    if VIDEO in info.modalities:
        video = raw[VIDEO].to(device, non_blocking=True)
        if video.dim() != 5 or video.shape[-1] != 3 or video.dtype != torch.uint8:
            raise ValueError(
                f"video: expected uint8 (B, K, H, W, 3), got {video.dtype} {video.shape}"
            )
        out[VIDEO] = normalize_video(video, options.video_mean, options.video_std)
    if AUDIO in info.modalities:
        pcm = raw[AUDIO].to(device, non_blocking=True)
        wave = pcm.to(torch.float32) / AUDIO_SCALE if pcm.dtype == torch.int16 else pcm
        out[AUDIO] = audio_features(
            wave.reshape(batch_size, -1), options.audio_features, options.audio_sr
        )
    if TEXT in info.modalities:
        text = raw[TEXT].to(device, dtype=torch.int64, non_blocking=True, copy=True)
        out[TEXT] = text.reshape(batch_size, -1)
        out[TEXT_MASK] = out[TEXT] != PAD_ID
    for key in (LABEL, INDEX):
        value = raw[key].to(device, dtype=torch.int64, non_blocking=True, copy=True)
        out[key] = _column(value, batch_size, key)
    return out
