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

This module names the contract; its parts live by job: `spec` (LoaderSpec, the Loader protocol
and its bookkeeping), `rng` (the counter hash), `order` (the epoch's order), `augment` (frames,
crops, flips), `audio` (features), `device` (the device stage).
"""

from __future__ import annotations

from pipelines.audio import audio_features, hann_window, mel_filterbank
from pipelines.augment import (
    CROP_RATIO,
    CROP_SCALE,
    CROP_TRIES,
    VideoParams,
    choose_frames,
    crop_boxes,
    video_params,
)
from pipelines.device import finish_batch, normalize_video
from pipelines.order import batch_slices, epoch_order, num_batches, spec_order
from pipelines.rng import (
    STREAM_CROP,
    STREAM_FLIP,
    STREAM_FRAMES,
    STREAM_ORDER,
    counter_hash,
    splitmix64,
    uniforms,
)
from pipelines.spec import (
    ORDERS,
    TEXT_MASK,
    Batch,
    CursorLoader,
    EpochCursor,
    Loader,
    LoaderError,
    LoaderSpec,
)

__all__ = [
    "CROP_RATIO",
    "CROP_SCALE",
    "CROP_TRIES",
    "ORDERS",
    "STREAM_CROP",
    "STREAM_FLIP",
    "STREAM_FRAMES",
    "STREAM_ORDER",
    "TEXT_MASK",
    "Batch",
    "CursorLoader",
    "EpochCursor",
    "Loader",
    "LoaderError",
    "LoaderSpec",
    "VideoParams",
    "audio_features",
    "batch_slices",
    "choose_frames",
    "counter_hash",
    "crop_boxes",
    "epoch_order",
    "finish_batch",
    "hann_window",
    "mel_filterbank",
    "normalize_video",
    "num_batches",
    "spec_order",
    "splitmix64",
    "uniforms",
    "video_params",
]
