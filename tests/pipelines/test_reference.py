"""The reference loader's pieces (resampler, wav reader, tiling) and its failure paths."""

from __future__ import annotations

import io
import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import build_loader
from pipelines.contract import LoaderError, LoaderSpec
from pipelines.reference import crop_resize, fit_length, read_wav, resample
from preprocess.schema import frames_index


def spec(root: Path, **kw: object) -> LoaderSpec:
    args: dict[str, object] = {"split": "test", "train": False, "batch_size": 4, "frames": 3}
    args.update({"size": 64, "workers": 1, "timeout_s": 60.0, **kw})
    return LoaderSpec(pipeline="reference", data_dir=root, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("orig", "new"), [(16000, 22050), (44100, 22050), (22050, 22050)])
def test_resample_keeps_a_tone_and_the_duration(orig: int, new: int) -> None:
    seconds, freq = 2.5, 440.0
    t = np.arange(round(seconds * orig)) / orig
    out = resample(np.sin(2 * np.pi * freq * t), orig, new)
    assert out.dtype == np.float32 and out.size == round(t.size * new / orig)
    expected = np.sin(2 * np.pi * freq * np.arange(out.size) / new)
    # swr's filter needs a few hundred samples of context: compare away from the clip's ends
    assert np.abs(out - expected)[200:-200].max() < 1e-4


def test_resample_removes_what_the_new_rate_cannot_hold() -> None:
    t = np.arange(44100) / 44100
    out = resample(np.sin(2 * np.pi * 15000 * t), 44100, 22050)  # above the new Nyquist
    assert np.abs(out[200:-200]).max() < 1e-4


def test_fit_length_tiles_crops_and_clips() -> None:
    assert fit_length(np.array([0.5, 2.0, -3.0]), 7).tolist() == [0.5, 1, -1, 0.5, 1, -1, 0.5]
    assert fit_length(np.arange(10.0) / 10, 4).tolist() == [0.0, 0.1, 0.2, 0.3]


def wav_bytes(pcm: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def test_read_wav() -> None:
    pcm = np.array([0, 32767, -32767, 100], dtype="<i2")
    samples, rate = read_wav(wav_bytes(pcm, 16000), "a.wav")
    assert rate == 16000 and samples.tolist() == pytest.approx([0, 1, -1, 100 / 32767])
    stereo, _ = read_wav(wav_bytes(np.array([100, 300], dtype="<i2"), 8000, channels=2), "s.wav")
    assert stereo.tolist() == pytest.approx([200 / 32767])
    with pytest.raises(ValueError, match="b.wav: not a readable wav"):
        read_wav(b"RIFF....", "b.wav")
    with pytest.raises(ValueError, match="8-bit samples"):
        read_wav(wav_bytes(np.array([1, 2], dtype=np.uint8), 8000, width=1), "c.wav")


def test_crop_resize_is_torchvision_resized_crop_then_flip() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    top, left, h, w = 7, 13, 60, 81
    out = crop_resize(img, (top, left, h, w), 64, flip=False)
    # torchvision.transforms.functional.resized_crop on PIL: crop, then resize (bilinear)
    expected = np.asarray(img.crop((left, top, left + w, top + h)).resize((64, 64), Image.BILINEAR))
    assert np.array_equal(out, expected)
    assert np.array_equal(crop_resize(img, (top, left, h, w), 64, flip=True), expected[:, ::-1])


@pytest.fixture
def copy(dataset: Path, tmp_path: Path) -> Path:
    """dataset.json and the test split's frames format, in a folder a test may damage."""
    shutil.copy(dataset / "dataset.json", tmp_path / "dataset.json")
    (tmp_path / "frames").mkdir()
    shutil.copy(dataset / frames_index("test"), tmp_path / frames_index("test"))
    shutil.copytree(dataset / "frames" / "test", tmp_path / "frames" / "test")
    return tmp_path


def entry(root: Path, index: int) -> dict[str, object]:
    lines = (root / frames_index("test")).read_text().splitlines()
    return json.loads(lines[index])  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
def test_a_flipped_byte_is_named_by_file_and_sample(copy: Path) -> None:
    folder = entry(copy, 3)["folder"]
    frame = copy / "frames" / str(folder) / "00002.jpg"  # eval picks frames 2, 4, 6 of 6
    data = bytearray(frame.read_bytes())
    data[len(data) // 2] ^= 0x10
    frame.write_bytes(bytes(data))
    with pytest.raises(LoaderError, match=r"test sample 3 .*00002\.jpg: sha256 mismatch"):
        list(build_loader(spec(copy)))


@pytest.mark.timeout(120)
def test_an_undecodable_frame_or_wav_is_named_by_sample(copy: Path) -> None:
    frame = copy / "frames" / str(entry(copy, 5)["folder"]) / "00004.jpg"
    original = frame.read_bytes()
    frame.write_bytes(b"\x00" * 100)
    with pytest.raises(LoaderError, match=r"test sample 5 .*cannot identify image file"):
        list(build_loader(spec(copy, verify=False)))
    frame.write_bytes(original)
    (copy / "frames" / str(entry(copy, 1)["wav"])).write_bytes(b"RIFFjunk")
    with pytest.raises(LoaderError, match=r"test sample 1 .*not a readable wav"):
        list(build_loader(spec(copy, verify=False)))


@pytest.mark.timeout(120)
def test_bad_index_is_named(copy: Path) -> None:
    (copy / frames_index("test")).write_text('{"index": 1}\n')
    with pytest.raises(ValueError, match=r"test\.jsonl: sha256 mismatch"):
        build_loader(spec(copy))
    with pytest.raises(ValueError, match=r"test\.jsonl: expected indices 0\.\.7 in order"):
        build_loader(spec(copy, verify=False))
    with pytest.raises(ValueError, match="no split 'nope'"):
        build_loader(spec(copy, split="nope"))


@pytest.mark.timeout(120)
def test_host_batches_without_the_device_stage(dataset: Path) -> None:
    batch = next(iter(build_loader(spec(dataset, finish=False))))
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (4, 3, 64, 64, 3)
    assert batch["audio"].dtype == torch.int16 and batch["audio"].shape == (4, 66150)
    assert batch["text"].dtype == torch.int32 and "text_mask" not in batch
