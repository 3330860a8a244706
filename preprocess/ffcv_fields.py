"""FFCV fields for what FFCV lacks: a clip's variable number of JPEG frames, and their decoders.

`JPEGFramesField` stores a sample's frames in one allocation (one contiguous read per sample):

    uint32 count                       number of frames, n
    uint32 offsets[n + 1]              byte offset of each JPEG from the start of the JPEG data;
                                       offsets[0] = 0, offsets[n] = total JPEG bytes
    uint8  jpeg[offsets[n]]            the JPEG files, concatenated, in time order

all little-endian; the JPEG data starts at byte 4 * (n + 2). The field's metadata row (one per
sample, read by decoders before any data) is `ptr`, `size` (the allocation), `frames` (n),
`height`, `width` (every frame of a clip has the same size). A decoder that wants K frames reads
`frames` from the metadata, picks K indices and decodes only those JPEGs.

Decoders here: `FrameBytesDecoder` (the raw allocation, zero-padded to the largest) and
`AllFramesDecoder` (every frame decoded to (max_frames, H, W, 3) uint8, for datasets whose frames
share one size). The loaders add their K-frame RandomResizedCrop decoder next to these. A decoder
for this field must subclass `FrameBytesDecoder` (the field's default decoder class): FFCV's
pipeline treats the first operation as the field's decoder only when it is an instance of
`get_decoder_class()` (and then calls it with the metadata and storage state), as RGBImageField's
crop decoders subclass SimpleRGBImageDecoder.
Audio, text, label and index use FFCV's own `NDArrayField` (int16 / int32; never float16: numba has
no float16 and the loader thread dies) and `IntField`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from ffcv.fields import IntField, NDArrayField
from ffcv.fields.base import ARG_TYPE, Field
from ffcv.libffcv import imdecode, memcpy
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from preprocess.schema import AUDIO, INDEX, LABEL, TEXT, VIDEO, BuildOptions

FRAMES_METADATA = np.dtype(
    [("ptr", "<u8"), ("size", "<u8"), ("frames", "<u4"), ("height", "<u2"), ("width", "<u2")]
)


def pack_frames(jpegs: Sequence[bytes | np.ndarray]) -> np.ndarray:
    """The field's byte layout for one sample: uint8 (4 * (n + 2) + total JPEG bytes,)."""
    sizes = np.array([len(j) for j in jpegs], dtype=np.uint64)
    header = np.concatenate([[len(jpegs), 0], np.cumsum(sizes)]).astype("<u4")
    body = b"".join(bytes(j) for j in jpegs)
    return np.frombuffer(header.tobytes() + body, dtype=np.uint8)


def unpack_frames(blob: np.ndarray | bytes) -> list[bytes]:
    """Inverse of `pack_frames`; trailing zero padding (FrameBytesDecoder's) is ignored."""
    data = np.frombuffer(blob, dtype=np.uint8) if isinstance(blob, bytes) else blob
    count = int(data[:4].view("<u4")[0])
    offsets = data[4 : 4 * (count + 2)].view("<u4").astype(np.int64)
    base = 4 * (count + 2)
    return [data[base + offsets[i] : base + offsets[i + 1]].tobytes() for i in range(count)]


class JPEGFramesField(Field):
    """A variable number of same-sized JPEG frames per sample (see the module docstring).

    The writer passes `(jpegs, (height, width))` per sample.
    """

    @property
    def metadata_type(self) -> np.dtype:
        return FRAMES_METADATA

    @staticmethod
    def from_binary(binary: ARG_TYPE) -> Field:
        return JPEGFramesField()

    def to_binary(self) -> ARG_TYPE:
        return np.zeros(1, dtype=ARG_TYPE)[0]

    def encode(self, destination: np.ndarray, value: Any, malloc: Callable) -> None:
        jpegs, (height, width) = value
        blob = pack_frames(jpegs)
        ptr, buffer = malloc(blob.size)
        buffer[:] = blob
        destination["ptr"] = ptr
        destination["size"] = blob.size
        destination["frames"] = len(jpegs)
        destination["height"] = height
        destination["width"] = width

    def get_decoder_class(self) -> type[Operation]:
        return FrameBytesDecoder


class FrameBytesDecoder(Operation):
    """The raw allocation of each sample, uint8 (B, max size), zero-padded: `unpack_frames` it."""

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        shape = (int(self.metadata["size"].max()),)
        return (
            replace(previous_state, jit_mode=True, shape=shape, dtype=np.dtype("<u1")),
            AllocationQuery(shape, dtype=np.dtype("<u1")),
        )

    def generate_code(self) -> Callable:
        mem_read = self.memory_read
        my_memcpy = Compiler.compile(memcpy)
        my_range = Compiler.get_iterator()

        def decode(batch_indices, destination, metadata, storage_state):
            for dst_ix in my_range(batch_indices.shape[0]):
                field = metadata[batch_indices[dst_ix]]
                data = mem_read(field["ptr"], storage_state)
                destination[dst_ix, :] = 0
                my_memcpy(data, destination[dst_ix])
            return destination[: batch_indices.shape[0]]

        return decode


def _u32(data: np.ndarray, pos: int) -> np.uint32:
    """Little-endian uint32 at byte `pos` (alignment-free, numba-compilable)."""
    return (
        np.uint32(data[pos])
        | (np.uint32(data[pos + 1]) << np.uint32(8))
        | (np.uint32(data[pos + 2]) << np.uint32(16))
        | (np.uint32(data[pos + 3]) << np.uint32(24))
    )


class AllFramesDecoder(FrameBytesDecoder):
    """Every frame of each sample decoded (libjpeg-turbo): uint8 (B, max_frames, H, W, 3).

    Frames past a sample's count are zero. Needs one frame size over the whole dataset (as FFCV's
    SimpleRGBImageDecoder); it exists for checks and small datasets, the training loaders decode K.
    """

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        heights, widths = self.metadata["height"], self.metadata["width"]
        if heights.min() != heights.max() or widths.min() != widths.max():
            raise TypeError(
                "AllFramesDecoder needs one frame size in the dataset, found heights "
                f"{heights.min()}..{heights.max()} and widths {widths.min()}..{widths.max()}"
            )
        shape = (int(self.metadata["frames"].max()), int(heights[0]), int(widths[0]), 3)
        return (
            replace(previous_state, jit_mode=True, shape=shape, dtype=np.dtype("<u1")),
            AllocationQuery(shape, dtype=np.dtype("<u1")),
        )

    def generate_code(self) -> Callable:
        mem_read = self.memory_read
        imdecode_c = Compiler.compile(imdecode)
        u32 = Compiler.compile(_u32)
        my_range = Compiler.get_iterator()

        def decode(batch_indices, destination, metadata, storage_state):
            for dst_ix in my_range(batch_indices.shape[0]):
                field = metadata[batch_indices[dst_ix]]
                data = mem_read(field["ptr"], storage_state)
                height, width = field["height"], field["width"]
                count = u32(data, 0)
                base = 4 * (count + 2)
                for f in range(count):
                    start = base + u32(data, 4 * (f + 1))
                    end = base + u32(data, 4 * (f + 2))
                    imdecode_c(
                        data[start:end],
                        destination[dst_ix, f],
                        height,
                        width,
                        height,
                        width,
                        0,
                        0,
                        1,
                        1,
                        False,
                        False,
                    )
                destination[dst_ix, count:] = 0
            return destination[: batch_indices.shape[0]]

        return decode


def dataset_fields(modalities: Sequence[str], options: BuildOptions) -> dict[str, Field]:
    """The .beton's fields in storage order (names = schema field names)."""
    fields: dict[str, Field] = {}
    if VIDEO in modalities:
        fields[VIDEO] = JPEGFramesField()
    if AUDIO in modalities:
        fields[AUDIO] = NDArrayField(np.dtype("<i2"), (options.audio_samples,))
    if TEXT in modalities:
        fields[TEXT] = NDArrayField(np.dtype("<i4"), (options.text_len,))
    fields[LABEL] = IntField()
    fields[INDEX] = IntField()
    return fields


CUSTOM_FIELDS: dict[str, type[Field]] = {VIDEO: JPEGFramesField}
"""Pass as `ffcv.loader.Loader(..., custom_fields=CUSTOM_FIELDS)`."""
