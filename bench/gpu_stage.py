"""GPU check: the loaders' device stage on CUDA against the CPU.

The same host batch (uint8 frames, int16 PCM: what every loader hands to the device) through
`pipelines.contract`'s normalisation and audio features on both devices:

- video normalisation ``(x / 255 - mean) / std``: the same fp32 operations; allowed 1e-5
  absolute (a fused multiply-add on one side, ~10 fp32 ulps of values up to ~2.6);
- log-STFT and log-mel: cuFFT against pocketfft, fp32; allowed 1e-4 of the features' range
  (the loaders' contract between pipelines).

Also the device time of each stage per batch on both, for the loader-rate figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial

import torch

from pipelines.contract import audio_features, normalize_video
from preprocess.schema import AudioFeatures

BATCH, FRAMES, SIZE = 64, 3, 224
SAMPLE_RATE, SECONDS = 22050, 3
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FEATURES = {
    "log-STFT": AudioFeatures(),  # 257 x 188, the peers'
    "log-mel": AudioFeatures(kind="log_mel", n_mels=128),
}
VIDEO_ATOL, AUDIO_OF_RANGE = 1e-5, 1e-4


def host_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, K, H, W, 3) frames and int16 (B, N) PCM: harmonics in noise, the loaders' input."""
    gen = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (BATCH, FRAMES, SIZE, SIZE, 3), generator=gen, dtype=torch.uint8)
    n = SAMPLE_RATE * SECONDS
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    f0 = 110.0 * (1 + torch.arange(BATCH, dtype=torch.float64)[:, None] / 8)  # (B, 1)
    tone = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 6))
    noise = 0.05 * torch.randn(BATCH, n, generator=gen, dtype=torch.float64)
    pcm = (0.3 * tone + noise).clamp(-1, 1).mul(32767).round().to(torch.int16)
    return video, pcm


def _timed(
    fn: Callable[[], torch.Tensor], device: torch.device, repeat: int = 5
) -> tuple[torch.Tensor, float]:
    """(output, ms per call) of `fn()` (the host -> device copy included, as a loader pays it);
    CUDA calls timed with events around the loop."""
    out = fn()  # warm-up (cuFFT plans, allocations)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeat):
            out = fn()
        end.record()
        torch.cuda.synchronize()
        return out, start.elapsed_time(end) / repeat
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return out, (time.perf_counter() - t0) * 1e3 / repeat


def _video_on(video: torch.Tensor, device: torch.device) -> torch.Tensor:
    return normalize_video(video.to(device), MEAN, STD)


def _audio_on(wave: torch.Tensor, feats: AudioFeatures, device: torch.device) -> torch.Tensor:
    return audio_features(wave.to(device), feats, SAMPLE_RATE)


def compare_stage(device: torch.device) -> tuple[bool, list[str]]:
    """The device stage on `device` against the CPU: (all within tolerance, one line each)."""
    video, pcm = host_batch()
    devices = (torch.device("cpu"), device)
    lines, ok = [], True
    runs = [_timed(partial(_video_on, video, d), d) for d in devices]
    (want, cpu_ms), (got, dev_ms) = runs
    diff = (got.cpu() - want).abs().max().item()
    ok &= diff <= VIDEO_ATOL
    lines.append(
        f"video norm max |diff| {diff:.1e} (<= {VIDEO_ATOL:g}), {dev_ms:.2f} vs {cpu_ms:.0f} ms"
    )
    wave = pcm.to(torch.float32) / 32768.0
    for name, feats in FEATURES.items():
        runs = [_timed(partial(_audio_on, wave, feats, d), d) for d in devices]
        (want, cpu_ms), (got, dev_ms) = runs
        got = got.cpu()
        span = (want.max() - want.min()).item()
        err = (got - want).abs().max().item() / span
        ok &= got.shape == want.shape and err <= AUDIO_OF_RANGE
        lines.append(
            f"{name} {tuple(got.shape[2:])} max |diff| {err:.1e} of range "
            f"(<= {AUDIO_OF_RANGE:g}), {dev_ms:.2f} vs {cpu_ms:.0f} ms"
        )
    return ok, lines


def check_device_stage() -> tuple[str, str]:
    ok, lines = compare_stage(torch.device("cuda"))
    head = f"batch {BATCH}, CUDA vs CPU: "
    return ("PASS" if ok else "FAIL"), head + "; ".join(lines)
