"""AGM (Li et al., ICCV 2023): adaptive gradient modulation from Shapley-style mono scores;
docs/methods.md, section AGM.

Transcribed from lihong2303/AGM_ICCV2023 @ 5a65542:

- ``model/CREMAD_net.py`` lines 7-72: besides the training forward ``f(a, v)``, masked forwards in
  eval mode with a zeroed input, ``f(a, 0)`` and ``f(0, v)``; the mono outputs are
  ``out_a = (f(a,v) - f(0,v) + f(a,0)) / 2`` and ``out_v = (f(a,v) - f(a,0) + f(0,v)) / 2``,
  the two-player Shapley values with the empty coalition's value taken as 0 (``f(0, 0)`` is
  computed and unused), so ``out_a + out_v = f(a, v)``;
- ``run/CREMAD_main.py`` lines 130-157: scores ``s_m = mean_i -log(max(p_m,i[y_i], 1e-8))`` of
  ``softmax(out_m)``; ``ratio_a = exp(s_v - s_a)``, ``optimal_a = exp(r_v - r_a)`` from the running
  means ``r`` BEFORE this step; ``k_m = exp(alpha * min(optimal_m - ratio_m, 10))``; then
  ``r_m <- r_m (it - 1) / it + s_m / it`` with ``it`` the 1-based global step (a mean over all of
  training); lines 159-166: ``k`` scales the gradient flowing back through ``out_m`` (backward
  hooks); lines 233-238: when an entry of the fusion head's weight gradient leaves [-1, 1]
  (``grad_max > 1 or grad_min < -1`` on ``fusion_module.fc_out.weight.grad``), the whole
  model's gradient norm is clipped to 1 (``nn.utils.clip_grad_norm_(model.parameters(),
  max_norm=1.0)``: L2 over every parameter, after the hooks scaled the encoders').

BalanceBenchmark's ``AGM_trainer.py`` (lines 26-53, 535-586) gives the three-modality Shapley
weights used by `shapley_matrix`; its general-M ratio has the opposite sign and cap 7 (see the
docs). The Shapley form is defined for any number of modalities (2^M coalitions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EMPTY_VALUES = ("zero", "forward")


def shapley_matrix(num_modalities: int, empty: str = "zero") -> Tensor:
    """(M, 2^M) float64 W with ``phi_m = sum_S W[m, S] f(S)``; coalition S is a bitmask
    (bit m set: modality m present), so column ``2^M - 1`` is the full forward.

    ``empty="zero"`` (the code) takes the empty coalition's value as 0 (column 0 is zero);
    ``empty="forward"`` is the textbook Shapley value with ``f(empty)`` the all-masked forward.
    """
    if num_modalities < 1:
        raise ValueError(f"AGM needs at least one modality, got {num_modalities}")
    if empty not in EMPTY_VALUES:
        raise ValueError(f"empty coalition value must be one of {EMPTY_VALUES}, got {empty!r}")
    m_all = num_modalities
    w = torch.zeros(m_all, 2**m_all, dtype=torch.float64)
    for m in range(m_all):  # M * 2^M small host-side entries, built once per run
        for s in range(2**m_all):
            if s >> m & 1:
                continue
            size = bin(s).count("1")
            weight = math.factorial(size) * math.factorial(m_all - size - 1) / math.factorial(m_all)
            w[m, s | 1 << m] += weight
            w[m, s] -= weight
    if empty == "zero":
        w[:, 0] = 0.0
    return w


def coalition_logits(
    features: Sequence[Tensor],
    zero_features: Sequence[Tensor],
    weight: Tensor,
    bias: Tensor | None,
    full_logits: Tensor | None = None,
) -> Tensor:
    """(2^M, B, C) logits of every coalition of a late-fusion linear head, from one pass.

    ``f(S) = sum_{m in S} W_m h_m + sum_{m not in S} W_m h_m(0) + b``: `features` are each
    encoder's (B, D_m) features of the real input and `zero_features` its (D_m,) features of a
    zeroed input (both eval mode, no grad, as the code's masked forwards); `weight` (C, sum D_m)
    and `bias` (C,) are the head's. `full_logits` (B, C), when given, replaces the full
    coalition (the code uses the training-mode forward there).
    """
    if len(features) != len(zero_features) or not features:
        raise ValueError(f"{len(features)} feature sets but {len(zero_features)} zero features")
    parts, start = [], 0
    for h, h0 in zip(features, zero_features, strict=True):
        d = h.shape[-1]
        if h0.shape != (d,):
            raise ValueError(f"zero features {tuple(h0.shape)} do not match features (B, {d})")
        w_m = weight[:, start : start + d].float()  # (C, D_m)
        real = h.detach().float() @ w_m.T  # (B, C)
        zero = (h0.detach().float() @ w_m.T).expand_as(real)  # (B, C)
        parts.append(torch.stack([zero, real]))  # (2, B, C): index = present
        start += d
    if start != weight.shape[1]:
        raise ValueError(f"features sum to {start}, the head takes {weight.shape[1]}")
    m_all = len(parts)
    masks = torch.arange(2**m_all, device=weight.device)
    out = torch.zeros((2**m_all, *parts[0].shape[1:]), device=weight.device)
    for m, part in enumerate(parts):  # M terms, each (2^M, B, C)
        out += part[(masks >> m) & 1]
    if bias is not None:
        out += bias.detach().float()
    if full_logits is not None:
        out[-1] = full_logits.detach().float()
    return out


def mono_logits(coalitions: Tensor, matrix: Tensor) -> Tensor:
    """(M, B, C) Shapley mono outputs from `coalition_logits` (2^M, B, C) and `shapley_matrix`."""
    if coalitions.dim() != 3 or coalitions.shape[0] != matrix.shape[1]:
        raise ValueError(
            f"coalitions {tuple(coalitions.shape)} do not match a matrix of {tuple(matrix.shape)}"
        )
    return torch.einsum("ms,sbc->mbc", matrix.to(coalitions), coalitions)


def agm_score_sums(mono: Tensor, labels: Tensor, floor: float = 1e-8) -> Tensor:
    """(M,) fp32 per-modality sums over the batch of ``-log(max(p_i[y_i], floor))`` of
    ``softmax(mono_m)`` (the code's clamp); divide the all-reduced sums by the global count."""
    if mono.dim() != 3 or mono.shape[1] != labels.shape[0]:
        raise ValueError(f"mono logits must be (M, B, C) with labels (B,), got {mono.shape}")
    logp = F.log_softmax(mono.detach().float(), dim=-1)  # (M, B, C)
    true = logp.gather(2, labels[None, :, None].expand(mono.shape[0], -1, 1)).squeeze(2)
    return -(true.clamp_min(math.log(floor))).sum(dim=1)


def agm_coefficients(scores: Tensor, running: Tensor, alpha: float, cap: float = 10.0) -> Tensor:
    """(M,) ``k_m = exp(alpha * min(exp(c (rbar - r_m)) - exp(c (sbar - s_m)), cap))``.

    `scores` (M,) are this step's mean NLLs, `running` (M,) their running means before this
    step, ``c = M / (M - 1)``, bars are means over modalities. With two modalities this is the
    code's ``ratio_a = exp(s_v - s_a)``, ``optimal_a = exp(r_v - r_a)``.
    """
    if scores.dim() != 1 or scores.numel() < 2 or running.shape != scores.shape:
        raise ValueError(
            f"AGM needs (M,) scores and running means with M >= 2, got "
            f"{tuple(scores.shape)} and {tuple(running.shape)}"
        )
    c = scores.numel() / (scores.numel() - 1)
    s, r = scores.double(), running.double()
    ratio = torch.exp(c * (s.mean() - s))
    optimal = torch.exp(c * (r.mean() - r))
    return torch.exp(alpha * torch.clamp_max(optimal - ratio, cap)).float()


def running_mean_update(running: Tensor, scores: Tensor, iteration: int | Tensor) -> Tensor:
    """``r (it - 1) / it + s / it``: the code's running mean with `iteration` 1-based (global)."""
    it = torch.as_tensor(iteration, dtype=torch.float64, device=running.device)
    return (running.double() * (it - 1) / it + scores.double() / it).to(running.dtype)


def clip_scale(
    head_grad_absmax: Tensor, total_norm: Tensor, threshold: float = 1.0, max_norm: float = 1.0
) -> Tensor:
    """() the factor AGM multiplies every gradient by: ``clip_grad_norm_(max_norm)``'s
    ``min(1, max_norm / (norm + 1e-6))`` when the head's weight gradient has an entry beyond
    ``+-threshold``, else 1 (all on device). `total_norm` is the whole model's L2 gradient norm
    after AGM's scaling (the code clips after the backward hooks scaled the encoders')."""
    clip = (max_norm / (total_norm.double() + 1e-6)).clamp_max(1.0)
    return torch.where(head_grad_absmax > threshold, clip, torch.ones_like(clip)).float()


def clip_reference(
    params: Iterable[nn.Parameter], head_weight: nn.Parameter, threshold: float, max_norm: float
) -> float:
    """The authors' clip on an ordinary model in plain PyTorch, the oracle of the fused path
    (``run/CREMAD_main.py`` lines 234-238): when the head weight's gradient has an entry above
    `threshold` or below ``-threshold``, ``clip_grad_norm_(params, max_norm)``. Returns the
    factor applied (host syncs: a reference, not a hot path)."""
    g = head_weight.grad
    if g is None:
        raise ValueError("clip_reference: the head weight has no gradient")
    if not (g.max() > threshold or g.min() < -threshold):
        return 1.0
    norm = nn.utils.clip_grad_norm_(list(params), max_norm=max_norm)
    return min(1.0, max_norm / (float(norm) + 1e-6))
