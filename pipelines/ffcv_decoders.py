"""The FFCV decoder of the training loaders: K chosen frames, decoded, cropped and resized in JIT.

`KFramesDecoder` reads `preprocess.ffcv_fields.JPEGFramesField` (its layout is documented there:
uint32 count, uint32 offsets[count + 1], the JPEGs) and, per sample, decodes only the K frames the
contract chose (libjpeg-turbo, FFCV's `imdecode`), cuts each frame's box and resizes it to
size x size (OpenCV's bilinear `cv::hal::resize`), flips it when asked: all in one numba
function run in parallel over the batch, as FFCV's RandomResizedCropRGBImageDecoder.

The per-sample parameters are not drawn in here. FFCV compiles a pipeline once, so a decoder cannot
see the epoch; instead the loader hands the decoder, as the field's metadata, a per-epoch copy of
the metadata rows extended with the contract's choices (`epoch_metadata`): the frames, boxes and
flips of `pipelines.contract.video_params`. The decoder writes a status per sample into that copy
(0 = fine), so a broken sample is reported by the loader by name instead of yielding garbage.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import replace

import numba
import numpy as np
from ffcv.libffcv import imdecode
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from pipelines.contract import VideoParams

STATUS_OK, STATUS_LAYOUT, STATUS_JPEG = 0, 1, 2
STATUS_TEXT = {
    STATUS_LAYOUT: "the frame table is inconsistent with the metadata (corrupt bytes)",
    STATUS_JPEG: "JPEG decoding failed (corrupt frame)",
}


def epoch_dtype(frames_metadata: np.dtype, k: int) -> np.dtype:
    """The video field's metadata row plus the epoch's choices and the decoder's status."""
    extra = [
        ("choice", "<i4", (k,)),  # frame positions among the sample's stored frames
        ("box", "<i4", (k, 4)),  # (top, left, height, width) per chosen frame
        ("flip", "<u1", (k,)),
        ("status", "<i4"),
    ]
    return np.dtype([(name, frames_metadata[name]) for name in frames_metadata.names or ()] + extra)


def epoch_metadata(metadata: np.ndarray, column: str, k: int) -> np.ndarray:
    """A copy of the reader's metadata (all fields) with `column` (the video field) extended by
    `epoch_dtype`; the choices are zero until `set_params` fills the rows an epoch reads."""
    video = metadata[column]
    names = metadata.dtype.names or ()
    dtype = np.dtype(
        [
            (name, epoch_dtype(video.dtype, k) if name == column else metadata.dtype[name])
            for name in names
        ]
    )
    out = np.zeros(metadata.shape, dtype=dtype)
    for name in names:
        if name != column:
            out[name] = metadata[name]
    ext = out[column]
    for name in video.dtype.names or ():
        ext[name] = video[name]
    return out


def set_params(metadata: np.ndarray, column: str, indices: np.ndarray, params: VideoParams) -> None:
    """Rows `indices` of an `epoch_metadata` copy carry `params` (row i = sample indices[i])."""
    ext = metadata[column]
    ext["choice"][indices] = params.frames
    ext["box"][indices] = params.boxes
    ext["flip"][indices] = params.flips


CV_8UC3, INTER_LINEAR = 16, 1


def opencv_resize() -> Callable:
    """`cv::hal::resize` of the OpenCV that FFCV's libffcv is linked with, as a ctypes function.

    FFCV's own `resize_crop` is hard-wired to INTER_AREA, whose general path (shrinking both sides
    by a non-integer factor: every eval frame, a third of the train crops) costs ~5x a decode;
    bilinear costs about a third of one. `hal::resize` takes plain pointers and sizes, so the
    compiled decoder calls it directly. Its arguments: type, src, src step, src width, src height,
    dst, dst step, dst width, dst height, dst/src width, dst/src height, interpolation.
    """
    import ffcv.libffcv  # noqa: F401  (loads libffcv, and with it its OpenCV)

    with open("/proc/self/maps", encoding="utf-8") as f:
        paths = sorted({line.split()[-1] for line in f if "libopencv_imgproc" in line})
    if not paths:
        raise RuntimeError("FFCV's libffcv is loaded without libopencv_imgproc: cannot resize")
    fn = ctypes.CDLL(paths[0])._ZN2cv3hal6resizeEiPKhmiiPhmiiddi
    fn.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
        ctypes.c_double, ctypes.c_double, ctypes.c_int,
    ]  # fmt: skip
    fn.restype = None
    return fn


def _u32(data: np.ndarray, pos: np.int64) -> np.int64:
    """Little-endian uint32 at byte `pos` of a uint8 array, as int64 (no alignment needed)."""
    return (
        np.int64(data[pos])
        | (np.int64(data[pos + 1]) << 8)
        | (np.int64(data[pos + 2]) << 16)
        | (np.int64(data[pos + 3]) << 24)
    )


def _copy_flipped(src: np.ndarray, dst: np.ndarray) -> None:
    """dst (S, S, 3) = src mirrored left-right."""
    rows, cols = src.shape[0], src.shape[1]
    for r in range(rows):
        for c in range(cols):
            for ch in range(3):
                dst[r, cols - 1 - c, ch] = src[r, c, ch]


class KFramesDecoder(Operation):
    """uint8 (B, K, size, size, 3): the contract's K frames per sample, cropped, resized, flipped.

    Needs the per-epoch metadata of `epoch_metadata` (the loader in `pipelines.ffcv` passes it).
    `decode=False` (a benchmark of the pipeline's other work) checks each slot's bytes but neither
    decodes nor resizes: the frames are left as they were.
    """

    def __init__(self, size: int, k: int, *, decode: bool = True):
        super().__init__()
        self.size, self.k, self.decode = size, k, decode

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        max_h, max_w = int(self.metadata["height"].max()), int(self.metadata["width"].max())
        shape = (self.k, self.size, self.size, 3)
        u1 = np.dtype("<u1")
        # Scratch per sample: one decoded frame, then one resized frame before its flip.
        scratch = (max_h * max_w * 3 + self.size * self.size * 3,)
        return (
            replace(previous_state, jit_mode=True, shape=shape, dtype=u1),
            (AllocationQuery(shape, u1), AllocationQuery(scratch, u1)),
        )

    def generate_code(self) -> Callable:
        mem_read = self.memory_read
        imdecode_c = Compiler.compile(imdecode)
        resize = opencv_resize()
        u32 = Compiler.compile(_u32)
        copy_flipped = Compiler.compile(_copy_flipped)
        my_range = Compiler.get_iterator()
        max_threads = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set at import
        k, size, decode_frames = self.k, self.size, self.decode
        ok, bad_layout, bad_jpeg = STATUS_OK, STATUS_LAYOUT, STATUS_JPEG

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, scratch = my_storage
            for dst_ix in my_range(batch_indices.shape[0]):
                sample = batch_indices[dst_ix]
                field = metadata[sample]
                data = mem_read(field["ptr"], storage_state)
                height, width = np.int64(field["height"]), np.int64(field["width"])
                count = np.int64(field["frames"])
                pixels = height * width * 3
                # scratch per thread rather than per sample, so that it stays in the core's cache
                # (thread ids are < NUMBA_NUM_THREADS; with fewer rows, one row per sample)
                per_thread = scratch.shape[0] >= max_threads
                slot_ix = np.int64(numba.get_thread_id()) if per_thread else np.int64(dst_ix)
                frame = scratch[slot_ix, :pixels].reshape(height, width, 3)
                resized = scratch[slot_ix, pixels : pixels + size * size * 3].reshape(size, size, 3)
                base = 4 * (count + 2)
                status = ok
                if data.shape[0] < base or u32(data, np.int64(0)) != count:
                    status = bad_layout
                for slot in range(k):
                    if status != ok:
                        break
                    f = np.int64(field["choice"][slot])
                    start = base + u32(data, 4 * (f + 1))
                    end = base + u32(data, 4 * (f + 2))
                    if f < 0 or f >= count or end <= start or end > data.shape[0]:
                        status = bad_layout
                        break
                    if not decode_frames:
                        continue
                    code = imdecode_c(
                        data[start:end], frame, height, width, height, width, 0, 0, 1, 1,
                        False, False,
                    )  # fmt: skip
                    if code != 0:
                        status = bad_jpeg
                        break
                    top, left = np.int64(field["box"][slot, 0]), np.int64(field["box"][slot, 1])
                    h, w = np.int64(field["box"][slot, 2]), np.int64(field["box"][slot, 3])
                    inside = top >= 0 and left >= 0 and top + h <= height and left + w <= width
                    if h < 1 or w < 1 or not inside:
                        status = bad_layout  # OpenCV would abort the process on such a box
                        break
                    out = resized if field["flip"][slot] else destination[dst_ix, slot]
                    resize(
                        CV_8UC3, frame[top:, left:].ctypes.data, width * 3, w, h,
                        out.ctypes.data, size * 3, size, size, size / w, size / h, INTER_LINEAR,
                    )  # fmt: skip
                    if field["flip"][slot]:
                        copy_flipped(resized, destination[dst_ix, slot])
                metadata[sample]["status"] = status
            return destination[: batch_indices.shape[0]]

        decode.is_parallel = True  # type: ignore[attr-defined]
        return decode
