"""ModalityGroups: which parameters belong to which modality, from the model's structure.

Built once from ``model.encoders`` (an ``nn.ModuleDict`` modality -> encoder, in the head's
concatenation order), never from substrings of parameter names. Every trainable encoder
parameter gets one `ParamInfo` (its index is the parameter's identity for the kernels); the head
and anything outside the encoders belong to no modality and are never touched by a regulator.

Flat gradient buffers (DeepSpeed ZeRO 1/2 partitions, or `ParamGradients(contiguous=True)`) are
described by `Segment`s: a range of the buffer holding a range of one parameter. Segments carry
the parameter's index; its modality and kind come from here, so there is one source of truth.

Cross-modal modules outside the encoders (``model.bypass``: Greedy's MMTM, `inforeg.mmtm`) are
a second table, `BypassInfo`, never part of ``params``: no regulator's fused pass touches them.
Each bypass module says which modality each of its parameters belongs to
(``param_modalities()``: a head-order index, or None for a parameter shared by both, which then
counts for every modality); bypass segments index this table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

PARAM_KINDS = ("conv_weight", "linear_weight", "other")


@dataclass(frozen=True)
class ParamInfo:
    """One trainable encoder parameter."""

    index: int  # position in ModalityGroups.params
    name: str  # qualified name under the encoders, e.g. "audio.trunk.0.weight" (for messages)
    modality: str
    modality_index: int  # position of `modality` in head order
    kind: str  # conv_weight (OGM-GE's target) | linear_weight | other (BN affine, biases, ...)
    numel: int
    shape: tuple[int, ...]

    @property
    def is_conv_weight(self) -> bool:
        return self.kind == "conv_weight"

    @property
    def is_fisher_weight(self) -> bool:
        """Conv or Linear weight: the tensors the official code's information trace sums over."""
        return self.kind in ("conv_weight", "linear_weight")


@dataclass(frozen=True)
class BypassInfo:
    """One trainable parameter of a cross-modal (bypass) module."""

    index: int  # position in ModalityGroups.bypass
    name: str  # qualified name under model.bypass, e.g. "stage2.squeeze.weight"
    modalities: tuple[int, ...]  # head-order indices it counts for (all of them: shared)
    numel: int


@dataclass(frozen=True)
class Segment:
    """``buffer[start : start + length]`` holds ``param.flatten()[offset : offset + length]``."""

    start: int
    length: int
    param: int  # ParamInfo.index
    offset: int = 0

    def __post_init__(self) -> None:
        if self.start < 0 or self.length < 1 or self.offset < 0 or self.param < 0:
            raise ValueError(f"segment fields must be >= 0 (length >= 1), got {self}")


class ModalityGroups:
    """modality -> its trainable encoder parameters, in head order; immutable once built."""

    def __init__(
        self, encoders: Mapping[str, nn.Module], bypass: Mapping[str, nn.Module] | None = None
    ):
        if not encoders:
            raise ValueError("ModalityGroups needs at least one encoder")
        self.modalities: tuple[str, ...] = tuple(encoders.keys())
        params: list[nn.Parameter] = []
        infos: list[ParamInfo] = []
        owner: dict[int, str] = {}
        for mi, (modality, encoder) in enumerate(encoders.items()):
            kinds = _param_kinds(encoder)
            for name, p in encoder.named_parameters():
                if not p.requires_grad:
                    continue  # frozen: no gradient to regulate
                if id(p) in owner:
                    raise ValueError(
                        f"parameter {modality}.{name} is shared with encoder {owner[id(p)]!r}; "
                        "a parameter must belong to one modality"
                    )
                owner[id(p)] = modality
                infos.append(
                    ParamInfo(
                        index=len(infos),
                        name=f"{modality}.{name}",
                        modality=modality,
                        modality_index=mi,
                        kind=kinds.get(name, "other"),
                        numel=p.numel(),
                        shape=tuple(p.shape),
                    )
                )
                params.append(p)
        self.params: tuple[ParamInfo, ...] = tuple(infos)
        self._tensors: tuple[nn.Parameter, ...] = tuple(params)
        self._index = {id(p): i for i, p in enumerate(params)}
        self._tables: dict[tuple[str, str], Tensor] = {}
        for modality in self.modalities:
            if not any(info.modality == modality for info in infos):
                raise ValueError(f"encoder {modality!r} has no trainable parameters")
        self.bypass_modules: dict[str, nn.Module] = dict(bypass or {})
        found = _bypass_params(self.bypass_modules, self.num_modalities, self._index)
        self.bypass: tuple[BypassInfo, ...] = tuple(info for info, _ in found)
        self._bypass_tensors: tuple[nn.Parameter, ...] = tuple(p for _, p in found)
        self._bypass_index = {id(p): i for i, p in enumerate(self._bypass_tensors)}

    @classmethod
    def from_model(cls, model: nn.Module) -> ModalityGroups:
        """From a model with an ``encoders`` ModuleDict (inforeg.model.MultimodalModel)."""
        encoders = getattr(model, "encoders", None)
        if not isinstance(encoders, nn.ModuleDict):
            raise ValueError("model has no `encoders` ModuleDict (modality -> encoder)")
        bypass = getattr(model, "bypass", None)
        return cls(dict(encoders.items()), dict(bypass.items()) if bypass is not None else None)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def parameters(self, modality: str | None = None) -> list[nn.Parameter]:
        """The parameters in index order, of one modality or of all."""
        if modality is not None and modality not in self.modalities:
            raise ValueError(f"unknown modality {modality!r}; have {self.modalities}")
        return [
            p
            for p, info in zip(self._tensors, self.params, strict=True)
            if modality is None or info.modality == modality
        ]

    def __iter__(self) -> Iterator[tuple[ParamInfo, nn.Parameter]]:
        return iter(zip(self.params, self._tensors, strict=True))

    def bypass_parameters(self) -> list[nn.Parameter]:
        """The bypass modules' trainable parameters, in `bypass` index order."""
        return list(self._bypass_tensors)

    def bypass_segment(
        self, param: nn.Parameter, *, start: int, length: int, offset: int = 0
    ) -> Segment | None:
        """A segment naming a bypass parameter (`Segment.param` indexes `bypass`); None when
        `param` is no bypass parameter."""
        index = self._bypass_index.get(id(param))
        if index is None:
            return None
        seg = Segment(start=start, length=length, param=index, offset=offset)
        self.check_bypass_segment(seg)
        return seg

    def check_bypass_segment(self, seg: Segment) -> None:
        if seg.param >= len(self.bypass):
            raise ValueError(f"segment {seg} names bypass parameter {seg.param}")
        info = self.bypass[seg.param]
        if seg.offset + seg.length > info.numel:
            raise ValueError(f"segment {seg} runs past the end of {info.name} ({info.numel})")

    def square_rows(self, device: torch.device | str) -> Tensor:
        """(P + P_bypass + 1, 2M) fp32 0/1: which per-modality sum each parameter's square sum
        adds into: columns ``[main m ...; bypass m ...]``; encoder parameters first (index
        order), then bypass parameters, then one zero row (ranges of no parameter)."""
        key = ("square_rows", str(torch.device(device)))
        if key not in self._tables:
            m = self.num_modalities
            rows = torch.zeros(len(self.params) + len(self.bypass) + 1, 2 * m)
            for info in self.params:
                rows[info.index, info.modality_index] = 1.0
            for b in self.bypass:
                for mi in b.modalities:
                    rows[len(self.params) + b.index, m + mi] = 1.0
            self._tables[key] = rows.to(device)
        return self._tables[key]

    def index_of(self, param: nn.Parameter) -> int | None:
        """The parameter's index, or None when it belongs to no encoder (e.g. the head)."""
        return self._index.get(id(param))

    def segment(
        self, param: nn.Parameter, *, start: int, length: int, offset: int = 0
    ) -> Segment | None:
        """The segment for `length` elements of `param` (from `offset`) at `start` of a flat
        buffer; None when `param` belongs to no encoder (that range is left untouched)."""
        index = self.index_of(param)
        if index is None:
            return None
        seg = Segment(start=start, length=length, param=index, offset=offset)
        self.check_segment(seg)
        return seg

    def check_segment(self, seg: Segment) -> None:
        if seg.param >= len(self.params):
            raise ValueError(f"segment {seg} names parameter {seg.param}; have {len(self.params)}")
        info = self.params[seg.param]
        if seg.offset + seg.length > info.numel:
            raise ValueError(f"segment {seg} runs past the end of {info.name} ({info.numel})")

    def table(self, name: str, device: torch.device | str) -> Tensor:
        """A per-parameter (P,) tensor on `device`, built once and cached (no global state):
        ``modality`` (long, head-order index), ``numel`` (long), ``conv_weight`` (bool),
        ``stat_paper`` / ``stat_official`` (fp32 weights of g^2 in the kernels' statistics)."""
        key = (name, str(torch.device(device)))
        if key not in self._tables:
            if name == "modality":
                values: list[Any] = [p.modality_index for p in self.params]
                dtype = torch.long
            elif name == "numel":
                values, dtype = [p.numel for p in self.params], torch.long
            elif name == "conv_weight":
                values, dtype = [p.is_conv_weight for p in self.params], torch.bool
            elif name == "stat_paper":
                values, dtype = [1.0] * len(self.params), torch.float32
            elif name == "stat_official":
                # the official trace: the per-tensor mean of g^2 over Conv/Linear weights
                values = [1.0 / p.numel if p.is_fisher_weight else 0.0 for p in self.params]
                dtype = torch.float32
            else:
                raise ValueError(f"unknown parameter table {name!r}")
            self._tables[key] = torch.tensor(values, dtype=dtype, device=device)
        return self._tables[key]

    def contiguous_segments(self) -> list[Segment]:
        """Segments of a buffer holding every parameter whole, in index order."""
        segments, start = [], 0
        for info in self.params:
            segments.append(Segment(start=start, length=info.numel, param=info.index))
            start += info.numel
        return segments


def _bypass_params(
    modules: Mapping[str, nn.Module], num_modalities: int, encoder_params: Mapping[int, int]
) -> list[tuple[BypassInfo, nn.Parameter]]:
    """The bypass modules' trainable parameters with the modalities each counts for."""
    out: list[tuple[BypassInfo, nn.Parameter]] = []
    seen: set[int] = set()
    for key, module in modules.items():
        owners = getattr(module, "param_modalities", None)
        if owners is None:
            raise ValueError(
                f"bypass module {key!r} ({type(module).__name__}) has no param_modalities(): "
                "it must say which modality each of its parameters belongs to"
            )
        table = owners()
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            if id(p) in encoder_params or id(p) in seen:
                raise ValueError(f"bypass parameter {key}.{name} is shared with another module")
            if name not in table:
                raise ValueError(f"bypass module {key!r} names no modality for {name!r}")
            owner = table[name]
            if owner is not None and not 0 <= owner < num_modalities:
                raise ValueError(f"bypass parameter {key}.{name}: no modality {owner}")
            mods = tuple(range(num_modalities)) if owner is None else (owner,)
            seen.add(id(p))
            info = BypassInfo(
                index=len(out), name=f"{key}.{name}", modalities=mods, numel=p.numel()
            )
            out.append((info, p))
    return out


def _param_kinds(encoder: nn.Module) -> dict[str, str]:
    """Parameter name (relative to `encoder`) -> kind, from the owning module's type."""
    kinds: dict[str, str] = {}
    for module_name, module in encoder.named_modules():
        prefix = f"{module_name}." if module_name else ""
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter):
            continue
        if isinstance(module, nn.modules.conv._ConvNd):
            kinds[f"{prefix}weight"] = "conv_weight"
        elif isinstance(module, nn.Linear):
            kinds[f"{prefix}weight"] = "linear_weight"
    return kinds
