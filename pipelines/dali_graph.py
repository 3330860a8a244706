"""The DALI graph: the batch source's JPEGs and rows -> uint8 (K, size, size, 3) per sample.

One `@pipeline_def` composed of small helpers; the executor's settings (batch size, threads,
device, prefetch) are the call's, apart from the graph's (`GraphParams`). The same graph runs on a
CPU (libjpeg-turbo, OpenCV's warp) and on a GPU (nvJPEG through `mixed`, CV-CUDA's warp):

    fn.external_source(BatchSource)                    host, one Python call per batch
      per slot k: the JPEG of the chosen frame, the slot's row
      -> decode: the row's region (`decoders.image_slice`, the CPU's default) or the whole frame
         (`decoders.image`, the GPU's: its hardware decoder takes no regions)
      -> warp_perspective: crop + resize to size x size + flip, one bilinear pass
      -> stack the K slots: uint8 (K, size, size, 3)
    PCM, tokens, label, index: as stored (PCM and tokens copied to the GPU in the graph there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.types import DALIDataType as DType

from pipelines.dali_source import ROW, BatchSource
from preprocess.schema import AUDIO, INDEX, LABEL, TEXT, VIDEO

CUTS = ("", "decode", "warp")
_DTYPES: dict[str, DType] = {
    "rows": DType.FLOAT,
    AUDIO: DType.INT16,
    TEXT: DType.INT32,
    LABEL: DType.INT64,
    INDEX: DType.INT64,
}


@dataclass(frozen=True, kw_only=True)
class GraphParams:
    """What the graph computes; the executor's settings are the `@pipeline_def` call's."""

    modalities: tuple[str, ...]
    frames: int
    decoder: str
    """`mixed` (nvJPEG, outputs on the GPU) or `cpu` (libjpeg-turbo)."""
    whole_frame: bool
    """Decode whole frames (`decoders.image`: nvJPEG's hardware decoder takes no regions) or only
    each slot's region (`decoders.image_slice`: less entropy decoding and colour conversion on
    CPUs)."""
    hw_decoder_load: float | None = None
    """`mixed` only: the share of the JPEG data nvJPEG's hardware decoder takes (DALI's default
    0.65 when None); the rest goes to its hybrid decoder, whose Huffman stage runs on host
    threads (`docs/loaders.md`: the host cost per sample on a GPU node)."""
    cut: str = ""
    """Benchmarks only: `decode` = no decode, no warp (the graph returns the JPEGs and rows it
    would decode: the host work a GPU graph leaves on the CPU); `warp` = decode, no warp (the
    decoded regions are returned); "" = the whole graph."""

    def __post_init__(self) -> None:
        if self.cut not in CUTS:
            raise ValueError(f"cut must be one of {CUTS}, got {self.cut!r}")
        if self.hw_decoder_load is not None and not 0.0 <= self.hw_decoder_load <= 1.0:
            raise ValueError(f"hw_decoder_load must be in [0, 1], got {self.hw_decoder_load}")


def decode_args(params: GraphParams) -> dict[str, Any]:
    """The decoders' arguments: RGB; on the GPU, libjpeg-turbo's chroma upsampling (so nvJPEG's
    colours are the CPU graph's, within rounding)."""
    args: dict[str, Any] = {"device": params.decoder, "output_type": types.DALIImageType.RGB}
    if params.decoder == "mixed":
        args["jpeg_fancy_upsampling"] = True
        if params.hw_decoder_load is not None:
            args["hw_decoder_load"] = params.hw_decoder_load
    return args


def crop_resize_flip(jpeg: Any, row: Any, params: GraphParams) -> Any:
    """uint8 (size, size, 3): decode the row's region of the JPEG, warp it by the row's matrix."""
    if params.whole_frame:
        region = fn.decoders.image(jpeg, **decode_args(params))
    else:
        region = fn.decoders.image_slice(
            jpeg,
            row[1:3],  # (x, y)
            row[3:5],  # (w, h)
            axis_names="WH",
            normalized_anchor=False,
            normalized_shape=False,
            **decode_args(params),
        )
    return fn.experimental.warp_perspective(
        region,
        matrix=fn.reshape(row[5:14], shape=[3, 3]),
        size=row[14:16],
        pixel_origin="corner",
        border_mode="replicate",
        interp_type=types.DALIInterpType.INTERP_LINEAR,
    )


def decoded_regions(inputs: Mapping[str, Any], params: GraphParams) -> list[Any]:
    """The `warp` cut's outputs: each slot's decoded region (uint8 (h, w, 3), ragged)."""
    rows = inputs["rows"]
    regions = []
    for k in range(params.frames):
        row = rows[k * ROW : (k + 1) * ROW]
        if params.whole_frame:
            regions.append(fn.decoders.image(inputs[f"jpeg{k}"], **decode_args(params)))
        else:
            regions.append(
                fn.decoders.image_slice(
                    inputs[f"jpeg{k}"],
                    row[1:3],
                    row[3:5],
                    axis_names="WH",
                    normalized_anchor=False,
                    normalized_shape=False,
                    **decode_args(params),
                )
            )
    return regions


def video_frames(inputs: Mapping[str, Any], params: GraphParams) -> Any:
    """uint8 (K, size, size, 3): the K slots of a sample, each from its row of `rows`."""
    rows = inputs["rows"]
    slots = [
        crop_resize_flip(inputs[f"jpeg{k}"], rows[k * ROW : (k + 1) * ROW], params)
        for k in range(params.frames)
    ]
    return fn.stack(*slots)


def output_names(modalities: Sequence[str], frames: int, cut: str = "") -> tuple[str, ...]:
    """The graph's outputs, in order: the raw batch keys of `finish_batch` (a cut graph: the
    JPEGs or the decoded regions, and the rows, in place of the frames)."""
    video: tuple[str, ...] = ()
    if VIDEO in modalities:
        video = (VIDEO,)
        if cut:
            video = (*(f"{'jpeg' if cut == 'decode' else 'region'}{k}" for k in range(frames)),)
            video = (*video, "rows")
    return (*video, *(m for m in (AUDIO, TEXT) if m in modalities), LABEL, INDEX)


def read_source(source: BatchSource) -> dict[str, Any]:
    """The source's outputs as DataNodes, by name (dtypes declared, so bad bytes fail early)."""
    dtypes = [_DTYPES.get(name, DType.UINT8) for name in source.outputs]
    nodes = fn.external_source(
        source=source,
        num_outputs=len(source.outputs),
        batch=True,
        dtype=dtypes,
    )
    return dict(zip(source.outputs, nodes, strict=True))


@pipeline_def
def contract_pipeline(params: GraphParams, source: BatchSource) -> tuple[Any, ...]:
    """The raw batch of the contract (see the module's docstring), one sample per DataNode."""
    inputs = read_source(source)
    if params.cut == "warp":
        inputs.update({f"region{k}": r for k, r in enumerate(decoded_regions(inputs, params))})
    outputs = []
    for name in output_names(params.modalities, params.frames, params.cut):
        if name == VIDEO:
            outputs.append(video_frames(inputs, params))
        elif name in (AUDIO, TEXT) and params.decoder != "cpu":
            outputs.append(inputs[name].gpu())
        else:
            outputs.append(inputs[name])  # label, index: host tensors, checked there
    return tuple(outputs)
