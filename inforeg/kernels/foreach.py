"""The fused update with multi-tensor ``torch._foreach_*`` ops (any device, either layout).

A handful of launches over the whole tensor list instead of several per tensor. Each op is a
full pass over memory (no fusion across ops), and the pull allocates one temporary per tensor;
`flat` is the bandwidth-bound implementation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from inforeg.groups import ModalityGroups
from inforeg.kernels.update import GradientUpdate, modality_sums, noise_generator
from inforeg.kernels.views import TensorSet


def regulate_foreach(tset: TensorSet, update: GradientUpdate, groups: ModalityGroups) -> Tensor:
    """Apply `update` to every tensor of `tset` in place; returns the (M,) statistic."""
    if update.alpha is not None and tset.anchors is None:
        raise ValueError("the update pulls toward anchors, but none was snapshotted")
    device = tset.weights[0].device
    params = _params_tensor(tset, device)
    modality = [groups.params[p].modality_index for p in tset.params]
    grads = tset.grads
    upcast = any(g.dtype != torch.float32 for g in grads)
    xs = [g.float() for g in grads] if upcast else grads  # fp32 arithmetic

    stats = torch.zeros(len(xs), dtype=torch.float32, device=device)
    if update.stat == "paper":
        stats = _squared_norms(xs)
    if update.scale is not None:
        scale = update.scale.unbind()
        picked = [
            i
            for i, p in enumerate(tset.params)
            if groups.params[p].is_conv_weight or not update.scale_conv_only
        ]
        if picked:
            torch._foreach_mul_([xs[i] for i in picked], [scale[modality[i]] for i in picked])
    if update.alpha is not None:
        assert tset.anchors is not None
        weights = [w.float() for w in tset.weights] if upcast else tset.weights
        diffs = torch._foreach_sub(weights, tset.anchors)  # w - anchor, one temporary each
        alpha = update.alpha.unbind()
        torch._foreach_mul_(diffs, [alpha[m] for m in modality])
        torch._foreach_add_(xs, diffs)
    if update.noise_std is not None:
        gen = noise_generator(update.noise_seed, device)
        noise = [torch.randn(x.shape, generator=gen, device=device) for x in xs]
        std = update.noise_std.unbind()
        torch._foreach_mul_(noise, [std[p] for p in tset.params])
        torch._foreach_add_(xs, noise)
    if update.stat == "official":
        stats = _squared_norms(xs)
    if upcast:
        torch._foreach_copy_(grads, xs)
    return modality_sums(stats, params, groups, update.stat)


def _squared_norms(xs: list[Tensor]) -> Tensor:
    return torch.stack(torch._foreach_norm(xs)).square()  # (K,)


def _params_tensor(tset: TensorSet, device: torch.device) -> Tensor:
    key = f"params:{device}"
    if key not in tset.cache:
        tset.cache[key] = torch.tensor(tset.params, dtype=torch.long, device=device)
    return tset.cache[key]
