"""Real media files with PyAV and the standard library: writers (H.264/AAC mp4, PCM wav), decoders.

Every writer is atomic: it writes to a temporary name beside the target and renames it into place,
so a killed process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 PCM (clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono float samples in [-1, 1] as a 16-bit PCM wav."""
    if samples.ndim != 1:
        raise ValueError(f"write_wav {path}: expected mono samples (N,), got shape {samples.shape}")
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(to_int16(samples).tobytes())


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> yuv420p planes stacked as (H * 3 / 2, W): BT.601, limited range.

    Done here rather than by FFmpeg's swscale, whose rgb24 -> yuv420p conversion was seen to give
    different bytes from run to run; with this, the same frames always encode to the same file.
    """
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b
    height, width = y.shape

    def half(plane: np.ndarray) -> np.ndarray:  # 2x2 box filter, (H/2, W/2)
        return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    planes = np.concatenate([y.ravel(), half(u).ravel(), half(v).ravel()])
    return planes.round().clip(0, 255).astype(np.uint8).reshape(height * 3 // 2, width)


def write_mp4(
    path: Path,
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 22050,
    qp: int = 20,
) -> None:
    """Write an H.264 mp4 from uint8 RGB frames (T, H, W, 3), with an optional mono AAC track.

    H and W must be even (yuv420p). Reproducible bytes: x264's rate control with lookahead (CRF,
    mb-tree, adaptive quantisation) was seen to encode the same frames differently from call to
    call, and its output depends on its thread count; so the encoder runs single-threaded at a
    constant quantiser, and gets yuv420p from `rgb_to_yuv420p` rather than from swscale.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"write_mp4 {path}: expected uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"write_mp4 {path}: frame size {width}x{height} must be even")
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.thread_count = 1
        video.options = {"preset": "veryfast", "qp": str(qp)}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if astream is not None and audio is not None:
            pcm = np.clip(audio, -1.0, 1.0).astype(np.float32)[None, :]  # (channels=1, N)
            audio_frame = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
            audio_frame.sample_rate = sample_rate
            for packet in astream.encode(audio_frame):
                container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)


class MediaError(ValueError):
    """A media file that cannot be used (unreadable, no such stream, empty); says why."""


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise MediaError("file does not exist" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise MediaError(f"cannot open: {e.strerror or e}") from e


def decode_video_frames(path: Path, keep: Callable[[float], bool]) -> list[np.ndarray]:
    """Decode the first video stream; return the RGB frames (H, W, 3) uint8 that `keep(t)` accepts.

    `t` is the frame's time in seconds from the first frame. Only kept frames are converted to RGB
    (the conversion costs as much as the decode).
    The decoder runs on one thread: parallelism comes from one process per clip.
    """
    frames: list[np.ndarray] = []
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError("no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        t0: float | None = None
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else i / rate
                t0 = t if t0 is None else t0
                if keep(t - t0):
                    frames.append(frame.to_ndarray(format="rgb24"))
        except av.FFmpegError as e:
            raise MediaError(f"decode failed: {e.strerror or e}") from e
        if t0 is None:
            raise MediaError("video stream has no decodable frame")
    return frames


def decode_audio(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to mono float32 in [-1, 1] (FFmpeg's resampler, swr).

    `sample_rate` None keeps the stream's rate. Returns (samples (N,), rate).
    """
    chunks: list[np.ndarray] = []
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError("no audio stream")
        stream = container.streams.audio[0]
        rate = int(sample_rate or stream.rate or 0)
        if rate <= 0:
            raise MediaError("audio stream has no sample rate")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as e:
            raise MediaError(f"decode failed: {e.strerror or e}") from e
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise MediaError("audio stream has no samples")
    if not np.isfinite(samples).all():
        raise MediaError("audio has non-finite samples")
    return samples.astype(np.float32, copy=False), rate
