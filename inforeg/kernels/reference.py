"""The oracle: the fused update one tensor at a time, in plain eager PyTorch.

Slow on purpose (a Python loop over tensors, several ops each) and obviously correct; every
other implementation is tested against it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from inforeg.groups import ModalityGroups
from inforeg.kernels.update import GradientUpdate, modality_sums, noise_generator
from inforeg.kernels.views import TensorSet


def regulate_reference(tset: TensorSet, update: GradientUpdate, groups: ModalityGroups) -> Tensor:
    """Apply `update` to every tensor of `tset` in place; returns the (M,) statistic."""
    if update.alpha is not None and tset.anchors is None:
        raise ValueError("the update pulls toward anchors, but none was snapshotted")
    device = tset.weights[0].device
    stats = torch.zeros(len(tset.grads), dtype=torch.float32, device=device)
    gen = noise_generator(update.noise_seed, device) if update.noise_std is not None else None
    for k, (g, w, p) in enumerate(zip(tset.grads, tset.weights, tset.params, strict=True)):
        info = groups.params[p]
        m = info.modality_index
        x = g if g.dtype == torch.float32 else g.float()  # fp32 arithmetic
        if update.stat == "paper":
            stats[k] = torch.sum(x * x)
        if update.scale is not None and (info.is_conv_weight or not update.scale_conv_only):
            x.mul_(update.scale[m])
        if update.alpha is not None:
            assert tset.anchors is not None
            x.addcmul_(w.float() - tset.anchors[k], update.alpha[m])
        if update.noise_std is not None:
            z = torch.randn(x.shape, generator=gen, device=device)
            x.addcmul_(z, update.noise_std[p])
        if update.stat == "official":
            stats[k] = torch.sum(x * x)
        if x is not g:
            g.copy_(x)
    params = torch.tensor(tset.params, dtype=torch.long, device=device)
    return modality_sums(stats, params, groups, update.stat)


def moments_reference(tset: TensorSet, groups: ModalityGroups) -> Tensor:
    """(P, 2) float64 per-parameter (sum g, sum g^2) over this view's part of each parameter."""
    device = tset.weights[0].device
    out = torch.zeros(len(groups.params), 2, dtype=torch.float64, device=device)
    for g, p in zip(tset.grads, tset.params, strict=True):
        x = g.float()
        out[p, 0] += x.sum().double()
        out[p, 1] += torch.sum(x * x).double()
    return out
