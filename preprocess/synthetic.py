"""A synthetic raw audio-video-text dataset with planted class information of chosen strength.

Each sample of class ``c`` carries the class in every modality:

- video: a drifting sinusoidal grating whose orientation and tint identify the class, under
  Gaussian pixel noise at ``video_snr_db``;
- audio: a harmonic tone whose fundamental identifies the class, in syllable-like bursts, under
  white noise at ``audio_snr_db``;
- text: a few class keywords among filler words; each keyword comes from a random class with
  probability ``text_noise``.

A modality can also be made unreliable with ``<modality>_label_noise``: with that probability the
sample's signal in that modality belongs to another class, which caps what any model can learn
from it at about ``(1 - noise) + noise / C``. The defaults make audio information-sufficient and
video insufficient, the imbalance InfoReg targets. Everything is a pure function of
``(seed, sample index)``; the media are real files (H.264/AAC mp4, PCM wav) and ``manifest.csv``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from preprocess.manifest import ManifestRow, write_manifest
from preprocess.media import write_mp4, write_wav
from preprocess.parallel import map_in_processes

MODALITIES = ("video", "audio", "text")
_SYLLABLES = ("ka", "lo", "mi", "ru", "te", "sa", "no", "pi", "ve", "do", "zu", "fa", "ge", "ho")


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """What `synthesize` writes. Defaults are small enough for tests."""

    samples: int = 60
    """Number of samples; classes are balanced (sample i has class i mod C before shuffling)."""
    classes: int = 6
    seed: int = 0
    modalities: tuple[str, ...] = MODALITIES
    width: int = 128
    height: int = 128
    seconds: float = 2.0
    fps: int = 10
    audio_sr: int = 22050
    audio_snr_db: float = 0.0
    """Tone power over noise power, in dB. Higher = stronger audio."""
    video_snr_db: float = -6.0
    """Grating power over pixel-noise power, in dB. Higher = stronger video."""
    text_noise: float = 0.6
    """Probability that a keyword is drawn from a random class instead of the sample's class."""
    audio_label_noise: float = 0.0
    video_label_noise: float = 0.3
    text_label_noise: float = 0.3
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.classes < 2:
            raise ValueError(f"classes must be >= 2, got {self.classes}")
        if not self.modalities or set(self.modalities) - set(MODALITIES):
            raise ValueError(
                f"modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}"
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < 16 or value % 2:
                raise ValueError(f"{name} must be an even number >= 16, got {value}")
        if self.seconds <= 0 or self.fps < 1 or self.audio_sr < 4000:
            raise ValueError("seconds must be > 0, fps >= 1 and audio_sr >= 4000")
        for name in ("text_noise", "audio_label_noise", "video_label_noise", "text_label_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if (
            self.val_fraction < 0
            or self.test_fraction < 0
            or self.val_fraction + self.test_fraction >= 1
        ):
            raise ValueError("val_fraction and test_fraction must be >= 0 and sum to < 1")


def class_names(classes: int) -> tuple[str, ...]:
    return tuple(f"class{c}" for c in range(classes))


def sample_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, sample, purpose): results never depend on workers."""
    return np.random.default_rng([seed, index, stream])


def shown_class(rng: np.random.Generator, label: int, classes: int, label_noise: float) -> int:
    """The class a modality displays: the true one, or with prob. `label_noise` another one."""
    if rng.random() < label_noise:
        return int((label + rng.integers(1, classes)) % classes)
    return label


def scaled_noise(rng: np.random.Generator, signal: np.ndarray, snr_db: float) -> np.ndarray:
    """Gaussian noise with power = signal power / 10^(snr/10)."""
    noise_std = float(np.sqrt(np.mean(signal**2) / 10.0 ** (snr_db / 10.0)))
    return rng.normal(0.0, noise_std, size=signal.shape)


def render_video(rng: np.random.Generator, shown: int, cfg: SynthConfig) -> np.ndarray:
    """uint8 frames (T, H, W, 3): a drifting grating, class = orientation + tint, plus noise."""
    frames = max(1, round(cfg.seconds * cfg.fps))
    theta = np.pi * shown / cfg.classes + rng.uniform(-0.25, 0.25) * np.pi / cfg.classes
    cycles = 4.0 + rng.uniform(-0.5, 0.5)
    speed = rng.uniform(0.5, 1.5)  # grating periods per second
    phase0 = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0 : cfg.height, 0 : cfg.width].astype(np.float32)
    u = (x * np.cos(theta) + y * np.sin(theta)) / max(cfg.width, cfg.height)  # (H, W)
    t = np.arange(frames, dtype=np.float32)[:, None, None] / cfg.fps  # (T, 1, 1)
    grating = np.sin(2 * np.pi * (cycles * u[None] + speed * t) + phase0)  # (T, H, W)
    hue = 2 * np.pi * shown / cfg.classes
    tint = 0.5 + 0.5 * np.cos(hue + np.array([0.0, 2.0944, 4.1888], dtype=np.float32))  # (3,)
    signal = 0.25 * grating[..., None] * (0.4 + 0.6 * tint)  # (T, H, W, 3), zero-mean pattern
    pixels = 0.5 + signal + scaled_noise(rng, signal, cfg.video_snr_db)
    return (np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def render_audio(rng: np.random.Generator, shown: int, cfg: SynthConfig) -> np.ndarray:
    """float32 mono samples in [-1, 1]: a harmonic tone in bursts, class = pitch, plus noise."""
    n = round(cfg.seconds * cfg.audio_sr)
    t = np.arange(n, dtype=np.float64) / cfg.audio_sr
    f0 = 200.0 * 2.0 ** (2.0 * shown / 12.0) * (1.0 + rng.uniform(-0.01, 0.01))
    tone = sum(
        amp * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
        for k, amp in enumerate((1.0, 0.5, 0.3, 0.2), start=1)
    )
    rate = rng.uniform(2.0, 4.0)  # bursts per second
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    signal = tone * envelope
    mix = signal + scaled_noise(rng, signal, cfg.audio_snr_db)
    return (0.9 * mix / np.max(np.abs(mix))).astype(np.float32)


def vocabulary(classes: int) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """(keywords per class, filler words): fixed pseudo-words, the same for every seed."""
    rng = np.random.default_rng(12345)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < 4 * classes + 60:
        word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    keywords = tuple(tuple(words[4 * c : 4 * c + 4]) for c in range(classes))
    return keywords, tuple(words[4 * classes :])


def render_text(rng: np.random.Generator, shown: int, cfg: SynthConfig) -> str:
    """6-12 words; about a third are class keywords, each from a random class w.p. text_noise."""
    keywords, filler = vocabulary(cfg.classes)
    words = []
    for _ in range(int(rng.integers(6, 13))):
        if rng.random() < 0.35:
            cls = int(rng.integers(cfg.classes)) if rng.random() < cfg.text_noise else shown
            words.append(str(rng.choice(keywords[cls])))
        else:
            words.append(str(rng.choice(filler)))
    return " ".join(words)


def assign_splits(cfg: SynthConfig, labels: np.ndarray) -> list[str]:
    """Stratified split per class: the first shuffled fraction is test, then val, the rest train."""
    rng = np.random.default_rng([cfg.seed, 2**31 - 1])
    splits = ["train"] * len(labels)
    for c in range(cfg.classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(len(members) * cfg.test_fraction)
        n_val = round(len(members) * cfg.val_fraction)
        for i in members[:n_test]:
            splits[i] = "test"
        for i in members[n_test : n_test + n_val]:
            splits[i] = "val"
    return splits


def sample_labels(cfg: SynthConfig) -> np.ndarray:
    """Balanced labels in a seed-dependent order."""
    base = np.arange(cfg.samples) % cfg.classes
    return np.random.default_rng([cfg.seed, 2**31 - 2]).permutation(base)


def write_sample(out: Path, cfg: SynthConfig, index: int, label: int, split: str) -> ManifestRow:
    """Render and write one sample's media; return its manifest row."""
    sample_id = f"s{index:06d}"
    video_rel = audio_rel = text = None
    audio = None
    if "audio" in cfg.modalities:
        rng = sample_rng(cfg.seed, index, 1)
        audio = render_audio(rng, shown_class(rng, label, cfg.classes, cfg.audio_label_noise), cfg)
        audio_rel = f"media/{sample_id}.wav"
        write_wav(out / audio_rel, audio, cfg.audio_sr)
    if "video" in cfg.modalities:
        rng = sample_rng(cfg.seed, index, 0)
        frames = render_video(rng, shown_class(rng, label, cfg.classes, cfg.video_label_noise), cfg)
        video_rel = f"media/{sample_id}.mp4"
        write_mp4(out / video_rel, frames, cfg.fps, audio=audio, sample_rate=cfg.audio_sr)
    if "text" in cfg.modalities:
        rng = sample_rng(cfg.seed, index, 2)
        text = render_text(rng, shown_class(rng, label, cfg.classes, cfg.text_label_noise), cfg)
    return ManifestRow(
        id=sample_id,
        split=split,
        label=class_names(cfg.classes)[label],
        video=video_rel,
        audio=audio_rel,
        text=text,
    )


def _write_sample_task(args: tuple[Path, SynthConfig, int, int, str]) -> ManifestRow:
    return write_sample(*args)


def synthesize(out: Path, cfg: SynthConfig, workers: int = 1) -> Path:
    """Write the dataset under `out` (media/, manifest.csv, synth.json); return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    labels = sample_labels(cfg)
    splits = assign_splits(cfg, labels)
    tasks = [(out, cfg, i, int(labels[i]), splits[i]) for i in range(cfg.samples)]
    rows = map_in_processes(_write_sample_task, tasks, workers)
    (out / "synth.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return write_manifest(out / "manifest.csv", rows)
