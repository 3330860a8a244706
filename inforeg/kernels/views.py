"""Gradient views: where the encoders' gradients, weights and anchors live.

Two layouts, one interface, so every kernel implementation runs on both:

- `ParamGradients` (layout a): the parameters' own ``.grad`` tensors (plain PyTorch loops,
  DeepSpeed ZeRO stage 0). Each data-parallel rank holds the full averaged gradient, so
  per-modality sums are already global: ``partial = False``. With ``contiguous=True`` the encoder
  parameters and their gradients are made views of two flat buffers once, which lets the
  ``flat`` implementation run on them.
- `FlatGradients` (layout b): one flat gradient buffer, its flat weight buffer and the
  `Segment`s that belong to encoders (DeepSpeed ZeRO 1/2: each rank's fp32 partition). Ranges no
  segment covers (the head, other ranks' parameters) are never touched. Each rank sees only its
  partition, so per-modality sums are partial: ``partial = True`` and the regulator all-reduces
  them (SUM) across ranks.

Anchors (the encoder weights at the start of the epoch) are kept in the view's own layout, in
fp32: one tensor per parameter, or one flat copy of the buffer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from inforeg.groups import ModalityGroups, Segment


@dataclass
class TensorSet:
    """Per-tensor lists for the reference and foreach implementations."""

    grads: list[Tensor]
    weights: list[Tensor]
    anchors: list[Tensor] | None
    params: tuple[int, ...]  # ParamInfo.index of each entry
    cache: dict[str, Any] = field(default_factory=dict)  # per-structure plans, owned by the view


@dataclass
class SquareSet:
    """Gradient and weight pieces for Greedy's square sums (`inforeg.kernels.squares`)."""

    grads: Sequence[Tensor]
    weights: Sequence[Tensor]
    rows: Tensor  # (K,) long: each piece's row of `ModalityGroups.square_rows`


@dataclass
class FlatSet:
    """One flat buffer for the flat implementation."""

    grad: Tensor  # (N,)
    weight: Tensor  # (N,)
    anchor: Tensor | None  # (N,) fp32
    segments: tuple[Segment, ...]  # sorted by start, disjoint
    cache: dict[str, Any] = field(default_factory=dict)


class GradientView(ABC):
    """The encoders' gradients as seen by one rank."""

    groups: ModalityGroups
    partial: bool
    """True when per-modality sums over this view are partial and must be all-reduced (SUM)
    across data-parallel ranks; False when every rank holds the full gradient."""

    @abstractmethod
    def tensor_set(self) -> TensorSet: ...

    @abstractmethod
    def flat_set(self) -> FlatSet | None:
        """The flat buffers, or None where the gradients are not in one buffer."""

    @property
    @abstractmethod
    def has_flat(self) -> bool:
        """Whether `flat_set` gives one buffer (what impl 'auto' picks 'flat' for)."""

    @abstractmethod
    def snapshot_anchor(self) -> None:
        """anchor <- current encoder weights (fp32)."""

    @abstractmethod
    def anchor_state(self) -> list[Tensor] | None: ...

    @abstractmethod
    def load_anchor_state(self, state: Sequence[Tensor] | None) -> None: ...

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @abstractmethod
    def square_sets(self) -> list[SquareSet]:
        """This view's encoder and bypass gradients and weights, cut into pieces that each
        belong to one parameter (or to none: square row zero)."""


class ParamGradients(GradientView):
    """Layout (a): the parameters' ``.grad``; a missing ``.grad`` counts as zeros (as in a flat
    buffer) and is materialised, so the pull toward the anchor still applies to it."""

    def __init__(self, groups: ModalityGroups, *, contiguous: bool = False):
        self.groups = groups
        self.partial = False
        self._params = groups.parameters()
        self._anchors: list[Tensor] | None = None
        self._tensor_cache: dict[str, Any] = {}
        self._flat: _Flattened | None = _Flattened(self._params) if contiguous else None
        self._bypass = groups.bypass_parameters()
        self._bypass_flat: _Flattened | None = None
        if contiguous and self._bypass:
            self._bypass_flat = _Flattened(self._bypass)
        self._square_cache: dict[str, Any] = {}

    @classmethod
    def from_groups(cls, groups: ModalityGroups, *, contiguous: bool = False) -> ParamGradients:
        return cls(groups, contiguous=contiguous)

    @property
    def device(self) -> torch.device:
        return self._params[0].device

    @property
    def has_flat(self) -> bool:
        return self._flat is not None

    @property
    def grad_copies(self) -> int:
        """Gradient tensors copied into the contiguous buffer because something replaced them
        (0 while the loop zeroes gradients in place; always 0 without ``contiguous``)."""
        return 0 if self._flat is None else self._flat.grad_copies

    def _grads(self) -> list[Tensor]:
        for p in self._params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return [p.grad for p in self._params]  # type: ignore[misc]

    def tensor_set(self) -> TensorSet:
        if self._flat is not None:
            self._flat.sync()
        anchors = self._anchors
        if self._flat is not None and self._flat.anchor is not None:
            anchors = self._flat.anchor_views()
        return TensorSet(
            grads=self._grads(),
            weights=[p.detach() for p in self._params],
            anchors=anchors,
            params=tuple(range(len(self._params))),
            cache=self._tensor_cache,
        )

    def flat_set(self) -> FlatSet | None:
        if self._flat is None:
            return None
        self._flat.sync()
        return FlatSet(
            grad=self._flat.grad,
            weight=self._flat.weight,
            anchor=self._flat.anchor,
            segments=self._flat.segments,
            cache=self._flat.cache,
        )

    def square_sets(self) -> list[SquareSet]:
        groups, cache = self.groups, self._square_cache
        num_main = len(groups.params)
        sets = []
        for flat, params, first in (
            (self._flat, self._params, 0),
            (self._bypass_flat, self._bypass, num_main),
        ):
            if not params:
                continue
            if flat is None:  # separate tensors: the list is rebuilt every call
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                rows = torch.arange(first, first + len(params), device=self.device)
                grads = [p.grad for p in params]
                sets.append(SquareSet(grads, [p.detach() for p in params], rows))  # type: ignore[arg-type]
                continue
            flat.sync()
            key = f"{first}"
            if key not in cache:  # the buffers never change: split them once
                sizes = [p.numel() for p in params]
                rows = torch.arange(first, first + len(params), device=self.device)
                cache[key] = SquareSet(
                    flat.grad.split_with_sizes(sizes), flat.weight.split_with_sizes(sizes), rows
                )
            sets.append(cache[key])
        return sets

    def snapshot_anchor(self) -> None:
        with torch.no_grad():
            if self._flat is not None:
                self._flat.sync()
                self._flat.anchor = self._flat.weight.float().clone()
            else:
                self._anchors = [p.detach().float().clone() for p in self._params]

    def anchor_state(self) -> list[Tensor] | None:
        if self._flat is not None:
            return None if self._flat.anchor is None else [self._flat.anchor]
        return self._anchors

    def load_anchor_state(self, state: Sequence[Tensor] | None) -> None:
        if state is None:
            self._anchors = None
            if self._flat is not None:
                self._flat.anchor = None
            return
        if self._flat is not None:
            _check_like("anchor", state, [self._flat.weight])
            self._flat.anchor = state[0].detach().to(self.device, torch.float32, copy=True)
        else:
            _check_like("anchor", state, self._params)
            self._anchors = [a.detach().to(self.device, torch.float32, copy=True) for a in state]


class FlatGradients(GradientView):
    """Layout (b): a flat gradient buffer, its flat weights and the encoders' segments in it.

    `bind` swaps in a new gradient buffer of the same size (DeepSpeed may allocate one per step).
    ``partial=True`` (the default) says the buffer is this rank's partition only.
    """

    def __init__(
        self,
        grad: Tensor,
        weight: Tensor,
        segments: Sequence[Segment],
        groups: ModalityGroups,
        *,
        partial: bool = True,
        bypass_segments: Sequence[Segment] = (),
    ):
        if weight.dim() != 1 or not weight.is_floating_point():
            raise ValueError(
                f"flat weight must be a 1-D float tensor, got {weight.dtype} {tuple(weight.shape)}"
            )
        self.groups = groups
        self.partial = partial
        self.weight = weight
        self.grad = self._checked_grad(grad)
        ordered = tuple(sorted(segments, key=lambda s: s.start))
        for seg in ordered:
            groups.check_segment(seg)
        for seg in bypass_segments:
            groups.check_bypass_segment(seg)
        every = sorted(
            [(s, s.param) for s in ordered]
            + [(s, len(groups.params) + s.param) for s in bypass_segments],
            key=lambda pair: pair[0].start,
        )
        end = 0
        for seg, _ in every:
            if seg.start < end:
                raise ValueError(f"segment {seg} overlaps the previous one (ends at {end})")
            end = seg.start + seg.length
            if end > weight.numel():
                raise ValueError(f"segment {seg} runs past the flat buffer ({weight.numel()})")
        self.segments = ordered
        self.bypass_segments = tuple(bypass_segments)
        self._square_plan = _square_plan(
            every, weight.numel(), len(groups.params) + len(groups.bypass)
        )
        self.anchor: Tensor | None = None
        self._cache: dict[str, Any] = {}
        self._tensor_cache: dict[str, Any] = {}

    def _checked_grad(self, grad: Tensor) -> Tensor:
        if grad.dim() != 1 or grad.numel() != self.weight.numel() or not grad.is_floating_point():
            raise ValueError(
                f"flat grad must be a 1-D float tensor of {self.weight.numel()} elements, got "
                f"{grad.dtype} {tuple(grad.shape)}"
            )
        if grad.device != self.weight.device:
            raise ValueError(f"flat grad is on {grad.device}, weight on {self.weight.device}")
        return grad

    def bind(self, grad: Tensor) -> None:
        """Use `grad` as the gradient buffer from now on (same size and device)."""
        self.grad = self._checked_grad(grad)

    @property
    def device(self) -> torch.device:
        return self.weight.device

    @property
    def has_flat(self) -> bool:
        return True

    def tensor_set(self) -> TensorSet:
        def cut(t: Tensor) -> list[Tensor]:
            return [t[s.start : s.start + s.length] for s in self.segments]

        return TensorSet(
            grads=cut(self.grad),
            weights=cut(self.weight),
            anchors=None if self.anchor is None else cut(self.anchor),
            params=tuple(s.param for s in self.segments),
            cache=self._tensor_cache,
        )

    def flat_set(self) -> FlatSet:
        return FlatSet(self.grad, self.weight, self.anchor, self.segments, self._cache)

    def square_sets(self) -> list[SquareSet]:
        sizes, rows = self._square_plan
        if rows.device != self.device:
            rows = rows.to(self.device)
            self._square_plan = (sizes, rows)
        cached = self._cache.get("square_views")
        if cached is None or cached[0] is not self.grad:  # split once per gradient buffer
            weights = self._cache.get("square_weights")
            if weights is None:
                weights = self.weight.split_with_sizes(sizes)
                self._cache["square_weights"] = weights
            cached = (self.grad, self.grad.split_with_sizes(sizes), weights)
            self._cache["square_views"] = cached
        return [SquareSet(cached[1], cached[2], rows)]

    def snapshot_anchor(self) -> None:
        with torch.no_grad():
            self.anchor = self.weight.float().clone()

    def anchor_state(self) -> list[Tensor] | None:
        return None if self.anchor is None else [self.anchor]

    def load_anchor_state(self, state: Sequence[Tensor] | None) -> None:
        if state is None:
            self.anchor = None
            return
        _check_like("anchor", state, [self.weight])
        self.anchor = state[0].detach().to(self.device, torch.float32, copy=True)


def _square_plan(
    every: Sequence[tuple[Segment, int]], numel: int, zero_row: int
) -> tuple[list[int], Tensor]:
    """Split sizes covering a flat buffer and each piece's square row (`zero_row` for gaps)."""
    sizes, rows, pos = [], [], 0
    for seg, row in every:
        if seg.start > pos:
            sizes.append(seg.start - pos)
            rows.append(zero_row)
        sizes.append(seg.length)
        rows.append(row)
        pos = seg.start + seg.length
    if numel > pos:
        sizes.append(numel - pos)
        rows.append(zero_row)
    return sizes, torch.tensor(rows, dtype=torch.long)


class _Flattened:
    """Encoder parameters and gradients rebound as views of two flat buffers (same dtype)."""

    def __init__(self, params: list[torch.nn.Parameter]):
        dtypes = {p.dtype for p in params}
        devices = {p.device for p in params}
        if len(dtypes) != 1 or len(devices) != 1:
            raise ValueError(
                f"contiguous gradients need one dtype and device, got {dtypes} on {devices}"
            )
        self.params = params
        sizes = [p.numel() for p in params]
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)
        dtype, device = params[0].dtype, params[0].device
        self.weight = torch.empty(self.offsets[-1], dtype=dtype, device=device)
        self.grad = torch.zeros(self.offsets[-1], dtype=dtype, device=device)
        self.segments = tuple(
            Segment(start=s, length=n, param=i)
            for i, (s, n) in enumerate(zip(self.offsets, sizes, strict=False))
        )
        item = self.weight.element_size()
        self._weight_ptrs = [self.weight.data_ptr() + s * item for s in self.offsets[:-1]]
        self._grad_ptrs = [self.grad.data_ptr() + s * item for s in self.offsets[:-1]]
        self.anchor: Tensor | None = None
        self.cache: dict[str, Any] = {}
        self.grad_copies = 0
        with torch.no_grad():
            for i, p in enumerate(params):
                self._rebind_weight(i, p)
                self._rebind_grad(i, p)

    def _slot(self, t: Tensor, i: int) -> Tensor:
        return t[self.offsets[i] : self.offsets[i + 1]].view(self.params[i].shape)

    def _rebind_weight(self, i: int, p: torch.nn.Parameter) -> None:
        slot = self._slot(self.weight, i)
        slot.copy_(p.detach())
        p.data = slot

    def _rebind_grad(self, i: int, p: torch.nn.Parameter) -> None:
        slot = self._slot(self.grad, i)
        if p.grad is None:
            slot.zero_()
        else:
            slot.copy_(p.grad)
        p.grad = slot

    def sync(self) -> None:
        """Re-view any weight or gradient that was replaced (``zero_grad(set_to_none=True)``,
        ``load_state_dict(assign=True)``): one copy into the buffer, then a view again.

        A loop that zeroes gradients in place (``zero_grad(set_to_none=False)``) keeps them
        views, so backward accumulates straight into the buffer and nothing is copied here;
        `grad_copies` counts the gradient tensors copied so far (0 in such a loop)."""
        with torch.no_grad():
            for i, p in enumerate(self.params):
                if p.data_ptr() != self._weight_ptrs[i]:
                    self._rebind_weight(i, p)
                g = p.grad
                if g is None or g.data_ptr() != self._grad_ptrs[i]:
                    self._rebind_grad(i, p)
                    self.grad_copies += 1

    def anchor_views(self) -> list[Tensor]:
        assert self.anchor is not None
        return [self._slot(self.anchor, i) for i in range(len(self.params))]


def _check_like(what: str, state: Sequence[Tensor], like: Sequence[Tensor]) -> None:
    if len(state) != len(like):
        raise ValueError(f"{what} state has {len(state)} tensors, expected {len(like)}")
    for i, (s, t) in enumerate(zip(state, like, strict=True)):
        if s.shape != t.shape:
            raise ValueError(
                f"{what} state tensor {i} has shape {tuple(s.shape)}, expected {tuple(t.shape)}"
            )
