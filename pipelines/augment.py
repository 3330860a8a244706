"""Per-sample augmentation: which K frames, the RandomResizedCrop boxes and the flips.

A pure function of (seed, epoch, sample index) through `pipelines.rng`, vectorised over a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from einops import repeat

from pipelines.rng import STREAM_CROP, STREAM_FLIP, STREAM_FRAMES, uniforms

# RandomResizedCrop as torchvision's defaults (the peers use them).
CROP_SCALE: tuple[float, float] = (0.08, 1.0)
CROP_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
CROP_TRIES = 10


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
    h = repeat(np.asarray(heights, dtype=np.int64), "n -> n k", k=k)  # every slot: its frame's
    w = repeat(np.asarray(widths, dtype=np.int64), "n -> n k", k=k)
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
