"""The whole model's gradients as one rank holds them, for model-wide operations (AGM's clip):
the sum of g^2 over every gradient the optimizer steps, the abs-max of the fusion head's weight
gradient per modality's input columns, and one factor multiplied into every gradient.

The encoders' `GradientView`s cover the encoders only; `ModelGradients` adds the rest, in the
same two layouts:

- over one `ParamGradients` (plain PyTorch, DeepSpeed ZeRO stage 0): the encoders' view plus the
  ``.grad`` of `rest`, every trainable parameter outside the encoders (the head, ...); each
  rank holds the full gradient: ``partial = False``;
- over `FlatGradients` (ZeRO 1/2): each view's buffer is this rank's whole fp32 partition
  (encoders, head and the rest; DeepSpeed fills its alignment padding with zeros), and
  `HeadFragment`s say where the head weight's elements lie in it (none where another rank owns
  them): ``partial = True``, so sums are all-reduced with SUM and maxima with MAX.

Every operation is a multi-tensor op on device over a handful of tensors (one per partition, or
the encoders' buffer and the few others), with no host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from inforeg.kernels.views import FlatGradients, GradientView, ParamGradients


@dataclass(frozen=True)
class HeadFragment:
    """``views[view].grad[start : start + length]`` holds the head weight's flattened (row-major
    (C, D)) elements ``offset : offset + length``."""

    view: int
    start: int
    length: int
    offset: int = 0

    def __post_init__(self) -> None:
        if self.view < 0 or self.start < 0 or self.length < 1 or self.offset < 0:
            raise ValueError(f"head fragment fields must be >= 0 (length >= 1), got {self}")


class ModelGradients:
    """Every gradient the optimizer steps, as this rank holds it, and where the head's weight
    gradient is in it. Build with `over_params` (ZeRO 0) or `over_flat` (ZeRO 1/2)."""

    def __init__(
        self,
        views: Sequence[GradientView],
        head_shape: tuple[int, int],
        *,
        rest: Sequence[Tensor] = (),
        head_weight: Tensor | None = None,
        fragments: Sequence[HeadFragment] = (),
    ):
        if not views:
            raise ValueError("ModelGradients needs at least one gradient view")
        self.views = list(views)
        self.head_shape = head_shape
        self.rest = list(rest)
        self.head_weight = head_weight
        self.fragments = tuple(fragments)
        self.partial = self.views[0].partial
        self.device = self.views[0].device
        self._flat = [v for v in self.views if isinstance(v, FlatGradients)]
        self._index: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    @classmethod
    def over_params(
        cls, view: GradientView, rest: Sequence[Tensor], head_weight: Tensor
    ) -> ModelGradients:
        """The encoders' `view` plus `rest` (every trainable parameter outside the encoders,
        `head_weight` among them)."""
        if not isinstance(view, ParamGradients):
            raise ValueError(f"over_params needs a ParamGradients view, got {type(view).__name__}")
        if head_weight.dim() != 2 or not any(p is head_weight for p in rest):
            raise ValueError("head_weight must be a 2-D parameter listed in rest")
        encoder = {id(p) for p in view.groups.parameters()}
        if any(id(p) in encoder for p in rest):
            raise ValueError("rest must hold the parameters outside the encoders only")
        shape = (int(head_weight.shape[0]), int(head_weight.shape[1]))
        return cls([view], shape, rest=rest, head_weight=head_weight)

    @classmethod
    def of_model(cls, view: GradientView, model: nn.Module, head_weight: Tensor) -> ModelGradients:
        """`over_params` with `rest` = every trainable parameter of `model` outside `view`'s
        encoders."""
        encoder = {id(p) for p in view.groups.parameters()}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder]
        return cls.over_params(view, rest, head_weight)

    @classmethod
    def over_flat(
        cls,
        views: Sequence[GradientView],
        head_shape: tuple[int, int],
        fragments: Sequence[HeadFragment],
    ) -> ModelGradients:
        """This rank's flat partitions (each its whole buffer) and the head weight's fragments
        in them (none where the head lies in other ranks' partitions)."""
        flat = [v for v in views if isinstance(v, FlatGradients)]
        if not views or len(flat) != len(views):
            raise ValueError("over_flat needs one FlatGradients view per partition")
        numel = head_shape[0] * head_shape[1]
        for f in fragments:
            if f.view >= len(flat) or f.start + f.length > flat[f.view].grad.numel():
                raise ValueError(f"head fragment {f} lies outside the flat buffers")
            if f.offset + f.length > numel:
                raise ValueError(f"head fragment {f} runs past the head weight ({numel})")
        return cls(flat, head_shape, fragments=fragments)

    def tensors(self) -> list[Tensor]:
        """This step's gradient tensors (a parameter without ``.grad`` has none, as in
        ``clip_grad_norm_``)."""
        if self.head_weight is None:
            return [v.grad for v in self._flat]  # each rank's whole partition
        view = self.views[0]
        fset = view.flat_set()
        encoders = [fset.grad] if fset is not None else view.tensor_set().grads
        return encoders + [p.grad for p in self.rest if p.grad is not None]

    def head_pieces(self) -> list[tuple[Tensor, int]]:
        """(1-D gradient piece, its offset in the flattened head weight) on this rank."""
        if self.head_weight is not None:
            g = self.head_weight.grad
            return [] if g is None else [(g.reshape(-1), 0)]
        return [
            (self._flat[f.view].grad[f.start : f.start + f.length], f.offset)
            for f in self.fragments
        ]

    def column_index(self, piece: Tensor, offset: int, column_group: Tensor) -> Tensor:
        """(n,) long: each element of `piece`'s column's entry in `column_group`; built once
        per piece and table."""
        key = (offset, piece.numel())
        cached = self._index.get(key)
        if cached is None or cached[0] is not column_group:
            cols = (torch.arange(piece.numel(), device=piece.device) + offset) % self.head_shape[1]
            cached = (column_group, column_group.to(piece.device)[cols])
            self._index[key] = cached
        return cached[1]


def model_sum_squares(tensors: Sequence[Tensor]) -> Tensor:
    """() fp32 sum of g^2 over `tensors` (`ModelGradients.tensors`: every gradient this rank
    holds; all-reduce it for a partial one), from one multi-tensor norm."""
    if not tensors:
        raise ValueError("model_sum_squares: no gradient tensors")
    norms = torch._foreach_norm(list(tensors))  # one () norm per tensor
    return torch.stack([n.float() for n in norms]).square().sum()


def head_abs_max(grads: ModelGradients, column_group: Tensor, groups: int) -> Tensor:
    """(groups,) fp32 abs-max of the head weight's gradient over the columns of each group
    (`column_group` (D,) long: the group of each input column, e.g. its modality); 0 where this
    rank holds none (all-reduce with MAX for a partial one)."""
    if column_group.shape != (grads.head_shape[1],):
        raise ValueError(
            f"column_group must have one entry per head input column ({grads.head_shape[1]}), "
            f"got {tuple(column_group.shape)}"
        )
    out = torch.zeros(groups, dtype=torch.float32, device=grads.device)
    for piece, offset in grads.head_pieces():  # one piece per partition at most
        index = grads.column_index(piece, offset, column_group)
        out.scatter_reduce_(0, index, piece.detach().abs().float(), "amax")
    return out


def scale_model_(tensors: Sequence[Tensor], factor: Tensor) -> None:
    """Every tensor of `tensors` (`ModelGradients.tensors`) multiplied by the () `factor`, in
    place, on device (one multi-tensor op)."""
    if tensors:
        torch._foreach_mul_(list(tensors), factor.to(tensors[0].device, tensors[0].dtype))
