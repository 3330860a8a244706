"""PMR (Fan et al., CVPR 2023): prototypical modal rebalance; docs/methods.md, section PMR.

Transcribed from fanyunfeng-bit/Modal-Imbalance-PMR @ 3615e48, ``main_Prototype_grad.py``:

- prototypes (lines 383-441): at the start of training and after every epoch, in eval mode and
  without gradients, the per-class mean of each encoder's features over the first
  ``len(loader) // 10`` batches of the (shuffled) training loader; from the second estimate on,
  ``(1 - momentum_coef) * new + momentum_coef * old`` (CREMA-D scripts: ``momentum_coef 0``);
- per step (lines 152-178): prototype logits ``-||h_m - c_m^k||_2`` (B, C), their prob-sum scores
  ``S_m^p = sum_i softmax(-d_m)_i[y_i]``, ``rho = S_a^p / S_v^p``; the loss is
  ``CE(z, y) + beta * CE(-d_a, y) + lam * CE(-d_v, y)`` with ``(beta, lam) = (0, alpha)`` when
  ``rho > 1``, ``(alpha, 0)`` when ``rho < 1`` and ``(0, 0)`` on a tie, in epochs
  ``modulation_starts..modulation_ends``; the joint loss alone otherwise.

The same form is BalanceBenchmark's for two modalities (``PMR_trainer.py`` lines 131-176). The
method is defined for two modalities (one ratio). Prototypes of different modalities have
different feature sizes, so functions take one modality's tensors; nothing loops over samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from inforeg.functional import score_sums


def prototype_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums (C, D) fp32 and counts (C,) fp32 of one batch's features (B, D).

    Sums so that batches and data-parallel ranks add up (all-reduce both) before
    `prototypes_from_sums`; the features should come from a no-grad eval-mode forward.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features must be (B, D) with labels (B,), got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    h = features.detach().float()
    sums = torch.zeros(num_classes, h.shape[1], dtype=torch.float32, device=h.device)
    sums.index_add_(0, labels, h)
    counts = torch.zeros(num_classes, dtype=torch.float32, device=h.device)
    counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float32))
    return sums, counts


def prototypes_from_sums(sums: Tensor, counts: Tensor, previous: Tensor | None = None) -> Tensor:
    """(C, D) class means ``sums / counts``.

    A class with no sample in the estimate would be 0/0 = NaN in the code (which then poisons
    every distance); here it keeps its `previous` prototype, or zeros when there is none.
    """
    if sums.dim() != 2 or counts.shape != sums.shape[:1]:
        raise ValueError(f"sums (C, D) and counts (C,), got {tuple(sums.shape)}, {counts.shape}")
    means = sums / counts.clamp_min(1)[:, None]
    fallback = torch.zeros_like(means) if previous is None else previous.to(means)
    return torch.where((counts > 0)[:, None], means, fallback)


def ema_prototypes(new: Tensor, old: Tensor | None, momentum: float) -> Tensor:
    """``(1 - momentum) * new + momentum * old``; `new` itself for the first estimate."""
    if not 0 <= momentum <= 1:
        raise ValueError(f"PMR momentum_coef must be in [0, 1], got {momentum}")
    if old is None:
        return new
    if old.shape != new.shape:
        raise ValueError(f"prototypes of shapes {tuple(old.shape)} and {tuple(new.shape)}")
    return (1 - momentum) * new + momentum * old.to(new)


def prototype_logits(features: Tensor, prototypes: Tensor) -> Tensor:
    """(B, C) ``-||h_i - c_k||_2``: the non-parametric classifier's logits (gradients flow to
    the features; the prototypes are constants)."""
    if features.dim() != 2 or prototypes.dim() != 2 or features.shape[1] != prototypes.shape[1]:
        raise ValueError(
            f"features (B, D) and prototypes (C, D) must share D, got {tuple(features.shape)} "
            f"and {tuple(prototypes.shape)}"
        )
    diff = features[:, None, :] - prototypes.detach().to(features)[None, :, :]  # (B, C, D)
    # the code's sqrt(dot(x - c, x - c)); cdist's matmul form loses digits when h is near c
    return -torch.sqrt((diff * diff).sum(-1))


def prototype_score_sums(proto_logits: Sequence[Tensor], labels: Tensor) -> Tensor:
    """(M,) fp32 ``S_m^p = sum_i softmax(-d_m)_i[y_i]`` (batch sums: all-reduce, then ratio)."""
    named = {str(i): z for i, z in enumerate(proto_logits)}
    return score_sums(named, labels, "prob_sum").float()


def pmr_coefficients(scores: Tensor, alpha: float) -> Tensor:
    """(2,) the weights ``(beta, lam)`` of the two prototype cross-entropies.

    ``rho = S_0 / S_1``: ``rho > 1`` -> ``(0, alpha)`` (help modality 1), ``rho < 1`` ->
    ``(alpha, 0)``, a tie (or NaN) -> ``(0, 0)``, as ``main_Prototype_grad.py`` lines 169-177.
    """
    if scores.dim() != 1 or scores.numel() != 2:
        raise ValueError(
            f"PMR is defined for two modalities, got scores of shape {tuple(scores.shape)}"
        )
    if not alpha >= 0:
        raise ValueError(f"PMR alpha must be >= 0, got {alpha}")
    rho = scores[0].float() / scores[1].float()
    zero = torch.zeros_like(rho)
    on = torch.full_like(rho, alpha)
    beta = torch.where(rho < 1, on, zero)
    lam = torch.where(rho > 1, on, zero)
    return torch.stack([beta, lam])


def pmr_loss(
    joint_loss: Tensor, proto_logits: Sequence[Tensor], labels: Tensor, coefficients: Tensor
) -> Tensor:
    """``joint + sum_m coefficients[m] * CE(proto_logits[m], y)`` (batch-mean cross-entropies)."""
    if coefficients.shape != (len(proto_logits),):
        raise ValueError(
            f"{len(proto_logits)} prototype logits but coefficients of shape "
            f"{tuple(coefficients.shape)}"
        )
    ce = torch.stack([F.cross_entropy(z, labels) for z in proto_logits])  # (M,)
    return joint_loss + (coefficients.to(ce) * ce).sum()
