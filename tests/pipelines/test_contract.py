"""The batch contract's pure functions, each against a slow twin or an invariant a bug breaks."""

from __future__ import annotations

import math
from pathlib import Path

import numba
import numpy as np
import pytest
import torch

from pipelines import build_loader
from pipelines.contract import (
    CROP_RATIO,
    CROP_SCALE,
    CROP_TRIES,
    EpochCursor,
    LoaderSpec,
    audio_features,
    batch_slices,
    choose_frames,
    crop_boxes,
    epoch_order,
    finish_batch,
    mel_filterbank,
    normalize_video,
    num_batches,
    splitmix64,
    uniforms,
    video_params,
)
from preprocess.schema import AudioFeatures


def spec(**kw: object) -> LoaderSpec:
    return LoaderSpec(**{"pipeline": "reference", "data_dir": Path("/nonexistent"), **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("frames", 0),
        ("world_size", 0),
        ("rank", 2),
        ("seed", -1),
        ("order", "shuffled"),
        ("timeout_s", 0.0),
        ("device", "tpu:7"),
    ],
)
def test_spec_rejects_bad_fields_by_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field if field != "device" else "device"):
        spec(**{field: value, "world_size": 2} if field == "rank" else {field: value})


def test_spec_eval_is_sequential_and_defaults() -> None:
    assert spec(train=True).traversal == "random"
    assert spec(train=False).traversal == "sequential"
    with pytest.raises(ValueError, match="eval is always sequential"):
        spec(train=False, order="random")
    assert spec(device=torch.device("cpu")).device == "cpu"


def test_unknown_pipeline_is_named() -> None:
    with pytest.raises(ValueError, match="'nope' is unknown"):
        build_loader(spec(pipeline="nope"))


def test_splitmix64_compiles_with_numba_and_agrees() -> None:
    jitted = numba.njit(splitmix64)
    values = np.array([0, 1, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    assert [int(jitted(v)) for v in values] == [int(v) for v in splitmix64(values)]
    # The published first output of SplitMix64 seeded with 0.
    assert int(splitmix64(np.array([0], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF


def test_uniforms_are_deterministic_and_independent_per_key() -> None:
    u = uniforms(3, 1, 2, np.arange(20000), 4)
    assert u.shape == (20000, 4) and u.min() >= 0 and u.max() < 1
    assert np.array_equal(u, uniforms(3, 1, 2, np.arange(20000), 4))
    assert not np.array_equal(u, uniforms(3, 2, 2, np.arange(20000), 4))  # another epoch
    assert not np.array_equal(u, uniforms(4, 1, 2, np.arange(20000), 4))  # another seed
    # a sample's draws do not depend on which other samples are asked for
    assert np.array_equal(uniforms(3, 1, 2, np.array([17]), 4)[0], u[17])
    assert abs(u.mean() - 0.5) < 0.01 and abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03


@pytest.mark.parametrize("world", [1, 2, 3])
def test_train_order_partitions_full_batches(world: int) -> None:
    n, b = 103, 8
    steps = n // (world * b)
    parts = [
        epoch_order(n=n, seed=1, epoch=4, rank=r, world_size=world, batch_size=b, train=True)
        for r in range(world)
    ]
    assert all(p.size == steps * b for p in parts)  # every rank the same number of full batches
    joined = np.concatenate(parts)
    assert np.unique(joined).size == joined.size  # disjoint
    again = epoch_order(n=n, seed=1, epoch=4, rank=0, world_size=world, batch_size=b, train=True)
    assert np.array_equal(parts[0], again)
    dropped = [
        set(range(n))
        - set(
            np.concatenate(
                [
                    epoch_order(
                        n=n, seed=1, epoch=e, rank=r, world_size=world, batch_size=b, train=True
                    )
                    for r in range(world)
                ]
            ).tolist()
        )
        for e in range(4)
    ]
    assert len({frozenset(d) for d in dropped}) > 1  # a different remainder each epoch


@pytest.mark.parametrize("world", [1, 2, 5])
def test_eval_order_covers_every_sample_once(world: int) -> None:
    parts = [
        epoch_order(n=23, seed=0, epoch=3, rank=r, world_size=world, batch_size=4, train=False)
        for r in range(world)
    ]
    assert np.array_equal(np.concatenate(parts), np.arange(23))
    assert max(p.size for p in parts) - min(p.size for p in parts) <= 1
    assert [b.tolist() for b in batch_slices(np.arange(10), 4)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert num_batches(10, 4, train=False) == 3 and num_batches(10, 4, train=True) == 2
    assert [b.tolist() for b in batch_slices(np.arange(10), 4, start=2)] == [[8, 9]]


def test_quasi_random_is_a_page_local_permutation() -> None:
    groups = np.repeat(np.arange(20), 10)  # 20 pages of 10 samples
    order = epoch_order(
        n=200, seed=0, epoch=1, rank=0, world_size=1, batch_size=10, train=True,
        order="quasi_random", groups=groups, window=2,
    )  # fmt: skip
    assert np.array_equal(np.sort(order), np.arange(200))
    # each window of 20 consecutive samples comes from 2 pages only
    pages_per_window = [np.unique(groups[order[i : i + 20]]).size for i in range(0, 200, 20)]
    assert max(pages_per_window) == 2
    assert not np.array_equal(order, np.arange(200))
    with pytest.raises(ValueError, match="groups must have one entry per sample"):
        epoch_order(
            n=5, seed=0, epoch=0, rank=0, world_size=1, batch_size=1, train=True,
            order="quasi_random", groups=np.zeros(3),
        )  # fmt: skip


def test_no_full_batch_is_an_error() -> None:
    with pytest.raises(ValueError, match="batch_size 8 x world_size 2 exceeds the split's 10"):
        epoch_order(n=10, seed=0, epoch=0, rank=0, world_size=2, batch_size=8, train=True)


def test_frame_choice() -> None:
    counts = np.array([1, 2, 3, 9, 32, 32])
    idx = np.arange(6)
    chosen = choose_frames(seed=0, epoch=0, indices=idx, frame_counts=counts, k=3, train=True)
    assert chosen.shape == (6, 3)
    assert (chosen >= 0).all() and (chosen < counts[:, None]).all()
    assert (np.diff(chosen, axis=1) >= 0).all()  # ascending (time order)
    for row, count in zip(chosen, counts, strict=True):
        if count >= 3:
            assert np.unique(row).size == 3  # without replacement
    many = choose_frames(
        seed=0, epoch=0, indices=np.arange(3000), frame_counts=np.full(3000, 9), k=3, train=True
    )
    hist = np.bincount(many.ravel(), minlength=9) / many.size
    assert np.allclose(hist, 1 / 9, atol=0.015)  # every frame equally likely
    other = choose_frames(seed=0, epoch=1, indices=idx, frame_counts=counts, k=3, train=True)
    assert not np.array_equal(chosen, other)
    centres = choose_frames(seed=0, epoch=5, indices=idx, frame_counts=counts, k=3, train=False)
    assert centres[3].tolist() == [1, 4, 7] and centres[0].tolist() == [0, 0, 0]


def torchvision_crop(u: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, line by line, on given uniforms (slow twin)."""
    area = height * width
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for t in range(CROP_TRIES):
        target_area = area * (CROP_SCALE[0] + u[t] * (CROP_SCALE[1] - CROP_SCALE[0]))
        aspect_ratio = math.exp(log_ratio[0] + u[CROP_TRIES + t] * (log_ratio[1] - log_ratio[0]))
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            i = int(u[2 * CROP_TRIES] * (height - h + 1))
            j = int(u[2 * CROP_TRIES + 1] * (width - w + 1))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(CROP_RATIO):
        w = width
        h = round(w / min(CROP_RATIO))
    elif in_ratio > max(CROP_RATIO):
        h = height
        w = round(h * max(CROP_RATIO))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize(("height", "width"), [(256, 341), (360, 480), (40, 400), (400, 30)])
def test_crop_boxes_match_torchvision(height: int, width: int) -> None:
    u = uniforms(0, 0, 3, np.arange(500), 2 * CROP_TRIES + 2)
    boxes = crop_boxes(u, np.full(500, height), np.full(500, width))
    expected = np.array([torchvision_crop(row, height, width) for row in u])
    assert np.array_equal(boxes, expected)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()


def test_crop_fallback_when_nothing_fits() -> None:
    # a 1-pixel-high frame: no try fits at a ratio >= 3/4, torchvision takes the centre crop
    u = uniforms(0, 0, 3, np.arange(5), 2 * CROP_TRIES + 2)
    boxes = crop_boxes(u, np.full(5, 1), np.full(5, 100))
    assert boxes.tolist() == [[0, 49, 1, 1]] * 5
    assert boxes.tolist() == [list(torchvision_crop(row, 1, 100)) for row in u]


def test_video_params_eval_and_train() -> None:
    kw = dict(
        frame_counts=np.array([9, 9]), heights=np.array([256, 300]), widths=np.array([341, 200])
    )
    ev = video_params(seed=0, epoch=0, indices=np.array([4, 5]), k=3, train=False, **kw)  # type: ignore[arg-type]
    assert ev.boxes[1].tolist() == [[0, 0, 300, 200]] * 3 and not ev.flips.any()
    tr = video_params(seed=0, epoch=0, indices=np.array([4, 5]), k=3, train=True, **kw)  # type: ignore[arg-type]
    alone = video_params(
        seed=0, epoch=0, indices=np.array([5]), k=3, train=True,
        frame_counts=np.array([9]), heights=np.array([300]), widths=np.array([200]),
    )  # fmt: skip
    assert np.array_equal(tr.boxes[1], alone.boxes[0]) and np.array_equal(
        tr.flips[1], alone.flips[0]
    )
    flips = video_params(
        seed=0, epoch=0, indices=np.arange(2000), k=3, train=True,
        frame_counts=np.full(2000, 9), heights=np.full(2000, 256), widths=np.full(2000, 341),
    ).flips  # fmt: skip
    assert abs(flips.mean() - 0.5) < 0.02


def test_normalize_video() -> None:
    frames = torch.randint(0, 256, (2, 3, 5, 7, 3), dtype=torch.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = normalize_video(frames, mean, std)
    assert out.shape == (2, 3, 3, 5, 7) and out.is_contiguous() and out.dtype == torch.float32
    expected = (frames.permute(0, 1, 4, 2, 3).float() / 255 - torch.tensor(mean)[:, None, None]) / (
        torch.tensor(std)[:, None, None]
    )
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def numpy_log_stft(x: np.ndarray, n_fft: int, hop: int, eps: float) -> np.ndarray:
    """librosa.stft's definition (centred, reflect padding, periodic Hann), float64."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = 1 + (padded.size - n_fft) // hop
    stack = np.stack([padded[t * hop : t * hop + n_fft] * window for t in range(frames)], axis=1)
    return np.log(np.abs(np.fft.rfft(stack, axis=0)) + eps)


def test_audio_features_match_a_numpy_stft() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 66150)) * 0.1).astype(np.float32)
    feats = AudioFeatures()
    out = audio_features(torch.from_numpy(x), feats, 22050)
    assert out.shape == (2, 1, *feats.shape(66150)) == (2, 1, 257, 188)
    expected = numpy_log_stft(x[1].astype(np.float64), 512, 353, 1e-7)
    got = out[1, 0].double().numpy()
    # float32 FFT against float64: 1e-4 relative to the feature range
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_log_mel_filterbank_and_features() -> None:
    fb = mel_filterbank(257, 40, 22050, 0.0, 11025.0).numpy()
    assert fb.shape == (257, 40) and fb.min() >= 0 and fb.max() <= 1
    assert (fb.sum(axis=0) > 0).all()  # every filter sees some bins
    peaks = fb.argmax(axis=0)
    assert (np.diff(peaks) >= 0).all()  # filters ordered in frequency
    feats = AudioFeatures(kind="log_mel", n_mels=40)
    x = torch.randn(1, 22050) * 0.1
    out = audio_features(x, feats, 22050)
    assert out.shape == (1, 1, 40, 1 + 22050 // 353)
    spec = torch.stft(
        x,
        512,
        353,
        512,
        torch.hann_window(512),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()
    expected = torch.log(torch.einsum("bft,fm->bmt", spec**2, torch.from_numpy(fb)) + 1e-7)
    torch.testing.assert_close(out[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_epoch_cursor_state() -> None:
    cursor = EpochCursor(num_batches=5)
    cursor.set_epoch(3)
    cursor.batches = 2
    assert cursor.state_dict() == {"epoch": 3, "batches": 2}
    other = EpochCursor(num_batches=5)
    other.load_state_dict(cursor.state_dict())
    assert other.start() == 2
    other.batches = 5
    assert other.start() == 0  # a completed epoch restarts
    with pytest.raises(ValueError, match="batches must be in"):
        other.load_state_dict({"epoch": 0, "batches": 6})
    with pytest.raises(ValueError, match="keys epoch, batches"):
        other.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        other.set_epoch(-1)


def test_finish_batch(dataset: Path) -> None:
    from preprocess.schema import load_dataset_info

    info = load_dataset_info(dataset)
    raw = {
        "video": torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8),
        "audio": torch.randint(-32767, 32768, (2, 66150), dtype=torch.int16),
        "text": torch.tensor([[5, 7, 0], [0, 0, 0]], dtype=torch.int32),
        "label": torch.tensor([[1], [2]]),
        "index": torch.tensor([[7], [9]]),
    }
    out = finish_batch(raw, info, "cpu")
    assert set(out) == {"video", "audio", "text", "text_mask", "label", "index"}
    assert out["video"].shape == (2, 3, 3, 8, 8) and out["video"].dtype == torch.float32
    assert out["audio"].shape == (2, 1, 257, 188) and out["audio"].dtype == torch.float32
    assert out["text"].dtype == torch.int64 and out["text_mask"].tolist() == [
        [True, True, False],
        [False, False, False],
    ]
    assert out["label"].tolist() == [1, 2] and out["index"].dtype == torch.int64
    wave = raw["audio"].float() / 32767
    torch.testing.assert_close(out["audio"], audio_features(wave, info.options.audio_features, 0))
    raw["label"][0, 0] = 3  # outputs never alias the (reused) input buffers
    assert out["label"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="video: expected uint8"):
        finish_batch({**raw, "video": raw["video"].float()}, info, "cpu")
