"""The DALI graph's one input: per batch, the samples' stored bytes and each frame slot's row.

The loader keeps one pipeline for the whole run; what it reads is decided on the host, batch by
batch, as a queue of `Plan`s (the epoch, the batch's position, its sample indices). DALI calls
`BatchSource` once per batch, ahead of the consumer (its prefetch queue); the source pops the next
plan and returns, per sample, the K chosen JPEGs (views of the memory-mapped tar shards, sliced by
the stored frame offsets: only the chosen frames' bytes are copied into DALI), the slots' rows
(`slot_rows`: the contract's frames, boxes and flips as decode regions and warp matrices), the PCM,
tokens, label and index. When no plan is queued (DALI prefetching past an epoch's last batch) it
returns a placeholder batch: one 8 x 8 JPEG per slot warped to 1 x 1 pixel, never yielded.
"""

from __future__ import annotations

import collections
import functools
import io
import mmap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

from pipelines.augment import VideoParams, video_params
from pipelines.dali_shards import FRAMES, ShardSet
from pipelines.spec import LoaderSpec
from preprocess.schema import AUDIO, INDEX, LABEL, TEXT, VIDEO, DatasetInfo

ROW = 16
"""Columns of one slot's row: frame, region (x, y, w, h), warp matrix (3 x 3), output (h, w)."""
PLACEHOLDER = -1
"""The index of a placeholder sample (a batch's padding, or DALI's prefetch past the plans)."""


def slot_rows(
    params: VideoParams,
    heights: np.ndarray,
    widths: np.ndarray,
    size: int,
    *,
    whole_frame: bool = False,
) -> np.ndarray:
    """float32 (n, K * ROW): what the graph does to each slot, from the contract's parameters.

    Per slot: the frame; the region decoded, (x, y, w, h) = the crop box grown by one pixel and
    clipped to the frame (bilinear sampling at the box's edge reads its neighbours, as a resize of
    the whole frame with a source box does), or the whole frame; the 3 x 3 matrix taking output
    pixel coordinates (corner origin) to the region's, mirrored in x when the slot flips; the
    output (size, size).
    """
    top, left, h, w = (params.boxes[..., i].astype(np.float64) for i in range(4))  # (n, K)
    frame_h = np.asarray(heights, dtype=np.float64)[:, None]
    frame_w = np.asarray(widths, dtype=np.float64)[:, None]
    if whole_frame:
        x0, y0, x1, y1 = 0 * left, 0 * top, frame_w + 0 * left, frame_h + 0 * top
    else:
        x0, y0 = np.maximum(left - 1, 0), np.maximum(top - 1, 0)
        x1, y1 = np.minimum(left + w + 1, frame_w), np.minimum(top + h + 1, frame_h)
    sx, sy = w / size, h / size
    flip = params.flips.astype(bool)
    zero, one = np.zeros_like(sx), np.ones_like(sx)
    columns = [
        params.frames.astype(np.float64),
        x0,
        y0,
        x1 - x0,
        y1 - y0,
        np.where(flip, -sx, sx),  # x = m00 * u + m02
        zero,
        left - x0 + np.where(flip, w, 0.0),
        zero,
        sy,  # y = m11 * v + m12
        top - y0,
        zero,
        zero,
        one,
        one * size,
        one * size,
    ]
    rows = np.stack(columns, axis=-1)
    return rearrange(rows, "n k row -> n (k row)").astype(np.float32)


class SlotParams:
    """The contract's per-sample parameters as the graph's rows: (indices, epoch) -> float32
    (n, K * ROW), a pure function of (seed, epoch, index) through `video_params`, vectorised."""

    def __init__(self, shards: ShardSet, *, spec: LoaderSpec, whole_frame: bool):
        self.counts, self.heights, self.widths = shards.frame_counts, shards.heights, shards.widths
        self.seed, self.frames, self.size, self.train = (
            spec.seed,
            spec.frames,
            spec.size,
            spec.train,
        )
        self.whole_frame = whole_frame

    def __call__(self, idx: np.ndarray, epoch: int) -> np.ndarray:
        params = video_params(
            seed=self.seed,
            epoch=epoch,
            indices=idx,
            frame_counts=self.counts[idx],
            heights=self.heights[idx],
            widths=self.widths[idx],
            k=self.frames,
            train=self.train,
        )
        return slot_rows(
            params, self.heights[idx], self.widths[idx], self.size, whole_frame=self.whole_frame
        )


@dataclass(frozen=True, kw_only=True)
class Plan:
    """One batch the loader wants: its epoch, position and samples (fewer than the batch size
    only for an eval split's last batch)."""

    generation: int
    epoch: int
    batch: int
    indices: np.ndarray


@functools.cache
def placeholder_jpeg() -> np.ndarray:
    """uint8: an 8 x 8 grey baseline JPEG (what a placeholder slot decodes)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(out, format="JPEG", quality=90)
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


PLACEHOLDER_ROW = np.array([0, 0, 0, 8, 8, 8, 0, 0, 0, 8, 0, 0, 0, 1, 1, 1], dtype=np.float32)
"""A placeholder slot: frame 0, region (0, 0, 8, 8), scaled by 8 into 1 x 1 pixel."""


class TarViews:
    """The split's tar shards, memory-mapped on first use; members as read-only numpy views."""

    def __init__(self, shards: ShardSet):
        self.shards = shards
        self._maps: dict[int, mmap.mmap] = {}

    def view(self, shard: int) -> mmap.mmap:
        mapped = self._maps.get(shard)
        if mapped is None:
            with Path(self.shards.tars[shard]).open("rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[shard] = mapped
        return mapped

    def member(self, index: int, ext: str, dtype: str) -> np.ndarray:
        offset, size = self.shards.members[ext][index]
        itemsize = np.dtype(dtype).itemsize
        return np.frombuffer(
            self.view(int(self.shards.shard[index])), dtype, int(size) // itemsize, int(offset)
        )

    def jpegs(self, idx: np.ndarray, frames: np.ndarray) -> list[list[np.ndarray]]:
        """Per slot k, the list of sample i's JPEG `frames[i, k]` (uint8 views)."""
        s = self.shards
        at = s.offsets_at[idx][:, None] + frames  # (n, K) into frame_offsets
        start = s.members[FRAMES][idx, 0][:, None] + s.frame_offsets[at]
        size = s.frame_offsets[at + 1] - s.frame_offsets[at]
        maps = [self.view(int(shard)) for shard in s.shard[idx]]
        return [
            [
                np.frombuffer(maps[i], np.uint8, int(size[i, k]), int(start[i, k]))
                for i in range(idx.size)
            ]
            for k in range(frames.shape[1])
        ]


def source_outputs(modalities: tuple[str, ...], frames: int) -> tuple[str, ...]:
    """The source's outputs, in order: the K slots' JPEGs and rows, then the stored members."""
    video = (*(f"jpeg{k}" for k in range(frames)), "rows") if VIDEO in modalities else ()
    return (*video, *(m for m in (AUDIO, TEXT) if m in modalities), LABEL, INDEX)


class BatchSource:
    """DALI's external source (`batch=True`): each call pops the next current plan (or makes a
    placeholder batch) and returns the batch's inputs, in `outputs` order. Thread-safe: DALI calls
    it from the thread that runs the pipeline; the loader queues plans from its own."""

    def __init__(self, shards: ShardSet, info: DatasetInfo, spec: LoaderSpec, *, whole_frame: bool):
        self.views = TarViews(shards)
        self.slots = SlotParams(shards, spec=spec, whole_frame=whole_frame)
        self.batch_size, self.frames = spec.batch_size, spec.frames
        self.modalities = info.modalities
        self.outputs = source_outputs(info.modalities, spec.frames)
        self.placeholder: dict[str, np.ndarray] = {
            AUDIO: np.zeros(info.options.audio_samples if AUDIO in info.modalities else 0, "<i2"),
            TEXT: np.zeros(info.options.text_len if TEXT in info.modalities else 0, "<i4"),
            LABEL: np.zeros(1, "<i8"),
            INDEX: np.full(1, PLACEHOLDER, "<i8"),
        }
        self._lock = threading.Lock()
        self._queued: collections.deque[Plan] = collections.deque()
        self._issued: collections.deque[Plan | None] = collections.deque()  # DALI's order
        self.generation = 0

    def begin(self, epoch: int, batches: list[np.ndarray], first: int) -> int:
        """Queue an iteration's batches (batch `first` on), dropping what an earlier iteration
        left queued; returns its generation (outputs of other generations are stale)."""
        with self._lock:
            self.generation += 1
            self._queued.clear()
            for b, idx in enumerate(batches, start=first):
                plan = Plan(generation=self.generation, epoch=epoch, batch=b, indices=idx)
                self._queued.append(plan)
            return self.generation

    def issued(self) -> Plan | None:
        """The plan of the oldest batch DALI has not yet returned (None: a placeholder batch)."""
        return self._issued.popleft()

    def in_flight(self) -> list[Plan]:
        """The plans DALI has taken and not yet returned, oldest first."""
        return [p for p in list(self._issued) if p is not None]

    def __call__(self) -> tuple[Any, ...]:
        with self._lock:
            plan = self._queued.popleft() if self._queued else None
        if plan is None:
            batch = self.inputs(np.zeros(0, dtype=np.int64), 0)
        else:  # a short (last eval) batch repeats its last sample: outputs keep one shape
            idx = plan.indices
            idx = np.concatenate([idx, np.full(self.batch_size - idx.size, idx[-1])])
            batch = self.inputs(idx, plan.epoch)
        self._issued.append(plan)
        return batch

    def inputs(self, idx: np.ndarray, epoch: int) -> tuple[Any, ...]:
        """The graph's inputs for samples `idx` (padded with placeholders to the batch size: a
        batch of placeholders only, whose frames are 1 x 1 pixel, is never yielded)."""
        pad = self.batch_size - idx.size
        out: dict[str, Any] = {}
        if VIDEO in self.modalities:
            rows = np.empty((self.batch_size, self.frames * ROW), dtype=np.float32)
            if idx.size:
                rows[: idx.size] = self.slots(idx, epoch)
            rows[idx.size :] = np.tile(PLACEHOLDER_ROW, self.frames)
            chosen = rows[: idx.size, ::ROW].astype(np.int64)  # (n, K): each slot's frame
            jpegs = self.views.jpegs(idx, chosen)
            for k in range(self.frames):
                out[f"jpeg{k}"] = jpegs[k] + [placeholder_jpeg()] * pad
            out["rows"] = rows
        for name, dtype in ((AUDIO, "<i2"), (TEXT, "<i4")):
            if name in self.modalities:
                samples = [self.views.member(i, name, dtype) for i in idx.tolist()]
                out[name] = samples + [self.placeholder[name]] * pad
        for name in (LABEL, INDEX):
            values = [self.views.member(i, name, "<i8")[:1] for i in idx.tolist()]
            out[name] = np.concatenate([*values, *[self.placeholder[name]] * pad])[:, None]
        return tuple(out[name] for name in self.outputs)
