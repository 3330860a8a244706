"""The FFCV loader: `.beton` pages -> JIT-decoded K frames per sample -> the batch contract.

FFCV's `Loader` runs a compiled pipeline in one background thread (numba `prange` over the batch,
`workers` threads): `KFramesDecoder` decodes only the K frames the contract chose and crops,
resizes and flips them in the same pass; PCM, tokens, label and index are copied as they are.
The consumer side (`__iter__`) turns each host batch into the contract with `finish_batch` on the
spec's device.

What this module adds to FFCV, and why:
- Orders: the epoch's per-rank order comes from `contract.spec_order` (the same for every loader,
  resumable), handed to FFCV's epoch iterator; quasi-random groups samples by `.beton` page.
- Errors: FFCV's loader thread dies silently on an exception and the consumer then blocks forever.
  `_GuardedEpoch` catches the thread's exception and passes it through the batch queue, the
  decoder reports broken samples by status, and the consumer waits at most `timeout_s` per batch:
  a failure becomes an exception naming the file and the samples, in bounded time.
- Integrity: with `verify`, the file's sha256 is checked against dataset.json once, before its bytes
  are trusted (a flipped bit in a JPEG's entropy data or in PCM decodes "fine" otherwise).
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.ndarray import NDArrayDecoder
from ffcv.loader import Loader as _FFCVLoader
from ffcv.loader import OrderOption
from ffcv.loader.epoch_iterator import IS_CUDA, EpochIterator
from ffcv.pipeline import PipelineSpec
from ffcv.pipeline.compiler import Compiler

from pipelines.contract import (
    Batch,
    CursorLoader,
    EpochCursor,
    LoaderError,
    LoaderSpec,
    finish_batch,
    num_batches,
    spec_order,
    video_params,
)
from pipelines.ffcv_decoders import (
    STATUS_OK,
    STATUS_TEXT,
    KFramesDecoder,
    epoch_metadata,
    set_params,
)
from preprocess.ffcv_fields import CUSTOM_FIELDS
from preprocess.schema import (
    AUDIO,
    INDEX,
    LABEL,
    TEXT,
    VIDEO,
    DatasetInfo,
    file_digest,
)

_FAILED = object()  # queue sentinel: the loader thread raised (the exception is on the iterator)


class _GuardedEpoch(EpochIterator):
    """FFCV's epoch iterator whose failures reach the consumer (see the module docstring)."""

    closed: bool

    def __init__(self, loader: _Loader, order: np.ndarray, video_column: str | None):
        self.failure: BaseException | None = None
        self.current: np.ndarray = order[:0]
        self.video_column = video_column
        super().__init__(loader, order)

    def run(self) -> None:
        try:
            super().run()
        except BaseException as e:  # the thread would die silently: hand it to the consumer
            self.failure = e
            while not self.terminate_event.is_set():
                try:
                    self.output_queue.put(_FAILED, timeout=0.5)
                    return
                except queue.Full:
                    pass

    def run_pipeline(
        self, b_ix: int, batch_indices: np.ndarray, batch_slot: int, cuda_event: Any
    ) -> Any:
        self.current = batch_indices
        result = super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)
        if self.video_column is not None:
            status = self.metadata[self.video_column]["status"][batch_indices]
            if (status != STATUS_OK).any():
                broken = [
                    f"sample {int(i)}: {STATUS_TEXT.get(int(s), f'status {int(s)}')}"
                    for i, s in zip(batch_indices, status, strict=True)
                    if s != STATUS_OK
                ]
                raise LoaderError(f"{self.loader.fname}: {'; '.join(broken)}")
        return result

    def close(self) -> None:
        if not self.closed:  # FFCV's close would exit the memory context on every call
            super().close()
            self.closed = True

    def next_batch(self, timeout: float) -> tuple[Any, ...] | None:
        """The next host batch (a tuple in field order), None at the end of the epoch."""
        try:
            item = self.output_queue.get(timeout=timeout)
        except queue.Empty:
            self.close()
            state = "still running" if self.is_alive() else "dead"
            raise LoaderError(
                f"{self.loader.fname}: no batch within {timeout:.0f} s (loader thread {state}, "
                f"working on samples {self.current.tolist()})"
            ) from None
        if item is None:
            self.close()
            return None
        if item is _FAILED:
            self.close()
            failure = self.failure
            if isinstance(failure, LoaderError):
                raise LoaderError(str(failure)) from failure
            raise LoaderError(
                f"{self.loader.fname}: the pipeline failed on samples {self.current.tolist()}: "
                f"{failure!r}"
            ) from failure
        slot, result = item
        if IS_CUDA:
            torch.cuda.current_stream().wait_stream(self.cuda_streams[slot])
        return tuple(result)


class _Loader(_FFCVLoader):
    """FFCV's Loader, iterated through `epoch()`: one epoch thread at a time, buffers reused.

    FFCV allocates the ring buffers of every operation anew for each epoch (and the kernel then
    faults the pages in again); with short epochs that is a visible cost, so the allocation is kept
    while the previous epoch's thread is known to have stopped.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.active: _GuardedEpoch | None = None
        self._buffers: tuple[tuple[int, int], Any] | None = None
        allocate = self.graph.allocate_memory

        def allocate_once(batch_size: int, batches_ahead: int) -> Any:
            key = (batch_size, batches_ahead)
            if self._buffers is None or self._buffers[0] != key:
                self._buffers = (key, allocate(batch_size, batches_ahead))
            return self._buffers[1]

        self.graph.allocate_memory = allocate_once

    def stop(self) -> None:
        """Stop the running epoch's thread; if it does not stop, never reuse its buffers."""
        active, self.active = self.active, None
        if active is None:
            return
        active.close()
        deadline = time.monotonic() + 10.0
        while active.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):  # a thread blocked on a full queue gets room
                while True:
                    active.output_queue.get_nowait()
            active.join(timeout=0.1)
        if active.is_alive():
            self._buffers = None

    def epoch(self, order: np.ndarray, video_column: str | None) -> _GuardedEpoch:
        """An epoch over `order` (this rank's samples, in order) with our guarded iterator."""
        self.stop()
        _keep_torch_threads(Compiler.set_num_threads, self.num_workers)  # numba's, not torch's
        if self.code is None:
            self.generate_code()
        self.active = _GuardedEpoch(self, order, video_column)
        return self.active


def _keep_torch_threads(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run `fn`; FFCV sets torch's thread count to its worker count with numba's: put it back.
    (FFCV's loader thread does the same, which changes only that thread's count.)"""
    threads = torch.get_num_threads()
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


class FFCVLoader(CursorLoader):
    """`contract.Loader` over `DIR/ffcv/<split>.beton`."""

    def __init__(self, spec: LoaderSpec, info: DatasetInfo, *, host_only: bool = False):
        """`host_only`: a benchmark's pipeline without JPEG decode and resize (the frames of its
        batches are left unwritten); everything else as the loader's."""
        self.spec, self.info = spec, info
        split = info.splits.get(spec.split)
        if split is None or split.samples == 0:
            raise ValueError(
                f"{spec.data_dir}: no split {spec.split!r} (has {sorted(info.splits)})"
            )
        if split.ffcv is None:
            raise ValueError(
                f"{spec.data_dir}: split {spec.split!r} has no FFCV file (rebuild with ffcv format)"
            )
        per_rank = spec_order(spec, split.samples, 0).size  # bad sizes fail before any work
        self.path = spec.data_dir / split.ffcv
        if not self.path.is_file():
            raise ValueError(f"{self.path}: missing (listed in dataset.json)")
        if spec.verify:
            want = info.files[split.ffcv].sha256
            if file_digest(self.path).sha256 != want:
                raise ValueError(
                    f"{self.path}: sha256 mismatch with dataset.json (corrupt file): the bytes "
                    "changed since the build; rebuild or restore it"
                )
        self.device = torch.device(spec.device)
        pipelines: dict[str, PipelineSpec] = {}
        for name in info.modalities:
            if name == VIDEO:
                decoder = KFramesDecoder(spec.size, spec.frames, decode=not host_only)
                pipelines[name] = PipelineSpec(name, decoder=decoder)
            elif name in (AUDIO, TEXT):
                pipelines[name] = PipelineSpec(name, decoder=NDArrayDecoder())
        for name in (LABEL, INDEX):
            pipelines[name] = PipelineSpec(name, decoder=IntDecoder())
        try:
            self.loader: _Loader = _keep_torch_threads(
                _Loader,
                str(self.path),
                batch_size=spec.batch_size,
                num_workers=spec.workers,
                os_cache=spec.os_cache,
                order=OrderOption.SEQUENTIAL,
                seed=spec.seed,
                pipelines=pipelines,
                custom_fields=CUSTOM_FIELDS,
                drop_last=False,
                batches_ahead=spec.prefetch,
            )
        except (AssertionError, IndexError, ValueError, TypeError, OSError) as e:
            raise ValueError(f"{self.path}: cannot open as an FFCV file: {e}") from e
        reader = self.loader.reader
        self.base_metadata = reader.metadata
        self.n = int(reader.num_samples)
        if self.n != split.samples:
            raise ValueError(f"{self.path}: {self.n} samples, dataset.json says {split.samples}")
        self.names = list(self.loader.graph.leaf_nodes.keys())
        fields = list(reader.handlers.keys())
        self.video_column = f"f{fields.index(VIDEO)}" if VIDEO in fields else None
        # quasi-random: the page holding each sample's data
        alloc = reader.alloc_table
        self.pages = np.zeros(self.n, dtype=np.int64)
        self.pages[alloc["sample_id"].astype(np.int64)] = alloc["ptr"] >> int(
            np.log2(reader.page_size)
        )
        self.cursor = EpochCursor(num_batches(per_rank, spec.batch_size, spec.train))

    def _order(self, epoch: int) -> np.ndarray:
        return spec_order(self.spec, self.n, epoch, groups=self.pages)

    def _metadata(self, epoch: int, order: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
        """The reader's metadata with this epoch's video parameters for `order`'s samples
        (computed in chunks: the draws of a million samples would take gigabytes at once)."""
        metadata = self.base_metadata
        if self.video_column is None:
            return metadata
        out = epoch_metadata(metadata, self.video_column, self.spec.frames)
        video = metadata[self.video_column]
        for start in range(0, order.size, chunk):
            part = order[start : start + chunk]
            params = video_params(
                seed=self.spec.seed,
                epoch=epoch,
                indices=part,
                frame_counts=video["frames"][part],
                heights=video["height"][part],
                widths=video["width"][part],
                k=self.spec.frames,
                train=self.spec.train,
            )
            set_params(out, self.video_column, part, params)
        return out

    def host_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """The epoch's remaining batches as FFCV's host buffers (valid until the next one)."""
        start = self.cursor.start()
        epoch = self.cursor.epoch
        order = self._order(epoch)[start * self.spec.batch_size :]
        if order.size == 0:
            return
        # FFCV's epoch iterator reads the metadata from the reader when it starts.
        self.loader.reader.metadata = self._metadata(epoch, order)
        it = self.loader.epoch(order.astype(np.uint64), self.video_column)
        try:
            while (result := it.next_batch(self.spec.timeout_s)) is not None:
                yield dict(zip(self.names, result, strict=True))
        finally:
            it.close()

    def __iter__(self) -> Iterator[Batch]:
        cuda = self.device.type == "cuda"
        for host in self.host_batches():
            tensors = {k: torch.from_numpy(v) for k, v in host.items()}
            if self.spec.finish:
                batch = finish_batch(tensors, self.info, self.device)
            else:  # FFCV's buffers themselves on the host (see LoaderSpec.finish)
                batch = {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}
                for key in (LABEL, INDEX):
                    batch[key] = batch[key].reshape(-1)
            copied = torch.cuda.Event() if cuda else None
            if copied is not None:
                copied.record()
            self.cursor.batches += 1
            yield batch
            if copied is not None:
                # Taking the next batch lets FFCV's thread refill this one's buffers: the
                # host -> device copies from them must be done first (a host sync).
                copied.synchronize()
