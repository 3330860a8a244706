"""The DALI loader on real built shards, on the CPU (the same graph as on a GPU, decoder aside).

One small dataset is synthesised and built once for the module (`inforeg-preprocess synth` +
`build --formats dali`, 5 samples per shard so the splits span several shards); every test reads
it back through `DaliLoader` and checks it against the stored bytes, the contract's pure
functions and a host twin of the graph (PIL decode + the same bilinear map in numpy).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import build_loader
from pipelines.contract import LoaderSpec, audio_features, finish_batch, video_params
from pipelines.dali import DaliLoader, slot_rows
from pipelines.dali_shards import DaliDataError, ShardSet, read_shards
from preprocess.cli import main as preprocess
from preprocess.schema import AUDIO_SCALE, dali_key, load_dataset_info

SIZE = 40  # output frames; the stored ones are 48 x 64
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dali")
    synth = ["synth", "--out", str(root / "raw"), "--samples", "36", "--classes", "4"]
    synth += ["--seed", "1", "--width", "64", "--height", "48", "--seconds", "1.7"]
    synth += ["--workers", "1"]
    assert preprocess(synth) == 0
    build = ["build", "--manifest", str(root / "raw" / "manifest.csv"), "--out", str(root / "ds")]
    build += ["--formats", "dali", "--frame-size", "48", "--shard-size", "5", "--audio-seconds"]
    build += ["1.0", "--workers", "1", "--quiet"]
    assert preprocess(build) == 0
    return root / "ds"


def spec(data: Path, **kw: object) -> LoaderSpec:
    base: dict[str, object] = {
        "pipeline": "dali",
        "data_dir": data,
        "split": "train",
        "batch_size": 4,
        "size": SIZE,
        "workers": 2,
        "seed": 7,
    }
    return LoaderSpec(**{**base, **kw})  # type: ignore[arg-type]


def epoch(loader: DaliLoader) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def indices(batches: list[dict[str, torch.Tensor]]) -> list[int]:
    return [int(i) for b in batches for i in b["index"].reshape(-1)]


def member(shards: ShardSet, index: int, ext: str) -> bytes:
    offset, size = shards.members[ext][index]
    with shards.tars[shards.shard[index]].open("rb") as f:
        f.seek(int(offset))
        return f.read(int(size))


def twin_frame(jpeg: bytes, row: np.ndarray) -> np.ndarray:
    """The graph's slot on the host: PIL decode, the row's region, bilinear at mapped centres."""
    img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
    x, y, w, h = (int(v) for v in row[1:5])
    region = img[y : y + h, x : x + w]
    m = row[5:14].reshape(3, 3)
    out_h, out_w = int(row[14]), int(row[15])
    u = np.arange(out_w) + 0.5
    v = np.arange(out_h) + 0.5
    sx = np.clip(m[0, 0] * u + m[0, 2] - 0.5, 0, w - 1)  # pixel-centre coordinates, replicate
    sy = np.clip(m[1, 1] * v + m[1, 2] - 0.5, 0, h - 1)
    x0 = np.minimum(np.floor(sx).astype(int), w - 2)
    y0 = np.minimum(np.floor(sy).astype(int), h - 2)
    fx, fy = (sx - x0)[None, :, None], (sy - y0)[:, None, None]
    a, b = region[y0][:, x0], region[y0][:, x0 + 1]
    c, d = region[y0 + 1][:, x0], region[y0 + 1][:, x0 + 1]
    top, bottom = a + (b - a) * fx, c + (d - c) * fx
    return top + (bottom - top) * fy


def test_registered_in_build_loader(data: Path) -> None:
    assert isinstance(build_loader(spec(data, train=False)), DaliLoader)


def test_eval_round_trip_matches_the_stored_samples(data: Path) -> None:
    """Every sample once, with its stored label, tokens and PCM; the contract's features on it."""
    info = load_dataset_info(data)
    loader = DaliLoader(spec(data, train=False, split="test"))
    shards = loader.shards
    batches = epoch(loader)
    n = info.splits["test"].samples
    assert len(batches) == len(loader) == -(-n // 4)
    assert sorted(indices(batches)) == list(range(n))
    for b in batches:
        assert b["video"].shape[1:] == (3, 3, SIZE, SIZE) and b["video"].dtype == torch.float32
        assert b["audio"].shape[1:] == (1, *info.audio_feature_shape)  # type: ignore[misc]
        for row, index in enumerate(b["index"].tolist()):
            label = np.frombuffer(member(shards, index, "label"), dtype="<i8")[0]
            assert b["label"][row] == label
            tokens = torch.from_numpy(np.frombuffer(member(shards, index, "text"), "<i4").copy())
            assert torch.equal(b["text"][row], tokens.long())
            assert torch.equal(b["text_mask"][row], tokens != 0)
            pcm = np.frombuffer(member(shards, index, "audio"), dtype="<i2")
            wave = torch.from_numpy(pcm.astype(np.float32) / AUDIO_SCALE)[None]
            expected = audio_features(wave, info.options.audio_features, info.options.audio_sr)
            torch.testing.assert_close(b["audio"][row], expected[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("train", "whole_frame"), [(False, False), (True, False), (True, True)])
def test_video_matches_the_host_twin(data: Path, train: bool, whole_frame: bool) -> None:
    """Frames, boxes and flips are the contract's; the pixels are the host twin's within JPEG
    decoder rounding (DALI's region decode vs PIL's full decode: a few levels at most). Whole
    frames is the GPU's graph (nvJPEG's hardware decoder takes no regions), here on the CPU."""
    loader = DaliLoader(spec(data, train=train, finish=False, frames=3), whole_frame=whole_frame)
    loader.set_epoch(2)
    shards = loader.shards
    diffs = []
    for b in epoch(loader)[:3]:
        idx = b["index"].reshape(-1).numpy()
        params = video_params(
            seed=7,
            epoch=2,
            indices=idx,
            frame_counts=shards.frame_counts[idx],
            heights=shards.heights[idx],
            widths=shards.widths[idx],
            k=3,
            train=train,
        )
        rows = slot_rows(
            params, shards.heights[idx], shards.widths[idx], SIZE, whole_frame=whole_frame
        ).reshape(-1, 3, 16)
        for r, index in enumerate(idx.tolist()):
            frames = member(shards, index, "frames")
            offsets = np.frombuffer(member(shards, index, "offsets"), dtype="<i4")
            for k in range(3):
                f = int(rows[r, k, 0])
                twin = twin_frame(frames[offsets[f] : offsets[f + 1]], rows[r, k])
                diffs.append(np.abs(b["video"][r, k].numpy().astype(np.float64) - twin))
    d = np.stack(diffs)
    assert d.mean() < 1.0 and np.percentile(d, 99.9) <= 4.0, (d.mean(), d.max())
    if train:  # the twin is sensitive to the flips: a mirrored slot would differ by far more
        assert params.flips.any() and not params.flips.all()


def test_two_ranks_eval_cover_every_sample_once(data: Path) -> None:
    n = load_dataset_info(data).splits["train"].samples + 0
    seen = []
    for rank in (0, 1):
        loader = DaliLoader(spec(data, train=False, world_size=2, rank=rank, batch_size=5))
        batches = epoch(loader)
        assert len(batches) == len(loader)
        seen += indices(batches)
    assert sorted(seen) == list(range(n))


def test_two_ranks_train_take_equal_full_batches(data: Path) -> None:
    n = load_dataset_info(data).splits["train"].samples
    steps = n // (2 * 5)
    for e in (0, 1):
        seen = []
        for rank in (0, 1):
            loader = DaliLoader(spec(data, world_size=2, rank=rank, batch_size=5))
            loader.set_epoch(e)
            batches = epoch(loader)
            assert len(loader) == len(batches) == steps
            assert all(b["index"].shape == (5,) for b in batches)
            seen += indices(batches)
        assert len(set(seen)) == len(seen) == 2 * steps * 5  # no sample twice in an epoch


def test_epoch_order_is_a_function_of_seed_and_epoch(data: Path) -> None:
    orders = {}
    for seed, e in ((7, 0), (7, 1), (8, 0)):
        loader = DaliLoader(spec(data, seed=seed))
        loader.set_epoch(e)
        first = epoch(loader)
        loader.set_epoch(e)
        again = epoch(loader)
        assert indices(first) == indices(again)
        for x, y in zip(first, again, strict=True):
            assert all(torch.equal(x[k], y[k]) for k in x)
        orders[seed, e] = indices(first)
    assert orders[7, 0] != orders[7, 1] and orders[7, 0] != orders[8, 0]
    assert orders[7, 0] != sorted(orders[7, 0])  # shuffled, not the stored order


@pytest.mark.parametrize(("train", "whole_frame"), [(True, False), (False, False), (True, True)])
def test_resume_yields_exactly_the_rest_of_the_epoch(
    data: Path, train: bool, whole_frame: bool
) -> None:
    whole = DaliLoader(spec(data, train=train, batch_size=3), whole_frame=whole_frame)
    whole.set_epoch(1)
    expected = epoch(whole)
    first = DaliLoader(spec(data, train=train, batch_size=3), whole_frame=whole_frame)
    first.set_epoch(1)
    it = iter(first)
    for _ in range(2):
        next(it)
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    resumed = DaliLoader(spec(data, train=train, batch_size=3), whole_frame=whole_frame)
    resumed.load_state_dict(state)
    rest = epoch(resumed)
    assert len(rest) == len(expected) - 2
    for x, y in zip(rest, expected[2:], strict=True):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert resumed.state_dict() == {"epoch": 1, "batches": len(expected)}


def damaged_copy(data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    return copy


def test_flipped_byte_fails_the_checksum_naming_the_shard(data: Path, tmp_path: Path) -> None:
    copy = damaged_copy(data, tmp_path)
    shards = read_shards(copy, load_dataset_info(copy), "train")
    tar = shards.tars[1]
    offset = int(shards.members["frames"][np.flatnonzero(shards.shard == 1)[0]][0]) + 700
    raw = bytearray(tar.read_bytes())
    raw[offset] ^= 0x10
    tar.write_bytes(bytes(raw))
    with pytest.raises(DaliDataError, match=r"train-00001\.tar: sha256 .* differs"):
        DaliLoader(spec(copy))


def test_undecodable_frame_names_shard_and_sample(data: Path, tmp_path: Path) -> None:
    """Unverified, a JPEG that does not decode stops the epoch with the sample named."""
    copy = damaged_copy(data, tmp_path)
    info = load_dataset_info(copy)
    shards = read_shards(copy, info, "val")
    victim = 2
    offsets = np.frombuffer(member(shards, victim, "offsets"), dtype="<i4")
    start = int(shards.members["frames"][victim][0])
    tar = shards.tars[shards.shard[victim]]
    raw = bytearray(tar.read_bytes())
    for f in range(1, offsets.size - 1):  # every frame but the first (its header is read early)
        raw[start + offsets[f] : start + offsets[f] + 4] = b"\0\0\0\0"
    tar.write_bytes(bytes(raw))
    loader = DaliLoader(spec(copy, split="val", train=False, verify=False, batch_size=2))
    pattern = rf"{tar.name}: sample {dali_key(victim)} .*frame 1 of {offsets.size - 1}"
    with pytest.raises(DaliDataError, match=pattern):
        epoch(loader)


def test_damaged_first_frame_or_label_is_named(data: Path, tmp_path: Path) -> None:
    copy = damaged_copy(data, tmp_path)
    info = load_dataset_info(copy)
    shards = read_shards(copy, info, "val")
    tar = shards.tars[shards.shard[1]]
    raw = bytearray(tar.read_bytes())
    label_at = int(shards.members["label"][1][0])
    raw[label_at : label_at + 8] = np.array([99], dtype="<i8").tobytes()
    tar.write_bytes(bytes(raw))
    loader = DaliLoader(spec(copy, split="val", train=False, verify=False, batch_size=2))
    with pytest.raises(DaliDataError, match=r"labels outside the 4 classes"):
        epoch(loader)
    frame_at = int(shards.members["frames"][1][0])
    raw[frame_at : frame_at + 2] = b"\0\0"
    tar.write_bytes(bytes(raw))
    with pytest.raises(DaliDataError, match=rf"{tar.name}: sample {dali_key(1)}: first frame"):
        DaliLoader(spec(copy, split="val", train=False, verify=False))


def test_bad_specs_are_refused(data: Path) -> None:
    with pytest.raises(ValueError, match="no split 'nope'"):
        DaliLoader(spec(data, split="nope"))
    with pytest.raises(ValueError, match="no full batch per rank"):
        DaliLoader(spec(data, batch_size=20, world_size=2))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            DaliLoader(spec(data, device="cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("train", [False, True])
def test_mixed_decoding_matches_cpu(data: Path, train: bool) -> None:
    """nvJPEG + CV-CUDA against libjpeg-turbo + OpenCV on the same whole-frame graph: the same
    samples, crops and flips; pixels within decoder and resampler rounding; features on the GPU
    within float rounding (cuFFT vs pocketfft)."""
    kw = {"train": train, "split": "test", "finish": False, "batch_size": 4}
    cpu = epoch(DaliLoader(spec(data, **kw), whole_frame=True))
    gpu = epoch(DaliLoader(spec(data, device="cuda", **kw)))
    assert len(cpu) == len(gpu)
    for x, y in zip(cpu, gpu, strict=True):
        assert y["video"].is_cuda and y["audio"].is_cuda
        assert torch.equal(x["index"], y["index"].cpu())
        d = (x["video"].float() - y["video"].cpu().float()).abs()
        assert d.mean() < 1.5 and d.max() <= 24  # a wrong crop or flip gives tens of levels
    info = load_dataset_info(data)
    finished = finish_batch(gpu[0], info, "cuda")["audio"].cpu()
    torch.testing.assert_close(
        finished, finish_batch(cpu[0], info, "cpu")["audio"], rtol=1e-4, atol=1e-4
    )


def test_dataset_without_video_yields_no_video(tmp_path: Path) -> None:
    """Modalities absent from the dataset are absent from the batch (no frames in the graph)."""
    synth = ["synth", "--out", str(tmp_path / "raw"), "--samples", "12", "--classes", "3"]
    synth += ["--modalities", "audio,text", "--seconds", "1.0", "--workers", "1"]
    assert preprocess(synth) == 0
    build = ["build", "--manifest", str(tmp_path / "raw" / "manifest.csv"), "--out"]
    build += [str(tmp_path / "ds"), "--formats", "dali", "--audio-seconds", "1.0", "--quiet"]
    assert preprocess([*build, "--workers", "1"]) == 0
    n = load_dataset_info(tmp_path / "ds").splits["train"].samples
    loader = DaliLoader(spec(tmp_path / "ds", train=False, batch_size=3))
    batches = epoch(loader)
    assert sorted(indices(batches)) == list(range(n))
    assert set(batches[0]) == {"audio", "text", "text_mask", "label", "index"}


def test_more_ranks_than_samples_in_eval(data: Path) -> None:
    """DALI's reader needs a sample per rank: refused when built, with the reason."""
    n = load_dataset_info(data).splits["val"].samples
    with pytest.raises(ValueError, match=rf"world_size {n + 1} exceeds the split's {n} samples"):
        DaliLoader(spec(data, split="val", train=False, world_size=n + 1, rank=0))
    seen = []
    for rank in range(n):
        loader = DaliLoader(spec(data, split="val", train=False, world_size=n, rank=rank))
        seen += indices(epoch(loader))
    assert sorted(seen) == list(range(n))


@pytest.mark.timeout(60)
def test_a_stalled_pipeline_times_out(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch not ready within timeout_s is an error, not a hang."""
    import time

    from pipelines import dali

    slow_call = dali.SlotParams.__call__

    def stalled(self: dali.SlotParams, *args: object) -> object:
        time.sleep(3.0)
        return slow_call(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(dali.SlotParams, "__call__", stalled)
    loader = DaliLoader(spec(data, split="val", train=False, timeout_s=0.5))
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"batch 0 of epoch 0 .* not ready after 0\.5 s"):
        next(iter(loader))
    assert time.perf_counter() - start < 2.5
