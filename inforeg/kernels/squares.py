"""Per-modality square sums of gradients and weights over encoder and bypass parameters
(Greedy's conditional learning speed, `inforeg.functional.greedy.speed_terms`).

`square_sums(view)` gives ``[sum g^2; sum w^2]`` over the columns ``[main m ...; bypass m ...]``
(`ModalityGroups.square_rows`; a shared bypass parameter counts for every modality) of this
view's part of the parameters: one ``torch._foreach_norm`` over the gradient pieces and one over
the weight pieces (the pieces are views split from the flat buffers once, gaps included: their
row is zero), then one small matrix product. No host sync, no Python work per parameter on the
flat layouts. For a ``partial`` view (a ZeRO 1/2 partition) all-reduce the result (SUM).

`square_sums_reference` is its plain PyTorch twin over the model's own parameters, one tensor
at a time (the tests compare them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from inforeg.groups import ModalityGroups
from inforeg.kernels.views import GradientView


def square_sums(view: GradientView) -> Tensor:
    """(2, 2M) float64: this view's ``[sum g^2; sum w^2]`` per ``[main m; bypass m]``."""
    groups = view.groups
    rows = groups.square_rows(view.device)
    out = torch.zeros(2, rows.shape[1], dtype=torch.float64, device=view.device)
    for piece in view.square_sets():
        if not len(piece.grads):
            continue
        g = torch.stack(torch._foreach_norm(list(piece.grads))).double().square()  # (K,)
        w = torch.stack(torch._foreach_norm(list(piece.weights))).double().square()
        out += torch.stack([g, w]) @ rows.index_select(0, piece.rows).double()
    return out


def square_sums_reference(groups: ModalityGroups) -> Tensor:
    """`square_sums` of the whole parameters (their ``.grad``; None counts as zeros)."""
    m = groups.num_modalities
    device = groups.parameters()[0].device
    out = torch.zeros(2, 2 * m, dtype=torch.float64, device=device)
    for info, p in groups:
        if p.grad is not None:
            out[0, info.modality_index] += p.grad.double().square().sum()
        out[1, info.modality_index] += p.detach().double().square().sum()
    for b, p in zip(groups.bypass, groups.bypass_parameters(), strict=True):
        for mi in b.modalities:
            if p.grad is not None:
                out[0, m + mi] += p.grad.double().square().sum()
            out[1, m + mi] += p.detach().double().square().sum()
    return out
