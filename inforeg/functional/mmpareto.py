"""MMPareto (Wei & Hu, ICML 2024): per encoder, a conflict-free combination of the multimodal and
the unimodal loss's gradients with an enlarged magnitude; docs/methods.md, section MMPareto.

Transcribed from GeWu-Lab/MMPareto_ICML2024 @ a339db3, ``code/MMPareto.py`` lines 99-209 and
``code/min_norm_solvers.py`` lines 9-30, 92-129. Per encoder m (its parameters; the head excluded):

- ``g_mm`` the gradient of the multimodal loss, ``g_u`` that of m's unimodal loss (lines 117-147);
- conflict test on the whole encoder: ``cos(g_mm, g_u) > 0`` -> weights ``(0.5, 0.5)``, else the
  two-vector min-norm solution (lines 149-174): with ``a = g_mm.g_mm``, ``b = g_mm.g_u``,
  ``c = g_u.g_u``: ``b >= a`` -> ``(0.999, 0.001)``; else ``b >= c`` -> ``(0.001, 0.999)``; else
  ``k_mm = (c - b) / (a + c - 2b)``, ``k_u = 1 - k_mm``;
- per parameter TENSOR (lines 184-207): ``new = 2 (k_mm g_mm + k_u g_u)``, ``r = ||g_mm + g_u|| /
  ||new||`` (the tensor's gradient of the summed loss over the combination), and the gradient
  becomes ``gamma * r * new`` when ``r > 1``, else ``gamma * new``; ``gamma = 1.5`` (line 178).

Everything here is a reduction to per-parameter dot products ``(g_mm.g_mm, g_mm.g_u, g_u.g_u)``
(P, 3), which data-parallel ranks holding parts of a tensor all-reduce, and one elementwise pass.
Defined per encoder, so for any number of modalities.
"""

from __future__ import annotations

import torch
from torch import Tensor


def param_dots(g_mm: Tensor, g_uni: Tensor, param_ids: Tensor, num_params: int) -> Tensor:
    """(P, 3) float64 per-parameter ``(g_mm.g_mm, g_mm.g_u, g_u.g_u)`` of flat gradients (N,)
    whose element i belongs to parameter ``param_ids[i]`` (a reference layout; a rank holding
    part of a tensor sums its part, then all-reduces). The fast path is a per-segment reduction
    in the kernels (like their per-parameter moments); this one costs several float64 copies
    of the gradients."""
    if g_mm.shape != g_uni.shape or g_mm.shape != param_ids.shape or g_mm.dim() != 1:
        raise ValueError(
            f"g_mm {tuple(g_mm.shape)}, g_uni {tuple(g_uni.shape)} and param_ids "
            f"{tuple(param_ids.shape)} must be the same (N,) shape"
        )
    a, u = g_mm.double(), g_uni.double()  # (N,) each: a reference, not the fast path
    out = torch.zeros(3, num_params, dtype=torch.float64, device=g_mm.device)
    out[0].index_add_(0, param_ids, a * a)
    out[1].index_add_(0, param_ids, a * u)
    out[2].index_add_(0, param_ids, u * u)
    return out.T.contiguous()  # (P, 3)


def modality_dots(dots: Tensor, param_modality: Tensor, num_modalities: int) -> Tensor:
    """(M, 3) per-encoder dot products from `param_dots` (P, 3) and each parameter's modality."""
    if dots.dim() != 2 or dots.shape[1] != 3 or param_modality.shape != dots.shape[:1]:
        raise ValueError(f"dots (P, 3) and param_modality (P,), got {tuple(dots.shape)}")
    out = torch.zeros(num_modalities, 3, dtype=torch.float64, device=dots.device)
    return out.index_add_(0, param_modality.to(dots.device), dots)


def pareto_weights(dots: Tensor) -> Tensor:
    """(M, 2) ``(k_mm, k_u)`` per encoder from its (M, 3) dot products.

    ``g_mm.g_u > 0`` (the sign of the code's cosine) -> ``(0.5, 0.5)``; otherwise the code's
    two-vector min-norm solution (``MinNormSolver._min_norm_element_from2``).
    """
    if dots.dim() != 2 or dots.shape[1] != 3:
        raise ValueError(f"dots must be (M, 3), got {tuple(dots.shape)}")
    a, b, c = dots.double().unbind(1)
    interior = (c - b) / (a + c - 2 * b)
    k_mm = torch.where(b >= a, torch.full_like(a, 0.999), torch.where(b >= c, 0.001, interior))
    k_mm = torch.where(b > 0, torch.full_like(a, 0.5), k_mm)
    return torch.stack([k_mm, 1 - k_mm], dim=1)


def param_factors(dots: Tensor, weights: Tensor, gamma: float = 1.5) -> Tensor:
    """(P,) float64 factor ``f`` with the new gradient ``f * 2 (k_mm g_mm + k_u g_u)``.

    `dots` (P, 3) per parameter, `weights` (P, 2) its encoder's ``(k_mm, k_u)``. ``r`` is the
    ratio of ``||g_mm + g_u||`` to ``||2 (k_mm g_mm + k_u g_u)||``, both from the dot products;
    ``f = gamma * r`` when ``r > 1``, else ``gamma``. A tensor whose combination is zero keeps
    ``f = gamma`` (its new gradient is 0; the code's ``inf * 0`` would make it NaN).
    """
    if dots.shape[:1] != weights.shape[:1] or weights.shape[1:] != (2,):
        raise ValueError(f"dots {tuple(dots.shape)} and weights {tuple(weights.shape)}")
    a, b, c = dots.double().unbind(1)
    k0, k1 = weights.double().unbind(1)
    summed = (a + 2 * b + c).clamp_min(0)
    combined = (4 * (k0 * k0 * a + 2 * k0 * k1 * b + k1 * k1 * c)).clamp_min(0)
    ratio = torch.sqrt(summed / combined)
    return torch.where((combined > 0) & (ratio > 1), gamma * ratio, torch.full_like(ratio, gamma))


def combine(g_mm: Tensor, g_uni: Tensor, factor: Tensor, k_mm: Tensor, k_uni: Tensor) -> Tensor:
    """``factor * 2 (k_mm g_mm + k_uni g_uni)`` elementwise; the coefficients broadcast (gather
    them per element, or pass scalars for one tensor). Computed in at least fp32 (a bf16
    gradient is upcast once), returned in g's dtype."""
    dt = torch.promote_types(g_mm.dtype, torch.float32)
    out = 2 * (k_mm.to(dt) * g_mm.to(dt) + k_uni.to(dt) * g_uni.to(dt)) * factor.to(dt)
    return out.to(g_mm.dtype)


def mmpareto_reference(
    g_mm: Tensor,
    g_uni: Tensor,
    param_ids: Tensor,
    param_modality: Tensor,
    num_modalities: int,
    gamma: float = 1.5,
) -> tuple[Tensor, Tensor]:
    """The whole rule on flat (N,) gradients of one rank holding full tensors:
    ``(new gradient (N,), weights (M, 2))``. The slow twin of the regulator's fused pass."""
    dots = param_dots(g_mm, g_uni, param_ids, param_modality.numel())
    weights = pareto_weights(modality_dots(dots, param_modality, num_modalities))  # (M, 2)
    per_param = weights[param_modality.to(weights.device)]  # (P, 2)
    factors = param_factors(dots, per_param, gamma)  # (P,)
    k = per_param[param_ids]  # (N, 2)
    return combine(g_mm, g_uni, factors[param_ids], k[:, 0], k[:, 1]), weights
