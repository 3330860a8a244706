"""The DALI loader: webdataset tar shards -> the batch contract, JPEGs decoded on the GPU if any.

One graph, composed of the small helpers below in `contract_pipeline`, runs on both machines; the
decoder's device changes (`mixed`: nvJPEG, outputs on the GPU, when the spec's device is CUDA;
`cpu`: libjpeg-turbo otherwise), so CI runs the graph that trains:

    fn.readers.webdataset (index files, shard_id/num_shards, buffer shuffle)   per sample
      -> slot rows: the contract's `video_params` of the batch's indices       one Python call
         (frame, decoded region, warp matrix per slot)                         per batch
      -> per slot k: the bytes of JPEG f_k, sliced by offsets[f_k]:offsets[f_k + 1]
      -> decode: the crop box plus a 1-pixel margin (`decoders.image_slice`, the CPU's default),
         or the whole frame (`decoders.image`, the GPU's: its hardware decoder takes no regions)
      -> warp_perspective: crop + resize to size x size + flip, one bilinear pass
      -> stack the K slots: uint8 (K, size, size, 3)
    PCM, tokens, label, index: as stored.

The device stage (`contract.finish_batch`: normalisation, torch.stft) is the contract's one
function, run on the spec's device, so audio features are the other loaders' bit for bit.

What is the contract's, and what is DALI's:
- each sample's frames, crop boxes and flips are the contract's (`video_params` of (seed, epoch,
  index)), so a sample is augmented as the other loaders augment it (up to the resampler: DALI's
  bilinear warp does not antialias when it shrinks, PIL's and OpenCV's INTER_AREA do);
- the order is DALI's reader's: each rank reads DALI's contiguous part `[n*s//R, n*(s+1)//R)`
  (s = the rank in eval; s = (rank + epoch) mod R in train, so parts rotate over epochs),
  shuffled in its buffer with a seed derived from (seed, epoch). Train takes the contract's
  `n // (world_size * batch_size)` full batches on every rank and drops the rest of each part; eval
  reads the whole part once (`np.array_split`, the contract's eval split, gives the extra samples
  to the first ranks instead; DALI to the last).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.types import DALIDataType as DType

from pipelines.contract import (
    Batch,
    CursorLoader,
    EpochCursor,
    LoaderSpec,
    VideoParams,
    counter_hash,
    finish_batch,
    num_batches,
    video_params,
)
from pipelines.dali_shards import (
    FRAMES,
    OFFSETS,
    DaliDataError,
    ShardSet,
    check_sample,
    read_shards,
    verify_files,
)
from preprocess.schema import AUDIO, INDEX, LABEL, TEXT, VIDEO, DatasetInfo, load_dataset_info

STREAM_READER = 5
"""Counter-hash stream of the reader's shuffle seed (the contract draws from streams 1 to 4)."""
QUASI_RANDOM_FILL = 1024
"""Shuffle buffer of `order="quasi_random"`: DALI's default, a local shuffle of the stored order."""
ROW = 16
"""Columns of one slot's row: frame, region (x, y, w, h), warp matrix (3 x 3), output (h, w)."""

# Reader outputs per modality: (tar member extension, DALI dtype).
_MEMBERS: dict[str, tuple[tuple[str, DType], ...]] = {
    VIDEO: ((FRAMES, DType.UINT8), (OFFSETS, DType.INT32)),
    AUDIO: ((AUDIO, DType.INT16),),
    TEXT: ((TEXT, DType.INT32),),
}


# --- per-sample parameters (host, vectorised per batch) ----------------------------------------


def slot_rows(
    params: VideoParams,
    heights: np.ndarray,
    widths: np.ndarray,
    size: int,
    *,
    whole_frame: bool = False,
) -> np.ndarray:
    """float32 (n, K * ROW): what the graph does to each slot, from the contract's parameters.

    Per slot: the frame; the region decoded, (x, y, w, h) = the crop box grown by one pixel and
    clipped to the frame (bilinear sampling at the box's edge reads its neighbours, as a resize of
    the whole frame with a source box does), or the whole frame; the 3 x 3 matrix taking output
    pixel coordinates (corner origin) to the region's, mirrored in x when the slot flips; the
    output (size, size).
    """
    top, left, h, w = (params.boxes[..., i].astype(np.float64) for i in range(4))  # (n, K)
    frame_h = np.asarray(heights, dtype=np.float64)[:, None]
    frame_w = np.asarray(widths, dtype=np.float64)[:, None]
    if whole_frame:
        x0, y0, x1, y1 = 0 * left, 0 * top, frame_w + 0 * left, frame_h + 0 * top
    else:
        x0, y0 = np.maximum(left - 1, 0), np.maximum(top - 1, 0)
        x1, y1 = np.minimum(left + w + 1, frame_w), np.minimum(top + h + 1, frame_h)
    sx, sy = w / size, h / size
    flip = params.flips.astype(bool)
    zero, one = np.zeros_like(sx), np.ones_like(sx)
    columns = [
        params.frames.astype(np.float64),
        x0,
        y0,
        x1 - x0,
        y1 - y0,
        np.where(flip, -sx, sx),  # x = m00 * u + m02
        zero,
        left - x0 + np.where(flip, w, 0.0),
        zero,
        sy,  # y = m11 * v + m12
        top - y0,
        zero,
        zero,
        one,
        one * size,
        one * size,
    ]
    rows = np.stack(columns, axis=-1)  # (n, K, ROW)
    return rows.reshape(rows.shape[0], -1).astype(np.float32)


class SlotParams:
    """The graph's one Python call, per batch: sample indices -> each sample's slot rows.

    A pure function of (seed, epoch, index) through `video_params`, vectorised over the batch.
    Batches outside [first, stop) - a resume's fast-forward, and the prefetch that runs past the
    epoch's last batch - are warped to 1x1 pixels, from 8x8 regions when the graph decodes
    regions: the reader still walks them, the decoder and the resampler almost do not.
    """

    def __init__(
        self,
        shards: ShardSet,
        *,
        spec: LoaderSpec,
        epoch: int,
        first: int,
        stop: int,
        whole_frame: bool,
    ):
        self.counts, self.heights, self.widths = shards.frame_counts, shards.heights, shards.widths
        self.seed, self.epoch, self.first, self.stop = spec.seed, epoch, first, stop
        self.frames, self.size, self.train = spec.frames, spec.size, spec.train
        self.whole_frame = whole_frame

    def __call__(self, indices: list[np.ndarray], iteration: list[np.ndarray]) -> list[np.ndarray]:
        idx = np.concatenate([np.asarray(i).reshape(-1) for i in indices]).astype(np.int64)
        if idx.min() < 0 or idx.max() >= self.counts.size:
            raise ValueError(f"sample index {idx.min()}..{idx.max()} outside the split")
        params = video_params(
            seed=self.seed,
            epoch=self.epoch,
            indices=idx,
            frame_counts=self.counts[idx],
            heights=self.heights[idx],
            widths=self.widths[idx],
            k=self.frames,
            train=self.train,
        )
        rows = slot_rows(
            params,
            self.heights[idx],
            self.widths[idx],
            self.size,
            whole_frame=self.whole_frame,
        )
        if not self.first <= int(np.asarray(iteration[0])) < self.stop:
            cheap = rows.reshape(idx.size, self.frames, ROW)
            if not self.whole_frame:
                cheap[..., 1:3] = 0.0
                cheap[..., 3:5] = np.minimum(8.0, cheap[..., 3:5])
            cheap[..., 14:16] = 1.0
        return list(rows)


class IterationSource:
    """External source of int64 (B,): the position of the batch in the epoch, for `SlotParams`."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def __call__(self, info: Any) -> np.ndarray:
        return np.full(self.batch_size, info.iteration, dtype=np.int64)


# --- the graph ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GraphParams:
    """What the graph computes; the executor's settings (batch size, threads, device, prefetch)
    are the `@pipeline_def` call's, kept apart."""

    tars: tuple[str, ...]
    indexes: tuple[str, ...]
    modalities: tuple[str, ...]
    frames: int
    shard_id: int
    num_shards: int
    shuffle: bool
    initial_fill: int
    reader_seed: int
    decoder: str
    """`mixed` (nvJPEG, outputs on the GPU) or `cpu` (libjpeg-turbo)."""
    whole_frame: bool
    """Decode whole frames (`decoders.image`: nvJPEG's hardware decoder takes no regions) or only
    each slot's region (`decoders.image_slice`: less entropy decoding and colour conversion on
    CPUs, and a resume's skipped batches decode 8x8 pixels)."""


def read_members(params: GraphParams, members: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """`fn.readers.webdataset` over the shards: member extension -> DataNode of one sample."""
    outputs = fn.readers.webdataset(
        paths=list(params.tars),
        index_paths=list(params.indexes),
        ext=[ext for ext, _ in members],
        dtypes=[dtype for _, dtype in members],
        missing_component_behavior="error",
        shard_id=params.shard_id,
        num_shards=params.num_shards,
        random_shuffle=params.shuffle,
        initial_fill=params.initial_fill,
        seed=params.reader_seed,
        pad_last_batch=True,
        name="reader",
    )
    nodes = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return dict(zip((ext for ext, _ in members), nodes, strict=True))


def select_jpeg(frames: Any, offsets: Any, frame: Any) -> Any:
    """uint8 (bytes,): JPEG `frame` of a sample, frames[offsets[frame]:offsets[frame + 1]]."""
    start, stop = offsets[frame], offsets[frame + 1]
    return fn.slice(
        frames,
        fn.stack(start),
        fn.stack(stop - start),
        axes=[0],
        normalized_anchor=False,
        normalized_shape=False,
    )


def crop_resize_flip(jpeg: Any, row: Any, params: GraphParams) -> Any:
    """uint8 (size, size, 3): decode the row's region of the JPEG, warp it by the row's matrix."""
    if params.whole_frame:
        region = fn.decoders.image(jpeg, device=params.decoder, output_type=types.DALIImageType.RGB)
    else:
        region = fn.decoders.image_slice(
            jpeg,
            row[1:3],  # (x, y)
            row[3:5],  # (w, h)
            device=params.decoder,
            output_type=types.DALIImageType.RGB,
            axis_names="WH",
            normalized_anchor=False,
            normalized_shape=False,
        )
    return fn.experimental.warp_perspective(
        region,
        matrix=fn.reshape(row[5:14], shape=[3, 3]),
        size=row[14:16],
        pixel_origin="corner",
        border_mode="replicate",
        interp_type=types.DALIInterpType.INTERP_LINEAR,
    )


def video_frames(read: Mapping[str, Any], rows: Any, params: GraphParams) -> Any:
    """uint8 (K, size, size, 3): the K slots of a sample, each from its row of `rows`."""
    slots = []
    for k in range(params.frames):
        row = rows[k * ROW : (k + 1) * ROW]
        jpeg = select_jpeg(read[FRAMES], read[OFFSETS], fn.cast(row[0], dtype=DType.INT32))
        slots.append(crop_resize_flip(jpeg, row, params))
    return fn.stack(*slots)


def output_names(modalities: Sequence[str]) -> tuple[str, ...]:
    """The graph's outputs, in order: the raw batch keys of `finish_batch`."""
    return (*(m for m in (VIDEO, AUDIO, TEXT) if m in modalities), LABEL, INDEX)


@pipeline_def
def contract_pipeline(params: GraphParams, slot_params: SlotParams) -> tuple[Any, ...]:
    """The raw batch of the contract (see the module's docstring), one sample per DataNode."""
    members = [
        m for name in (VIDEO, AUDIO, TEXT) if name in params.modalities for m in _MEMBERS[name]
    ]
    read = read_members(params, [*members, (LABEL, DType.INT64), (INDEX, DType.INT64)])
    outputs = []
    for name in output_names(params.modalities):
        if name == VIDEO:
            iteration = fn.external_source(  # int64 (B,): the batch's position in the epoch
                source=IterationSource(Pipeline.current().max_batch_size),
                batch=True,
                batch_info=True,
            )
            rows = fn.python_function(
                read[INDEX], iteration, function=slot_params, batch_processing=True
            )
            outputs.append(video_frames(read, rows, params))
        elif name in (AUDIO, TEXT) and params.decoder != "cpu":
            outputs.append(read[name].gpu())
        else:
            outputs.append(read[name])  # label, index: host tensors, checked there
    return tuple(outputs)


@pipeline_def
def order_pipeline(params: GraphParams) -> Any:
    """The reader alone, yielding indices: the order `contract_pipeline` reads (same reader
    arguments, same seed), to name a failing batch's samples without decoding anything."""
    return read_members(params, [(INDEX, DType.INT64)])[INDEX]


# --- the loader --------------------------------------------------------------------------------


def dali_part(n: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """[start, stop) of the samples DALI's reader gives shard `shard_id` of `num_shards`."""
    return n * shard_id // num_shards, n * (shard_id + 1) // num_shards


class DaliLoader(CursorLoader):
    """`contract.Loader` over DALI: see the module's docstring for what it yields in which order.

    A pipeline is built per epoch (its reader seed and parameters are the epoch's) and dropped at
    the epoch's end. `state_dict()` is the contract's (epoch, batches); a resumed epoch rebuilds
    the same pipeline and fast-forwards its reader over the batches already yielded (cheaply: see
    `SlotParams`), then yields exactly the rest.
    """

    def __init__(
        self, spec: LoaderSpec, info: DatasetInfo | None = None, *, whole_frame: bool | None = None
    ):
        """`whole_frame`: decode whole frames rather than each slot's region (see `GraphParams`);
        None = whole frames on the GPU (nvJPEG's hardware decoder), regions on the CPU."""
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
        self.whole_frame = self.device.type == "cuda" if whole_frame is None else whole_frame
        self.cursor = EpochCursor(self._num_batches())

    def _num_batches(self) -> int:
        spec, n = self.spec, self.shards.samples
        if spec.train:  # every rank the same number of full batches
            return num_batches(n // spec.world_size, spec.batch_size, True)
        start, stop = dali_part(n, spec.rank, spec.world_size)
        return num_batches(stop - start, spec.batch_size, False)

    def graph_params(self, epoch: int) -> GraphParams:
        """The epoch's graph: the rank's part (rotating in train), the shuffle and its seed."""
        spec, n = self.spec, self.shards.samples
        shard_id = (spec.rank + epoch) % spec.world_size if spec.train else spec.rank
        start, stop = dali_part(n, shard_id, spec.world_size)
        shuffle = spec.train and spec.traversal != "sequential"
        fill = stop - start if spec.traversal == "random" else QUASI_RANDOM_FILL
        seed = counter_hash(spec.seed, epoch, STREAM_READER, np.zeros(1, dtype=np.int64))[0]
        return GraphParams(
            tars=tuple(str(p) for p in self.shards.tars),
            indexes=tuple(str(p) for p in self.shards.indexes),
            modalities=self.info.modalities,
            frames=spec.frames,
            shard_id=shard_id,
            num_shards=spec.world_size,
            shuffle=shuffle,
            initial_fill=max(1, min(fill, stop - start)),
            reader_seed=int(seed >> np.uint64(33)),  # 31 bits: DALI seeds are non-negative int
            decoder="mixed" if self.device.type == "cuda" else "cpu",
            whole_frame=self.whole_frame,
        )

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

    def __iter__(self) -> Iterator[Batch]:
        start, epoch = self.cursor.start(), self.cursor.epoch
        params = self.graph_params(epoch)
        slots = SlotParams(
            self.shards,
            spec=self.spec,
            epoch=epoch,
            first=start,
            stop=len(self),
            whole_frame=params.whole_frame,
        )
        pipe = contract_pipeline(params, slots, seed=params.reader_seed, **self._executor())
        names = output_names(self.info.modalities)
        rank_samples = np.diff(dali_part(self.shards.samples, params.shard_id, params.num_shards))
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dali-run")
        try:
            pipe.build()
            for b in range(len(self)):
                outputs = self._run(pool, pipe, params, epoch, b)
                if b < start:
                    continue  # fast-forward of a resumed epoch
                rows = min(self.spec.batch_size, int(rank_samples[0]) - b * self.spec.batch_size)
                raw = self._raw(outputs, names, rows)
                self.cursor.batches = b + 1
                yield finish_batch(raw, self.info, self.device) if self.spec.finish else raw
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            del pipe

    def _run(
        self,
        pool: concurrent.futures.ThreadPoolExecutor,
        pipe: Any,
        params: GraphParams,
        epoch: int,
        batch: int,
    ) -> tuple[Any, ...]:
        """One batch from the pipeline, within the spec's timeout; a DALI failure is re-raised
        naming the damaged sample when the host checks find it."""
        stream = (
            torch.cuda.current_stream(self.device).cuda_stream if params.decoder != "cpu" else None
        )
        future = pool.submit(pipe.run, stream) if stream is not None else pool.submit(pipe.run)
        try:
            return tuple(future.result(timeout=self.spec.timeout_s))
        except concurrent.futures.TimeoutError as e:
            raise TimeoutError(
                f"DALI loader: batch {batch} of epoch {epoch} ({self.spec.split} of "
                f"{self.spec.data_dir}) not ready after {self.spec.timeout_s} s"
            ) from e
        except RuntimeError as e:
            raise self._explain(params, epoch, batch, e) from e

    def _raw(self, outputs: Sequence[Any], names: Sequence[str], rows: int) -> Batch:
        """DALI outputs -> torch tensors (zero-copy through DLPack), padding rows dropped."""
        raw = {}
        for name, tensors in zip(names, outputs, strict=True):
            raw[name] = torch.from_dlpack(tensors.as_tensor())[:rows]
        labels = raw[LABEL]
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(self.info.classes)):
            raise DaliDataError(
                f"{self.spec.data_dir}: split {self.spec.split}: samples "
                f"{raw[INDEX].reshape(-1).tolist()} carry labels outside the "
                f"{len(self.info.classes)} classes: a shard is damaged"
            )
        return raw

    def batch_indices(self, params: GraphParams, batch: int) -> np.ndarray:
        """int64: the samples of batch `batch` of the epoch `params` reads (the reader alone)."""
        pipe = order_pipeline(
            params, seed=params.reader_seed, **{**self._executor(), "device_id": None}
        )
        pipe.build()
        for _ in range(batch + 1):
            (indices,) = pipe.run()
        start, stop = dali_part(self.shards.samples, params.shard_id, params.num_shards)
        rows = min(self.spec.batch_size, stop - start - batch * self.spec.batch_size)
        return np.asarray(indices.as_tensor()).reshape(-1)[:rows]

    def _explain(self, params: GraphParams, epoch: int, batch: int, error: Exception) -> Exception:
        """The error to raise after DALI failed on a batch: the damaged sample when found."""
        try:
            indices = self.batch_indices(params, batch)
        except RuntimeError:
            indices = np.zeros(0, dtype=np.int64)
        where = f"batch {batch} of epoch {epoch} of split {self.spec.split!r}"
        for index in indices.tolist():
            if not 0 <= index < self.shards.samples:
                return DaliDataError(f"{where}: a sample's index member says {index}: damaged")
            problem = check_sample(self.shards, self.info, index)
            if problem is not None:
                tar = self.shards.tars[self.shards.shard[index]]
                return DaliDataError(f"{tar}: sample {index:08d} ({where}): {problem}")
        return DaliDataError(
            f"DALI failed on {where} (samples {indices.tolist()}, shards "
            f"{[str(t) for t in self.shards.tars]}) and the host checks found no damaged sample: "
            f"{error}"
        )


def build(spec: LoaderSpec) -> DaliLoader:
    """`pipelines.build_loader`'s entry for `pipeline="dali"`."""
    return DaliLoader(spec)
