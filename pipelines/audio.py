"""Audio features on the training device: log-STFT or log-mel of int16 PCM, as the peers."""

from __future__ import annotations

import functools
import math

import torch
from einops import rearrange

from preprocess.schema import AudioFeatures


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
    spec = spec.add_(features.eps).log_()  # in place: spec is ours
    return rearrange(spec, "b f t -> b 1 f t")
