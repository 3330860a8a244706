"""The device stage every loader shares: a host batch -> the batch contract on the device.

uint8 frames -> normalised float32 (B, K, 3, H, W); int16 PCM -> audio features; ids -> int64.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import rearrange

from pipelines.audio import audio_features
from pipelines.spec import TEXT_MASK, Batch
from preprocess.schema import AUDIO, AUDIO_SCALE, INDEX, LABEL, PAD_ID, TEXT, VIDEO, DatasetInfo


def normalize_video(
    frames: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W), contiguous: (x / 255 - mean) / std.

    Per-channel Python scalars, not a constants tensor: building one on a GPU would be a
    synchronous host -> device copy every batch.
    """
    chw = rearrange(frames, "... h w c -> ... c h w")  # a view
    out = torch.empty(chw.shape, dtype=torch.float32, device=frames.device)
    out.copy_(chw)
    for c, (m, s) in enumerate(zip(mean, std, strict=True)):
        out.select(-3, c).mul_(1.0 / (255.0 * s)).sub_(m / s)
    return out


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
        wave = rearrange(wave, "b ... -> b (...)")  # (B, N) whatever the source's layout
        out[AUDIO] = audio_features(wave, options.audio_features, options.audio_sr)
    if TEXT in info.modalities:
        text = raw[TEXT].to(device, dtype=torch.int64, non_blocking=True, copy=True)
        out[TEXT] = rearrange(text, "b ... -> b (...)")  # (B, L)
        out[TEXT_MASK] = out[TEXT] != PAD_ID
    for key in (LABEL, INDEX):
        value = raw[key].to(device, dtype=torch.int64, non_blocking=True, copy=True)
        out[key] = _column(value, batch_size, key)
    return out
