"""The DALI loader's one pipeline per run: built once across epochs, resumes and abandoned
iterations, yielding what a fresh loader per epoch yields; its order is DALI's reader's, exactly
(checked against `fn.readers.webdataset` alone); the host-only graph reads the same batches."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def
from nvidia.dali.types import DALIDataType

from pipelines.contract import LoaderSpec
from pipelines.dali import DaliLoader, dali_part, reader_seed
from pipelines.dali_graph import GraphParams, decode_args
from pipelines.dali_order import reader_order

pytestmark = pytest.mark.timeout(300)


def spec(dataset: Path, **kw: object) -> LoaderSpec:
    base: dict[str, object] = {"pipeline": "dali", "data_dir": dataset, "batch_size": 4}
    base.update({"size": 32, "workers": 1, "seed": 5, "finish": False, "verify": False})
    return LoaderSpec(**{**base, **kw})  # type: ignore[arg-type]


def epoch(loader: DaliLoader) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def same(x: list[dict[str, torch.Tensor]], y: list[dict[str, torch.Tensor]]) -> bool:
    return len(x) == len(y) and all(
        a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for a, b in zip(x, y, strict=True)
    )


def test_one_pipeline_across_epochs_resumes_and_abandoned_iterations(dataset: Path) -> None:
    loader = DaliLoader(spec(dataset))
    seen = []
    for e in range(4):
        loader.set_epoch(e)
        batches = epoch(loader)
        fresh = DaliLoader(spec(dataset))
        fresh.set_epoch(e)
        assert same(batches, epoch(fresh))  # one pipeline = a new one per epoch, batch for batch
        seen.append(batches)
    loader.set_epoch(1)
    it = iter(loader)
    next(it)  # abandoned mid-epoch: its prefetched batches must not leak into the next
    loader.load_state_dict({"epoch": 2, "batches": 3})
    assert same(epoch(loader), seen[2][3:])
    loader.set_epoch(0)
    assert same(epoch(loader), seen[0])
    assert loader.builds == 1


def test_host_only_graph_reads_the_same_batches(dataset: Path) -> None:
    full = DaliLoader(spec(dataset))
    host = DaliLoader(spec(dataset), host_only=True)
    for e in (0, 1):
        full.set_epoch(e)
        host.set_epoch(e)
        for a, b in zip(epoch(full), epoch(host), strict=True):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["audio"], b["audio"])
            assert "video" not in b and b["rows"].shape == (4, 3 * 16)
    with pytest.raises(ValueError, match="finish=False"):
        DaliLoader(spec(dataset, finish=True), host_only=True)


@pipeline_def
def reader_alone(tars: list[str], indexes: list[str], reader: dict[str, object]) -> object:
    return fn.readers.webdataset(
        paths=tars,
        index_paths=indexes,
        ext=["index"],
        dtypes=[DALIDataType.INT64],
        pad_last_batch=True,
        **reader,
    )


def dali_reader_order(loader: DaliLoader, shard_id: int, num_shards: int, **reader: object) -> list:
    """The first epoch of DALI's own reader over the loader's shards (the oracle)."""
    n = loader.shards.samples
    start, stop = dali_part(n, shard_id, num_shards)
    pipe = reader_alone(
        [str(t) for t in loader.shards.tars],
        [str(i) for i in loader.shards.indexes],
        {"shard_id": shard_id, "num_shards": num_shards, **reader},
        batch_size=4,
        num_threads=1,
        device_id=None,
    )
    pipe.build()
    out: list[int] = []
    while len(out) < stop - start:
        (indices,) = pipe.run()
        out += np.asarray(indices.as_tensor()).reshape(-1).tolist()
    return out[: stop - start]


@pytest.mark.parametrize(("seed", "fill"), [(0, 1), (5, 3), (2**31 - 1, 7), (123456789, 10**6)])
def test_reader_order_is_dalis(dataset: Path, seed: int, fill: int) -> None:
    loader = DaliLoader(spec(dataset, train=False))
    n = loader.shards.samples
    for num_shards, shuffle in itertools.product((1, 3), (True, False)):
        for shard_id in range(num_shards):
            start, stop = dali_part(n, shard_id, num_shards)
            f = max(1, min(fill, stop - start))
            expected = dali_reader_order(
                loader, shard_id, num_shards, random_shuffle=shuffle, initial_fill=f, seed=seed
            )
            mine = reader_order(stop - start, shuffle=shuffle, initial_fill=f, seed=seed)
            assert loader.shards.sequence[start + mine].tolist() == expected


@pytest.mark.parametrize("order", ["random", "quasi_random", "sequential"])
def test_loader_order_is_dalis_reader_per_epoch(dataset: Path, order: str) -> None:
    """What the loader yields in train mode: the reader a fresh pipeline per epoch would use."""
    for rank, e in ((0, 0), (1, 3)):
        loader = DaliLoader(spec(dataset, order=order, rank=rank, world_size=2))
        loader.set_epoch(e)
        got = [i for b in epoch(loader) for i in b["index"].reshape(-1).tolist()]
        part = dali_part(loader.shards.samples, (rank + e) % 2, 2)
        fill = part[1] - part[0] if order == "random" else 1024
        expected = dali_reader_order(
            loader,
            (rank + e) % 2,
            2,
            random_shuffle=order != "sequential",
            initial_fill=max(1, min(fill, part[1] - part[0])),
            seed=reader_seed(5, e),
        )
        assert got == expected[: len(got)] and len(got) == len(loader) * 4


def graph(decoder: str, hw_decoder_load: float | None = None) -> GraphParams:
    return GraphParams(
        modalities=("video",),
        frames=3,
        decoder=decoder,
        whole_frame=True,
        hw_decoder_load=hw_decoder_load,
    )


def test_gpu_decoder_arguments() -> None:
    """nvJPEG upsamples chroma as libjpeg-turbo (the CPU graph's colours); its hardware share is
    passed when given, checked when built."""
    mixed = decode_args(graph("mixed", 1.0))
    assert mixed["jpeg_fancy_upsampling"] is True and mixed["hw_decoder_load"] == 1.0
    assert "hw_decoder_load" not in decode_args(graph("mixed"))
    cpu = decode_args(graph("cpu"))
    assert "jpeg_fancy_upsampling" not in cpu and cpu["device"] == "cpu"
    with pytest.raises(ValueError, match="hw_decoder_load must be in"):
        graph("mixed", 1.5)


@pytest.mark.timeout(120)
def test_a_stalled_batch_drops_the_pipeline_and_the_next_epoch_is_whole(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a timeout the stalled run may still finish in its thread: the rebuilt pipeline's
    batches must not be matched with what the stalled one fed."""
    import time

    from pipelines import dali_source

    calls = {"n": 0}
    slow_call = dali_source.SlotParams.__call__

    def stall_once(self: dali_source.SlotParams, *args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(1.5)
        return slow_call(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(dali_source.SlotParams, "__call__", stall_once)
    loader = DaliLoader(spec(dataset, timeout_s=0.5))
    with pytest.raises(TimeoutError, match="not ready after 0.5 s"):
        next(iter(loader))
    time.sleep(2.0)  # the stalled run finishes, feeding the dropped pipeline's source
    loader.set_epoch(0)
    fresh = DaliLoader(spec(dataset))
    assert same(epoch(loader), epoch(fresh)) and loader.builds == 2
