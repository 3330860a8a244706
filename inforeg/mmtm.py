"""MMTM mid-fusion between two staged image encoders: the model of Greedy (Wu et al., ICML 2022).

Transcribed from nyukat/greedy_multimodal_learning @ a190e03 (docs/methods.md, "Greedy"):
``src/model.py`` lines 53-108 run two ResNet-18 trunks layer by layer and put an MMTM module
after layers 2, 3 and 4; ``src/balanced_mmtm.py`` lines 16-154 is the module (squeeze each
branch's map to its channel means, concatenate, one shared ``fc_squeeze`` + ReLU, one excitation
layer + sigmoid per branch: a channel gate per branch that rescales its map).

Here (``model.fusion: mmtm``) the two encoders' trunks run stage by stage (`StagedEncoder`: the
``cnn`` and ``resnet18`` encoders of `inforeg.model`, four stages each) and an `MMTM` follows
each of their last three stages; the pooled features go to the model's one linear head as in
late fusion. A clip's K frames run through the trunk as K images (B*K, C, H, W): its squeeze is
the per-clip channel mean (over the K frames and space), and its gate is broadcast back over
the K frames.

Each `MMTM` keeps the running average of each branch's gate over every forward (validation
included, as the code) in registered buffers, each from its OWN branch's gates and with its own
width (the code updates the second from the first's gates and sizes it like the first: fixed
here). In training, a branch whose ``cut`` flag is set (Greedy's re-balancing window caring for
that modality, written by `inforeg.regulators.greedy`) gets its detached running average instead
of its gate, so no information flows into it from the other branch. ``cut`` is never set by any
other regulator, so a model with ``fusion: mmtm`` trains under every method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from einops import reduce, repeat
from torch import Tensor, nn

from inforeg.functional.greedy import mmtm_excite, running_gate

MMTM_STAGES = (1, 2, 3)
"""The 0-based trunk stages followed by an MMTM (ResNet-18's layers 2-4, as the authors)."""


class StagedEncoder(Protocol):
    """An encoder whose trunk runs stage by stage (`inforeg.model.ImageEncoder`)."""

    stage_ends: tuple[int, ...]
    stage_channels: tuple[int, ...]

    def fold(self, x: Tensor) -> Tensor: ...

    def run_stage(self, stage: int, fmap: Tensor) -> Tensor: ...

    def pool(self, fmap: Tensor, batch: int) -> Tensor: ...


class MMTM(nn.Module):
    """One MMTM between two branches of `channels` (C_0, C_1) channels."""

    forwards: Tensor  # () long: forwards so far (the running averages' count)
    cut: Tensor  # (2,) bool: branch i's gate is replaced by its running average in training

    def __init__(self, channels: tuple[int, int], ratio: int = 4):
        super().__init__()
        total = sum(channels)
        hidden = max(1, int(2 * total / ratio))  # the code's dim_out
        self.channels = channels
        self.squeeze = nn.Linear(total, hidden)
        self.excite = nn.ModuleList([nn.Linear(hidden, c) for c in channels])
        for i, c in enumerate(channels):
            self.register_buffer(f"running_gate_{i}", torch.zeros(c))
        self.register_buffer("forwards", torch.zeros((), dtype=torch.long))
        self.register_buffer("cut", torch.zeros(2, dtype=torch.bool), persistent=False)

    def param_modalities(self) -> dict[str, int | None]:
        """Parameter name -> the branch it belongs to; None: shared by both (the squeeze)."""
        out: dict[str, int | None] = {
            f"squeeze.{n}": None for n, _ in self.squeeze.named_parameters()
        }
        for i, layer in enumerate(self.excite):
            out.update({f"excite.{i}.{n}": i for n, _ in layer.named_parameters()})
        return out

    def excite_layers(self) -> list[nn.Linear]:
        return [layer for layer in self.excite if isinstance(layer, nn.Linear)]

    def running_gates(self) -> list[Tensor]:
        gates = [getattr(self, f"running_gate_{i}") for i in range(len(self.channels))]
        return [g for g in gates if isinstance(g, Tensor)]

    def forward(self, squeezed: Sequence[Tensor]) -> list[Tensor]:
        """(B, C_m) channel means per branch -> (B, C_m) gates (after updating the averages)."""
        excite = [(layer.weight, layer.bias) for layer in self.excite_layers()]
        gates = mmtm_excite(squeezed, (self.squeeze.weight, self.squeeze.bias), excite)
        averages = self.running_gates()
        with torch.no_grad():  # balanced_mmtm.py lines 113-116, before the substitution
            for average, gate in zip(averages, gates, strict=True):
                average.copy_(running_gate(average, gate, self.forwards))
            self.forwards += 1
        if not self.training:
            return gates
        return [
            torch.where(self.cut[i], average.detach().to(gate.dtype).expand_as(gate), gate)
            for i, (average, gate) in enumerate(zip(averages, gates, strict=True))
        ]


def squeeze_map(fmap: Tensor, batch: int) -> Tensor:
    """(B*K, C, H, W) or (B, C, F, T) -> (B, C): the per-sample channel mean (frames too)."""
    return reduce(fmap, "(b k) c h w -> b c", "mean", b=batch)


def excite_map(fmap: Tensor, gate: Tensor) -> Tensor:
    """`fmap` (B*K, C, H, W) rescaled by its clip's gate (B, C), broadcast over the K frames."""
    k = fmap.shape[0] // gate.shape[0]
    return fmap * repeat(gate, "b c -> (b k) c 1 1", k=k)


def build_bypass(encoders: Mapping[str, nn.Module], ratio: int) -> dict[str, MMTM]:
    """``stageN`` -> the MMTM after 1-based stage N of both trunks (N = 2, 3, 4)."""
    if len(encoders) != 2:
        raise ValueError(f"model.fusion: mmtm couples exactly two encoders, got {len(encoders)}")
    staged = []
    for modality, enc in encoders.items():
        ends = getattr(enc, "stage_ends", ())
        if len(ends) != 4:
            raise ValueError(
                f"model.fusion: mmtm needs encoders that run stage by stage; the "
                f"{modality!r} encoder ({type(enc).__name__}) has no four stages"
            )
        staged.append(tuple(int(c) for c in getattr(enc, "stage_channels")))  # noqa: B009
    return {f"stage{s + 1}": MMTM((staged[0][s], staged[1][s]), ratio) for s in MMTM_STAGES}


def mmtm_features(
    encoders: Mapping[str, nn.Module] | nn.ModuleDict,
    bypass: Mapping[str, nn.Module] | nn.ModuleDict,
    batch: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """modality -> (B, D_m) pooled features: the two trunks stage by stage, MMTM after each stage
    that `bypass` names (``stageN``, 1-based)."""
    names = list(encoders)
    staged: list[StagedEncoder] = [encoders[m] for m in names]  # type: ignore[misc]
    sizes = [batch[m].shape[0] for m in names]
    maps = [enc.fold(batch[m]) for enc, m in zip(staged, names, strict=True)]
    for stage in range(len(staged[0].stage_ends)):
        maps = [enc.run_stage(stage, f) for enc, f in zip(staged, maps, strict=True)]
        key = f"stage{stage + 1}"
        if key in bypass:
            gates = bypass[key]([squeeze_map(f, b) for f, b in zip(maps, sizes, strict=True)])
            maps = [excite_map(f, g) for f, g in zip(maps, gates, strict=True)]
    return {m: enc.pool(f, b) for m, enc, f, b in zip(names, staged, maps, sizes, strict=True)}
