"""The model's training FLOPs per sample, counted once, and the device's peak for MFU.

`training_flops` runs one forward and backward of a copy of the model built on the ``meta``
device (no memory, no numbers, no effect on the real model, its BatchNorm statistics or any RNG)
under `torch.utils.flop_counter.FlopCounterMode`, on a batch of the shapes the loaders yield, and
splits the count by module: each modality's encoder, the head, and the total (FLOPs = 2 x
multiply-accumulates, as the counter and the MFU literature count them).

MFU = achieved FLOP/s per device / the device's dense peak for the compute dtype: a small table
of known GPUs below, or ``run.peak_tflops``. On a CPU there is no table: MFU is reported against
``run.peak_tflops`` only, otherwise omitted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from inforeg.model import InputSpec, ModelConfig, build_model

# Dense (no sparsity) tensor-core peaks in TFLOP/s, per dtype, from the vendors' data sheets.
# Matched as substrings of torch.cuda.get_device_name(), most specific first.
PEAK_TFLOPS: tuple[tuple[str, Mapping[torch.dtype, float]], ...] = (
    ("H200", {torch.bfloat16: 989.4, torch.float16: 989.4, torch.float32: 66.9}),
    ("H100 PCIe", {torch.bfloat16: 756.0, torch.float16: 756.0, torch.float32: 51.2}),
    ("H100", {torch.bfloat16: 989.4, torch.float16: 989.4, torch.float32: 66.9}),
    ("A100", {torch.bfloat16: 312.0, torch.float16: 312.0, torch.float32: 19.5}),
    ("L40S", {torch.bfloat16: 362.1, torch.float16: 362.1, torch.float32: 91.6}),
    ("L4", {torch.bfloat16: 121.0, torch.float16: 121.0, torch.float32: 30.3}),
    ("V100", {torch.float16: 125.0, torch.float32: 15.7}),
)


@dataclass(frozen=True)
class ModelFlops:
    """Training FLOPs (forward + backward) per sample."""

    total: float
    by_module: dict[str, float]
    """``encoders.<modality>`` and ``head`` (the rest, if any, is loss and glue)."""

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / 1e9:.3g}" for k, v in self.by_module.items())
        return f"{self.total / 1e9:.3g} GFLOP per sample, forward + backward ({parts})"


def example_batch(
    spec: InputSpec,
    frames: int,
    size: int,
    audio_shape: tuple[int, int] | None,
    modalities: list[str],
    batch: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """A batch of the loaders' shapes (values irrelevant), for the model's modalities."""
    out: dict[str, torch.Tensor] = {}
    if "video" in modalities:
        out["video"] = torch.zeros(batch, frames, 3, size, size, device=device)
    if "audio" in modalities:
        if audio_shape is None:
            raise ValueError("the dataset records no audio feature shape")
        out["audio"] = torch.zeros(batch, 1, *audio_shape, device=device)
    if "text" in modalities:
        out["text"] = torch.ones(batch, spec.text_len, dtype=torch.long, device=device)
        out["text_mask"] = torch.ones(batch, spec.text_len, dtype=torch.bool, device=device)
    out["label"] = torch.zeros(batch, dtype=torch.long, device=device)
    return out


def training_flops(
    cfg: ModelConfig,
    spec: InputSpec,
    num_classes: int,
    frames: int,
    size: int,
    audio_shape: tuple[int, int] | None,
    batch: int = 2,
) -> ModelFlops:
    """Forward + backward FLOPs per sample of `cfg`'s model on the loaders' shapes.

    The total is one counted pass of the whole model and its loss; each module's share is a
    pass of that module alone (the counter's own per-module split mixes up modules in backward).
    """
    meta = torch.device("meta")
    with torch.random.fork_rng(devices=[]), meta:
        model = build_model(cfg, spec, num_classes)
    inputs = example_batch(spec, frames, size, audio_shape, list(cfg.encoders), batch, meta)

    def count(run: Callable[[], None]) -> float:
        counter = FlopCounterMode(display=False)
        with counter:
            run()
        return counter.get_total_flops() / batch

    def whole() -> None:
        out = model(inputs)
        F.cross_entropy(out.logits, inputs["label"]).backward()

    def encoder(m: str) -> Callable[[], None]:
        mask = inputs.get("text_mask") if m == "text" else None
        return lambda: model.encoders[m](inputs[m], mask).sum().backward()

    features = torch.zeros(batch, model.head.in_features, device=meta, requires_grad=True)
    by_module = {f"encoders.{m}": count(encoder(m)) for m in cfg.encoders}
    by_module["head"] = count(lambda: model.head(features).sum().backward())
    return ModelFlops(total=count(whole), by_module=by_module)


def peak_tflops(device: torch.device, dtype: torch.dtype, override: float) -> float | None:
    """The device's dense peak for `dtype` (TFLOP/s): `override` when > 0, else the table's
    entry for a known GPU; None on a CPU or an unknown GPU."""
    if override > 0:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS:
        if key in name:
            return peaks.get(dtype)
    return None
