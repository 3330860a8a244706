"""A second gradient beside a view's: MMPareto's unimodal gradient, laid out like the view.

`torch.autograd.grad` gives the second gradient per encoder parameter, whole, on every rank;
`flatten_params` lays it out in parameter index order (one fp32 buffer of every encoder
parameter) so one all-reduce averages it across ranks. `pair_plan` maps the elements of a view's
flat gradient (ZeRO 1/2: this rank's partition; ZeRO 0: the contiguous buffer) to that buffer:
positions in the view, positions in the buffer, and the parameter of each, built once per view
(a loop over segments at setup) and cached. The step then runs only gathers, `index_add_` and
elementwise ops: per-parameter dot products of the pair (`pair_dots`) and the combined gradient
written back (`pareto_combine_`). Plain PyTorch; `inforeg.functional.mmpareto` is the maths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from inforeg.functional.mmpareto import combine, param_dots
from inforeg.groups import ModalityGroups, Segment
from inforeg.kernels.views import GradientView


@dataclass(frozen=True)
class PairPlan:
    """Where a view's encoder elements are: `dst` in the view's flat gradient, `src` in the
    parameter-ordered buffer, `pid` each element's parameter; all (K,) long."""

    dst: Tensor
    src: Tensor
    pid: Tensor


def param_offsets(groups: ModalityGroups) -> list[int]:
    """Start of each parameter in the parameter-ordered buffer (P + 1 entries, the last the
    total)."""
    out = [0]
    for info in groups.params:
        out.append(out[-1] + info.numel)
    return out


def flatten_params(grads: Sequence[Tensor | None], groups: ModalityGroups) -> Tensor:
    """One fp32 (N,) buffer of per-parameter gradients in index order (None: zeros, on the
    gradients' device; ``torch.autograd.grad(..., materialize_grads=True)`` gives no None)."""
    if len(grads) != len(groups.params):
        raise ValueError(f"{len(grads)} gradients for {len(groups.params)} parameters")
    like = next((g for g in grads if g is not None), None)
    if like is None:
        raise ValueError("every gradient is None")
    pieces = [
        torch.zeros(info.numel, dtype=torch.float32, device=like.device)
        if g is None
        else g.detach().reshape(-1)
        for g, info in zip(grads, groups.params, strict=True)
    ]
    return torch.cat(pieces).float()


def _build_plan(
    segments: Sequence[Segment], groups: ModalityGroups, device: torch.device
) -> PairPlan:
    offsets = param_offsets(groups)
    dst, src, pid = [], [], []
    for seg in segments:  # setup only: once per view structure
        dst.append(torch.arange(seg.start, seg.start + seg.length))
        base = offsets[seg.param] + seg.offset
        src.append(torch.arange(base, base + seg.length))
        pid.append(torch.full((seg.length,), seg.param, dtype=torch.long))
    return PairPlan(
        dst=torch.cat(dst).to(device), src=torch.cat(src).to(device), pid=torch.cat(pid).to(device)
    )


def flat_grad(view: GradientView) -> tuple[Tensor, PairPlan, list[Tensor] | None]:
    """The view's gradient as one flat buffer, its plan, and the per-tensor gradients to copy
    the buffer back into (None when the buffer is the view's own storage)."""
    fset = view.flat_set()
    if fset is not None:
        plan = fset.cache.get("pairs")
        if plan is None:
            plan = fset.cache["pairs"] = _build_plan(fset.segments, view.groups, fset.grad.device)
        return fset.grad, plan, None
    tset = view.tensor_set()  # separate tensors: one flat copy (contiguous views avoid it)
    grads = list(tset.grads)
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    plan = tset.cache.get("pairs")
    if plan is None:
        segments, start = [], 0
        for g, p in zip(grads, tset.params, strict=True):
            segments.append(Segment(start=start, length=g.numel(), param=p))
            start += g.numel()
        plan = tset.cache["pairs"] = _build_plan(segments, view.groups, flat.device)
    return flat, plan, grads


def pair_dots(grad: Tensor, plan: PairPlan, second: Tensor, num_params: int) -> Tensor:
    """(P, 3) float64 ``(g1.g1, g1.g2, g2.g2)`` per parameter over this view's elements, with
    ``g2`` the second gradient and ``g1 = g - g2`` (MMPareto: g the summed loss's gradient, g2
    the unimodal one, so g1 the multimodal one)."""
    g = grad.index_select(0, plan.dst).float()
    u = second.index_select(0, plan.src)
    return param_dots(g - u, u, plan.pid, num_params)


def pareto_combine_(
    grad: Tensor,
    plan: PairPlan,
    second: Tensor,
    factors: Tensor,
    weights: Tensor,
    keep: Tensor,
    copy_back: list[Tensor] | None = None,
) -> None:
    """``g <- f_p 2 (k_mm (g - g2) + k_u g2)`` in place on the view's elements, with (P,)
    `factors`, (P, 2) `weights` and (P,) bool `keep` (parameters left as they are)."""
    g = grad.index_select(0, plan.dst)
    u = second.index_select(0, plan.src)
    k = weights.index_select(0, plan.pid)  # (K, 2)
    new = combine(g.float() - u, u, factors.index_select(0, plan.pid), k[:, 0], k[:, 1])
    new = torch.where(keep.index_select(0, plan.pid), g.float(), new.float())
    grad.index_copy_(0, plan.dst, new.to(grad.dtype))
    if copy_back is not None:
        pieces = grad.split([t.numel() for t in copy_back])
        torch._foreach_copy_(
            copy_back, [p.view_as(t).to(t.dtype) for p, t in zip(pieces, copy_back, strict=True)]
        )
