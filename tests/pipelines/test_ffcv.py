"""The FFCV loader's failure paths: corrupt bytes, a dying or stalled loader thread, bad input."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ffcv.reader import Reader

from pipelines import build_loader
from pipelines.contract import LoaderSpec, finish_batch, spec_order
from pipelines.ffcv import FFCVLoader, LoaderError, _GuardedEpoch
from preprocess.ffcv_fields import CUSTOM_FIELDS
from preprocess.schema import ffcv_file, load_dataset_info


def spec(root: Path, **kw: object) -> LoaderSpec:
    args: dict[str, object] = {"split": "test", "train": False, "batch_size": 4, "frames": 3}
    args.update({"size": 64, "workers": 1, **kw})
    return LoaderSpec(pipeline="ffcv", data_dir=root, **args)  # type: ignore[arg-type]


@pytest.fixture
def copy(dataset: Path, tmp_path: Path) -> Path:
    """dataset.json and the test split's .beton, in a folder a test may damage."""
    (tmp_path / "ffcv").mkdir()
    shutil.copy(dataset / "dataset.json", tmp_path / "dataset.json")
    shutil.copy(dataset / ffcv_file("test"), tmp_path / ffcv_file("test"))
    return tmp_path


def jpeg_offsets(path: Path, sample: int) -> list[int]:
    """File offsets of the JPEGs of one sample (the field layout of preprocess.ffcv_fields)."""
    reader = Reader(str(path), CUSTOM_FIELDS)
    ptr = int(reader.metadata["f0"]["ptr"][sample])
    with path.open("rb") as f:
        f.seek(ptr)
        count = int(np.frombuffer(f.read(4), "<u4")[0])
        offsets = np.frombuffer(f.read(4 * (count + 1)), "<u4")
    return [ptr + 4 * (count + 2) + int(o) for o in offsets[:-1]]


def patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.timeout(120)
def test_a_flipped_byte_fails_the_checksum_naming_the_file(copy: Path) -> None:
    beton = copy / ffcv_file("test")
    at = jpeg_offsets(beton, 5)[2] + 300  # inside the entropy-coded data: decodes "fine" otherwise
    with beton.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))
    with pytest.raises(ValueError, match=r"test\.beton: sha256 mismatch with dataset\.json"):
        build_loader(spec(copy))


@pytest.mark.timeout(120)
def test_an_undecodable_frame_is_named_by_sample(copy: Path) -> None:
    beton = copy / ffcv_file("test")
    for offset in jpeg_offsets(beton, 6):
        patch(beton, offset, b"\x00\x00")  # no JPEG start marker any more
    loader = build_loader(spec(copy, verify=False))
    start = time.monotonic()
    with pytest.raises(LoaderError, match=r"test\.beton: sample 6: JPEG decoding failed"):
        list(loader)
    assert time.monotonic() - start < 60


@pytest.mark.timeout(120)
def test_a_corrupt_frame_table_is_named_by_sample(copy: Path) -> None:
    beton = copy / ffcv_file("test")
    reader = Reader(str(beton), CUSTOM_FIELDS)
    ptr = int(reader.metadata["f0"]["ptr"][2])
    patch(beton, ptr, np.array([999], "<u4").tobytes())  # frame count disagrees with metadata
    with pytest.raises(LoaderError, match=r"sample 2: the frame table is inconsistent"):
        list(build_loader(spec(copy, verify=False)))


@pytest.mark.timeout(120)
def test_a_dying_loader_thread_raises_instead_of_hanging(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: _GuardedEpoch, b_ix: int, indices: np.ndarray, *args: object) -> None:
        self.current = indices
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(_GuardedEpoch, "run_pipeline", boom)
    loader = build_loader(spec(dataset, timeout_s=100.0))
    start = time.monotonic()
    with pytest.raises(
        LoaderError, match=r"test\.beton: the pipeline failed on samples \[0, 1, 2, 3\]"
    ):
        next(iter(loader))
    assert time.monotonic() - start < 30  # reported at once, not after the timeout


@pytest.mark.timeout(120)
def test_a_stalled_pipeline_times_out_naming_the_samples(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def stuck(self: _GuardedEpoch, b_ix: int, indices: np.ndarray, *args: object) -> None:
        self.current = indices
        release.wait(60)  # a decoder that never returns

    monkeypatch.setattr(_GuardedEpoch, "run_pipeline", stuck)
    loader = build_loader(spec(dataset, timeout_s=2.0))
    start = time.monotonic()
    try:
        with pytest.raises(LoaderError, match=r"no batch within 2 s .*samples \[0, 1, 2, 3\]"):
            next(iter(loader))
        assert time.monotonic() - start < 15
    finally:
        release.set()


def test_bad_input_is_named(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no split 'nope'"):
        build_loader(spec(dataset, split="nope"))
    shutil.copy(dataset / "dataset.json", tmp_path / "dataset.json")
    with pytest.raises(ValueError, match=r"test\.beton: missing"):
        build_loader(spec(tmp_path))
    (tmp_path / "ffcv").mkdir()
    (tmp_path / ffcv_file("test")).write_bytes(b"not an ffcv file")
    with pytest.raises(ValueError, match=r"test\.beton: cannot open as an FFCV file"):
        FFCVLoader(spec(tmp_path, verify=False), load_dataset_info(tmp_path))
    with pytest.raises(ValueError, match="no full batch"):
        build_loader(spec(dataset, train=True, batch_size=64))


@pytest.mark.timeout(300)
def test_quasi_random_through_the_process_cache(dataset: Path) -> None:
    """os_cache=False reads pages into the process (FFCV's ProcessCacheManager): the same batches
    as through the OS cache; quasi_random follows the contract's page-grouped order."""
    kw = {"split": "train", "train": True, "order": "quasi_random", "seed": 5}
    own = build_loader(spec(dataset, os_cache=False, **kw))
    mapped = build_loader(spec(dataset, os_cache=True, **kw))
    assert isinstance(own, FFCVLoader)
    a, b = list(own), list(mapped)
    order = spec_order(own.spec, own.n, 0, groups=own.pages)
    assert np.array_equal(np.concatenate([x["index"].numpy() for x in a]), order)
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(x[key], y[key]) for key in x)


@pytest.mark.timeout(300)
def test_host_batches_are_what_the_device_stage_finishes(dataset: Path) -> None:
    info = load_dataset_info(dataset)
    host = build_loader(spec(dataset, finish=False))
    full = list(build_loader(spec(dataset)))
    for k, raw in enumerate(host):  # a host batch is valid until the next one is drawn
        assert raw["video"].dtype == torch.uint8 and raw["video"].shape == (4, 3, 64, 64, 3)
        assert raw["audio"].dtype == torch.int16 and raw["text"].dtype == torch.int32
        finished = finish_batch(raw, info, "cpu")
        assert finished.keys() == full[k].keys()
        assert all(torch.equal(finished[key], full[k][key]) for key in finished)
