from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest

from preprocess.cli import main as preprocess_main
from preprocess.manifest import Manifest, read_manifest
from preprocess.synthetic import SynthConfig, synthesize


@pytest.fixture(scope="module")
def synth60(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    out = tmp_path_factory.mktemp("synth")
    args = [
        "synth",
        "--out",
        str(out),
        "--samples",
        "60",
        "--classes",
        "6",
        "--seed",
        "0",
        "--workers",
        "2",
    ]
    assert preprocess_main(args) == 0
    return read_manifest(out / "manifest.csv")


def decode_video(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].rate
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]), rate


def video_feature(frames: np.ndarray) -> np.ndarray:
    """Phase-invariant: per-channel contrast + the grey frame's low-frequency |FFT| pattern."""
    grey = frames.astype(np.float32).mean(-1)  # (T, H, W)
    spectrum = np.abs(np.fft.fft2(grey - grey.mean(axis=(1, 2), keepdims=True)))[:, :8, :8].mean(0)
    contrast = frames.astype(np.float32).std(axis=(0, 1, 2))
    return np.concatenate([spectrum.ravel() / spectrum.sum(), contrast / contrast.sum()])


def audio_feature(samples: np.ndarray) -> np.ndarray:
    """Log power in 64 bands from 0 to 2 kHz (the tones live there)."""
    power = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    bands = np.array_split(power[: len(power) * 2000 // 11025], 64)
    return np.log(np.array([b.sum() for b in bands]) + 1e-9)


def nearest_class_mean_accuracy(
    features: np.ndarray, labels: np.ndarray, train: np.ndarray
) -> float:
    mu, sd = features[train].mean(0), features[train].std(0) + 1e-9
    z = (features - mu) / sd
    classes = np.unique(labels[train])
    means = np.stack([z[train & (labels == c)].mean(0) for c in classes])
    predicted = classes[np.argmin(((z[~train, None, :] - means[None]) ** 2).sum(-1), axis=1)]
    return float((predicted == labels[~train]).mean())


def test_writes_every_sample_as_decodable_media(synth60: Manifest) -> None:
    assert len(synth60.rows) == 60
    assert synth60.classes() == tuple(f"class{c}" for c in range(6))
    assert synth60.modalities() == ("video", "audio", "text")
    assert {r.split for r in synth60.rows} == {"train", "val", "test"}
    for row in synth60.rows:
        assert row.video and row.audio and row.text
        frames = decode_video(synth60.resolve(row.video))
        assert frames.shape == (20, 128, 128, 3)
        samples, rate = decode_audio(synth60.resolve(row.audio))
        assert rate == 22050 and samples.shape == (44100,)


def test_audio_is_the_strong_modality(synth60: Manifest) -> None:
    labels = np.array([synth60.classes().index(r.label) for r in synth60.rows])
    train = np.array([r.split == "train" for r in synth60.rows])
    video = np.stack(
        [video_feature(decode_video(synth60.resolve(r.video or ""))) for r in synth60.rows]
    )
    audio = np.stack(
        [audio_feature(decode_audio(synth60.resolve(r.audio or ""))[0]) for r in synth60.rows]
    )
    chance = 1 / 6
    acc_video = nearest_class_mean_accuracy(video, labels, train)
    acc_audio = nearest_class_mean_accuracy(audio, labels, train)
    assert acc_audio - chance > acc_video - chance > 0, (acc_audio, acc_video)
    assert acc_audio > 0.9


def test_same_seed_same_dataset_other_seed_differs(tmp_path: Path) -> None:
    cfg = SynthConfig(samples=6, classes=3, seed=7, width=32, height=32, seconds=0.5)

    def digest(out: Path) -> str:
        h = hashlib.sha256((out / "manifest.csv").read_bytes())
        for p in sorted((out / "media").iterdir()):
            h.update(p.read_bytes())
        return h.hexdigest()

    synthesize(tmp_path / "a", cfg, workers=1)
    synthesize(tmp_path / "b", cfg, workers=2)
    synthesize(tmp_path / "c", SynthConfig(**{**cfg.__dict__, "seed": 8}), workers=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    assert json.loads((tmp_path / "a" / "synth.json").read_text())["seed"] == 7


def test_modality_subset_and_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audio_only"
    args = [
        "synth",
        "--out",
        str(out),
        "--samples",
        "4",
        "--classes",
        "2",
        "--modalities",
        "audio",
        "--workers",
        "1",
    ]
    assert preprocess_main(args) == 0
    assert read_manifest(out / "manifest.csv").modalities() == ("audio",)
    assert preprocess_main(["synth", "--out", str(tmp_path / "x"), "--classes", "1"]) == 2
    assert "classes must be >= 2" in capsys.readouterr().err
    assert preprocess_main(["synth", "--out", str(tmp_path / "x"), "--width", "33"]) == 2
    assert not (tmp_path / "x").exists()
