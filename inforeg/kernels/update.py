"""What one fused gradient pass does: the `GradientUpdate` every implementation executes.

For every gradient element of parameter p (modality m), in this order::

    stat_before += g^2                                  (statistic "paper")
    g <- scale[m] * g           if scale and (p is a conv weight or not scale_conv_only)
    g <- g + alpha[m] * (w - anchor)                    if alpha
    g <- g + noise_std[p] * z,  z ~ N(0, 1)             if noise_std
    stat_after += weight[p] * g^2                       (statistic "official")

and the pass returns the statistic per modality, (M,) fp32. Arithmetic is fp32 whatever the
gradient's dtype (a bf16 gradient is upcast, updated and rounded once), the anchor is fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inforeg.groups import ModalityGroups

STATS = ("paper", "official")


@dataclass(frozen=True, kw_only=True)
class GradientUpdate:
    """The coefficients of one pass; device tensors, so no host sync is needed to build it."""

    scale: Tensor | None = None
    """(M,) per-modality gradient scale (OGM's k); None: no scaling."""
    scale_conv_only: bool = False
    """Scale conv-weight gradients only (OGM-GE), else every parameter of the modality."""
    alpha: Tensor | None = None
    """(M,) per-modality pull toward the anchor (InfoReg Eq. 12; 0 = none); None: anchors
    are not read at all."""
    noise_std: Tensor | None = None
    """(P,) per-parameter std of the added Gaussian noise (0 = none); None: no noise."""
    noise_seed: int = 0
    """Seed of this pass's noise (the regulator derives it from its seed, step and rank)."""
    stat: str | None = "paper"
    """paper: sum of g^2 of the incoming gradient over every parameter (Eq. 7's ||g_m||^2);
    official: sum of the updated g^2 over Conv/Linear weights, each tensor's divided by its
    numel (its mean, as the official code); None: no statistic (zeros returned)."""

    def __post_init__(self) -> None:
        if self.stat is not None and self.stat not in STATS:
            raise ValueError(f"update stat must be one of {STATS} or None, got {self.stat!r}")
        for name in ("scale", "alpha", "noise_std"):
            value = getattr(self, name)
            if value is not None and value.dim() != 1:
                raise ValueError(f"update {name} must be 1-D, got shape {tuple(value.shape)}")

    def check(self, groups: ModalityGroups) -> None:
        """Raise if the coefficient vectors do not match `groups`."""
        m, p = groups.num_modalities, len(groups.params)
        for name, size in (("scale", m), ("alpha", m), ("noise_std", p)):
            value = getattr(self, name)
            if value is not None and value.numel() != size:
                raise ValueError(f"update {name} has {value.numel()} entries, expected {size}")


def modality_sums(
    stats: Tensor, params: Tensor, groups: ModalityGroups, stat: str | None
) -> Tensor:
    """(M,) fp32: per-entry sums of g^2 `stats` (K,) of parameters `params` (K,, long), weighted
    by the statistic's per-parameter weights and added up per modality; zeros for no statistic."""
    out = torch.zeros(groups.num_modalities, dtype=torch.float32, device=stats.device)
    if stat is None:
        return out
    weights = groups.table(f"stat_{stat}", stats.device).index_select(0, params)  # (K,)
    modality = groups.table("modality", stats.device).index_select(0, params)  # (K,)
    return out.index_add_(0, modality, stats * weights)


def noise_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator for one pass's noise, independent of the global RNG."""
    return torch.Generator(device=device).manual_seed(seed)
