"""The pure parts of preprocessing: frame choice, resizing, audio fitting, text, options, schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from preprocess.ffcv_fields import pack_frames, unpack_frames
from preprocess.process import (
    FrameSelector,
    build_vocabulary,
    encode_text,
    evenly_spaced,
    fit_audio,
    frames_folder,
    resized_shape,
    tokenize,
)
from preprocess.schema import AudioFeatures, BuildOptions, load_dataset_info


def kept(times: list[float], fps: float) -> list[int]:
    select = FrameSelector(fps)
    return [i for i, t in enumerate(times) if select(t)]


def test_frame_selector_keeps_the_first_frame_at_or_after_each_period() -> None:
    ten_fps = [i / 10 for i in range(20)]  # 2 s
    assert kept(ten_fps, 3.0) == [0, 4, 7, 10, 14, 17]  # t = 0, .4, .7, 1.0, 1.4, 1.7
    assert kept(ten_fps, 10.0) == list(range(20))
    assert kept([0.0, 0.5, 1.0], 3.0) == [0, 1, 2]  # a slower source keeps every frame
    # Rounded container time bases: 1/3 s stamped as 3413/10240 s still counts as 1/3 s.
    assert kept([0.0, 3413 / 10240, 6827 / 10240], 3.0) == [0, 1, 2]


def test_evenly_spaced_caps_including_both_ends() -> None:
    assert evenly_spaced(10, 4) == [0, 3, 6, 9]
    assert evenly_spaced(3, 5) == [0, 1, 2]
    assert evenly_spaced(7, 1) == [0]


def test_resized_shape_sets_the_short_side() -> None:
    assert resized_shape(480, 640, 256) == (256, 341)
    assert resized_shape(640, 480, 256) == (341, 256)
    assert resized_shape(28, 28, 32) == (32, 32)


def test_fit_audio_tiles_crops_and_clips_as_the_peers() -> None:
    x = np.array([0.5, -0.5, 2.0])
    out = fit_audio(x, 7)
    assert out.dtype == np.int16
    assert out.tolist() == [16384, -16384, 32767, 16384, -16384, 32767, 16384]
    ramp = np.linspace(-1, 1, 100)
    assert fit_audio(ramp, 10).tolist() == (ramp[:10] * 32767).round().astype(int).tolist()
    with pytest.raises(ValueError):
        fit_audio(np.zeros(0), 5)


def test_text_tokenizer_vocabulary_and_ids() -> None:
    assert tokenize("Hello, World! hello-there 42") == ["hello", "world", "hello", "there", "42"]
    vocab = build_vocabulary(["b a b", "c b a"])
    assert vocab == ("<pad>", "<unk>", "b", "a", "c")  # by count, then alphabetically
    assert build_vocabulary(["b a b", "c"], min_count=2) == ("<pad>", "<unk>", "b")
    ids = {w: i for i, w in enumerate(vocab)}
    assert encode_text("A b zzz", ids, 5).tolist() == [3, 2, 1, 0, 0]
    assert encode_text("a b c a b c", ids, 4).tolist() == [3, 2, 4, 3]


def test_frames_folder_names_are_safe_and_distinct() -> None:
    assert frames_folder("1001_DFA_ANG_XX") == "1001_DFA_ANG_XX"
    for unsafe in ("a/b", "..", ".", "with space", "~x"):
        name = frames_folder(unsafe)
        assert name.startswith("~") and "/" not in name
    assert frames_folder("a/b") != frames_folder("a/c")


def test_frames_field_layout_round_trips() -> None:
    jpegs = [b"\xff\xd8abc\xff\xd9", b"\xff\xd8" + bytes(range(50)) + b"\xff\xd9"]
    blob = pack_frames(jpegs)
    assert int.from_bytes(blob[:4].tobytes(), "little") == 2
    assert np.frombuffer(blob[4:16].tobytes(), "<u4").tolist() == [0, 7, 61]
    padded = np.concatenate([blob, np.zeros(9, np.uint8)])
    assert unpack_frames(padded) == jpegs


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fps", 0.0, "fps must be > 0"),
        ("fps", float("nan"), "fps must be > 0"),
        ("formats", ("ffcv", "tfrecord"), "unknown format"),
        ("formats", ("ffcv", "ffcv"), "without repeats"),
        ("max_frames", 0, "max_frames"),
        ("min_frames", 40, "min_frames"),
        ("frame_size", -1, "frame_size"),
        ("jpeg_quality", 0, "jpeg_quality"),
        ("audio_sr", 10, "audio_sr"),
        ("audio_seconds", 0.01, "shorter than n_fft"),
        ("text_len", 0, "text_len"),
        ("shard_size", 0, "shard_size"),
        ("classes", ("a", "a"), "classes"),
    ],
)
def test_build_options_reject_what_cannot_work(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BuildOptions(**{field: value})  # type: ignore[arg-type]


def test_audio_feature_shapes_are_the_peers() -> None:
    assert AudioFeatures().shape(22050 * 3) == (257, 188)
    assert AudioFeatures(kind="log_mel", n_mels=128).shape(22050 * 3) == (128, 188)
    with pytest.raises(ValueError, match="n_mels"):
        AudioFeatures(kind="log_mel")
    options = BuildOptions(audio_features=AudioFeatures(hop_length=160))
    assert BuildOptions.from_json(json.loads(json.dumps(options.to_json()))) == options


def test_load_dataset_info_names_the_file_when_it_cannot(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no dataset.json"):
        load_dataset_info(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_dataset_info(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_dataset_info(tmp_path)
