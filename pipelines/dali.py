"""The DALI loader: webdataset tar shards -> the batch contract, JPEGs decoded on the GPU if any.

One pipeline for the whole run (`pipelines.dali_graph`), built on the first batch and kept: every
epoch, and a resumed one, is a queue of batch plans for its one input (`pipelines.dali_source`),
so nothing is rebuilt per epoch and a resume reads only the batches it yields. The device stage
(`contract.finish_batch`: normalisation, torch.stft) is the contract's one function, run on the
spec's device, so audio features are the other loaders' bit for bit.

What is the contract's, and what is DALI's:
- each sample's frames, crop boxes and flips are the contract's (`video_params` of (seed, epoch,
  index)), so a sample is augmented as the other loaders augment it (up to the resampler: DALI's
  bilinear warp does not antialias when it shrinks, PIL's and OpenCV's INTER_AREA do);
- the order is DALI's reader's (`pipelines.dali_order` reproduces it exactly): each rank reads
  DALI's contiguous part `[n*s//R, n*(s+1)//R)` (s = the rank in eval; s = (rank + epoch) mod R
  in train, so parts rotate over epochs), shuffled in the reader's buffer with a seed derived from
  (seed, epoch). Train takes the contract's `n // (world_size * batch_size)` full batches on every
  rank and drops the rest of each part; eval reads the whole part once (`np.array_split`, the
  contract's eval split, gives the extra samples to the first ranks instead; DALI to the last).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from pipelines.dali_graph import GraphParams, contract_pipeline, output_names
from pipelines.dali_order import reader_order
from pipelines.dali_shards import DaliDataError, check_sample, read_shards, verify_files
from pipelines.dali_source import BatchSource, Plan, SlotParams, slot_rows
from pipelines.device import finish_batch
from pipelines.order import num_batches
from pipelines.rng import counter_hash
from pipelines.spec import Batch, CursorLoader, EpochCursor, LoaderSpec
from preprocess.schema import INDEX, LABEL, DatasetInfo, load_dataset_info

STREAM_READER = 5
"""Counter-hash stream of the reader's shuffle seed (the contract draws from streams 1 to 4)."""
QUASI_RANDOM_FILL = 1024
"""Shuffle buffer of `order="quasi_random"`: DALI's default, a local shuffle of the stored order."""

__all__ = ["DaliLoader", "SlotParams", "dali_part", "slot_rows"]


def dali_part(n: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """[start, stop) of the samples DALI's reader gives shard `shard_id` of `num_shards`."""
    return n * shard_id // num_shards, n * (shard_id + 1) // num_shards


def reader_seed(seed: int, epoch: int) -> int:
    """The epoch's shuffle seed: 31 bits of the counter hash (DALI seeds are non-negative ints)."""
    key = counter_hash(seed, epoch, STREAM_READER, np.zeros(1, dtype=np.int64))[0]
    return int(key >> np.uint64(33))


def epoch_samples(sequence: np.ndarray, spec: LoaderSpec, epoch: int) -> np.ndarray:
    """int64: the samples the rank reads in `epoch`, in order (its whole part; train cuts it).

    `sequence`: the split's samples in the order the shards store them (`ShardSet.sequence`).
    """
    n = sequence.size
    shard_id = (spec.rank + epoch) % spec.world_size if spec.train else spec.rank
    start, stop = dali_part(n, shard_id, spec.world_size)
    shuffle = spec.train and spec.traversal != "sequential"
    fill = stop - start if spec.traversal == "random" else QUASI_RANDOM_FILL
    positions = reader_order(
        stop - start,
        shuffle=shuffle,
        initial_fill=max(1, min(fill, stop - start)),
        seed=reader_seed(spec.seed, epoch),
    )
    return sequence[start + positions]


class DaliLoader(CursorLoader):
    """`contract.Loader` over DALI: see the module's docstring for what it yields in which order.

    `builds` counts the pipelines built (one per loader, unless a failed or stalled batch dropped
    one). `state_dict()` is the contract's (epoch, batches); a resumed epoch queues only the
    batches not yet yielded.
    """

    def __init__(
        self,
        spec: LoaderSpec,
        info: DatasetInfo | None = None,
        *,
        whole_frame: bool | None = None,
        host_only: bool = False,
        cut: str = "",
        hw_decoder_load: float | None = None,
    ):
        """`whole_frame`: decode whole frames rather than each slot's region (see `GraphParams`);
        None = whole frames on the GPU (nvJPEG's hardware decoder), regions on the CPU.
        `host_only`: a benchmark's graph without decode and warp (`cut="decode"`); it yields
        host batches of the slots' rows, PCM, tokens, labels and indices. `cut`: a benchmark's
        graph cut after a step (`GraphParams.cut`). `hw_decoder_load`: on a GPU, nvJPEG's
        hardware decoder's share (`GraphParams.hw_decoder_load`; None = DALI's default)."""
        self.spec = spec
        self.info = info if info is not None else load_dataset_info(spec.data_dir)
        self.shards = read_shards(spec.data_dir, self.info, spec.split)
        if spec.verify:
            verify_files(spec.data_dir, self.info, [*self.shards.tars, *self.shards.indexes])
        self.device = torch.device(spec.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {spec.device!r}: CUDA is not available here")
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"device {spec.device!r}: the DALI loader runs on cpu or cuda")
        cut = "decode" if host_only else cut
        if cut and spec.finish:
            raise ValueError(
                f"a cut graph ({cut!r}) yields host batches: build it with finish=False"
            )
        n, per_step = self.shards.samples, spec.world_size * spec.batch_size
        if n < spec.world_size:
            raise ValueError(
                f"world_size {spec.world_size} exceeds the split's {n} samples: DALI's reader "
                "gives every rank at least one sample"
            )
        if spec.train and n < per_step:
            raise ValueError(
                f"batch_size {spec.batch_size} x world_size {spec.world_size} exceeds the split's "
                f"{n} samples: no full batch per rank"
            )
        whole = self.device.type == "cuda" if whole_frame is None else whole_frame
        self.graph = GraphParams(
            modalities=self.info.modalities,
            frames=spec.frames,
            decoder="mixed" if self.device.type == "cuda" else "cpu",
            whole_frame=whole,
            cut=cut,
            hw_decoder_load=hw_decoder_load,
        )
        self.whole_frame = whole
        self.cursor = EpochCursor(self._num_batches())
        self.source = self._new_source()
        self.builds = 0
        self._pipe: Any = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _num_batches(self) -> int:
        spec, n = self.spec, self.shards.samples
        if spec.train:  # every rank the same number of full batches
            return num_batches(n // spec.world_size, spec.batch_size, True)
        start, stop = dali_part(n, spec.rank, spec.world_size)
        return num_batches(stop - start, spec.batch_size, False)

    def epoch_samples(self, epoch: int) -> np.ndarray:
        """int64: the samples this rank reads in `epoch`, in order (DALI's reader's order)."""
        return epoch_samples(self.shards.sequence, self.spec, epoch)

    def _executor(self) -> dict[str, Any]:
        """The `@pipeline_def` call's settings, apart from the graph's."""
        spec = self.spec
        device_id = None
        if self.device.type == "cuda":
            device_id = (
                self.device.index if self.device.index is not None else torch.cuda.current_device()
            )
        return {
            "batch_size": spec.batch_size,
            "num_threads": spec.workers,
            "device_id": device_id,
            "prefetch_queue_depth": spec.prefetch,
        }

    def _new_source(self) -> BatchSource:
        return BatchSource(self.shards, self.info, self.spec, whole_frame=self.whole_frame)

    def _pipeline(self) -> tuple[Any, concurrent.futures.ThreadPoolExecutor]:
        """The run's pipeline and the thread that runs it, built on first use and kept."""
        if self._pipe is None or self._pool is None:
            pipe = contract_pipeline(self.graph, self.source, **self._executor())
            pipe.build()
            self._pipe, self.builds = pipe, self.builds + 1
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dali-run")
        return self._pipe, self._pool

    def _drop_pipeline(self) -> None:
        """After a failed or stalled batch: the pipeline's state is unknown; the next iteration
        builds a new one."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pipe = self._pool = None
        self.source = self._new_source()  # a stalled run may still call the old one

    def __iter__(self) -> Iterator[Batch]:
        start, epoch = self.cursor.start(), self.cursor.epoch
        order, size = self.epoch_samples(epoch), self.spec.batch_size
        plans = [order[b * size : (b + 1) * size] for b in range(start, len(self))]
        generation = self.source.begin(epoch, plans, start)
        names = output_names(self.info.modalities, self.spec.frames, self.graph.cut)
        done = start
        while done < len(self):
            outputs = self._run(epoch, done)
            plan = self.source.issued()
            if plan is None or plan.generation != generation:
                continue  # a placeholder, or a batch an abandoned iteration queued
            raw = self._raw(outputs, names, plan.indices.size)
            done = self.cursor.batches = plan.batch + 1
            yield finish_batch(raw, self.info, self.device) if self.spec.finish else raw

    def _run(self, epoch: int, batch: int) -> tuple[Any, ...]:
        """One batch from the pipeline, within the spec's timeout; a DALI failure is re-raised
        naming the damaged sample when the host checks find it."""
        pipe, pool = self._pipeline()
        stream = None
        if self.graph.decoder != "cpu":
            stream = torch.cuda.current_stream(self.device).cuda_stream
        future = pool.submit(pipe.run, stream) if stream is not None else pool.submit(pipe.run)
        try:
            return tuple(future.result(timeout=self.spec.timeout_s))
        except concurrent.futures.TimeoutError as e:
            self._drop_pipeline()
            raise TimeoutError(
                f"DALI loader: batch {batch} of epoch {epoch} ({self.spec.split} of "
                f"{self.spec.data_dir}) not ready after {self.spec.timeout_s} s"
            ) from e
        except RuntimeError as e:
            in_flight = self.source.in_flight()
            self._drop_pipeline()
            raise self._explain(in_flight, e) from e

    def _raw(self, outputs: Sequence[Any], names: Sequence[str], rows: int) -> Batch:
        """DALI outputs -> torch tensors (zero-copy through DLPack), padding rows dropped."""
        raw = {}
        for name, tensors in zip(names, outputs, strict=True):
            if name.startswith(("jpeg", "region")):
                continue  # a cut graph's JPEGs or decoded regions: ragged, not converted
            raw[name] = torch.from_dlpack(tensors.as_tensor())[:rows]
        labels = raw[LABEL]
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(self.info.classes)):
            raise DaliDataError(
                f"{self.spec.data_dir}: split {self.spec.split}: samples "
                f"{raw[INDEX].reshape(-1).tolist()} carry labels outside the "
                f"{len(self.info.classes)} classes: a shard is damaged"
            )
        return raw

    def _explain(self, in_flight: list[Plan], error: Exception) -> Exception:
        """The error to raise after DALI failed: the damaged sample of the batches in flight
        (DALI may report a prefetched batch's failure early), when the host checks find it."""
        for plan in in_flight:
            where = f"batch {plan.batch} of epoch {plan.epoch} of split {self.spec.split!r}"
            for index in plan.indices.tolist():
                problem = check_sample(self.shards, self.info, index)
                if problem is not None:
                    tar = self.shards.tars[self.shards.shard[index]]
                    return DaliDataError(f"{tar}: sample {index:08d} ({where}): {problem}")
        samples = [p.indices.tolist() for p in in_flight]
        return DaliDataError(
            f"DALI failed on split {self.spec.split!r} (batches in flight: samples {samples}, "
            f"shards {[str(t) for t in self.shards.tars]}) and the host checks found no damaged "
            f"sample: {error}"
        )
