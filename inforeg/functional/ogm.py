"""OGM and OGM-GE (Peng et al., CVPR 2022) as pure functions; docs/methods.md, section OGM.

Transcribed from GeWu-Lab/OGM-GE_CVPR2022 @ 343dc1d, ``main.py`` lines 95-150:

- scores ``S_m = sum_i softmax(z_m)_i[y_i]`` of the head-slice logits (lines 105-106);
- ``rho_v = S_v / S_a``, ``rho_a = 1 / rho_v`` (lines 108-109);
- ``rho_v > 1``: ``k_v = 1 - tanh(alpha * relu(rho_v))``, ``k_a = 1``; else
  ``k_a = 1 - tanh(alpha * relu(rho_a))``, ``k_v = 1`` (lines 119-124; the tie goes to audio);
- in epochs ``modulation_starts..modulation_ends`` every 4-D (conv) weight gradient of each
  encoder becomes ``g * k_m`` (OGM) or ``g * k_m + N(0, (std(g) + 1e-8)^2)`` (OGM-GE), the std
  taken from the unscaled gradient, on EVERY encoder, the weak one at ``k = 1`` included
  (lines 132-148).

The code is defined for two modalities (audio first, visual second in head order);
`balancebenchmark_coefficients` is BalanceBenchmark's extension to three. All values are device
tensors; nothing here syncs the host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from inforeg.functional import score_sums, std_from_moments

NOISE_TARGETS = ("every_encoder", "dominant")


def ogm_score_sums(logits: Mapping[str, Tensor] | Sequence[Tensor], labels: Tensor) -> Tensor:
    """(M,) fp32 ``sum_i softmax(z_m)_i[y_i]`` per modality (the code's ``score_a``/``score_v``).

    Sums, not means, so data-parallel ranks all-reduce them into the global batch's scores
    before `official_coefficients` (the code's scores are over its one, global, batch).
    """
    named = logits if isinstance(logits, Mapping) else {str(i): z for i, z in enumerate(logits)}
    return score_sums(named, labels, "prob_sum").float()


def official_coefficients(scores: Tensor, alpha: float = 0.8) -> tuple[Tensor, Tensor]:
    """The official two-modality rule: ``(k, rho)``, both (2,), from scores ``(S_a, S_v)``.

    ``rho = (S_a / S_v, S_v / S_a)``; ``k`` is 1 except for the dominant modality, which gets
    ``1 - tanh(alpha * rho)``. Video is dominant only when ``rho_v > 1`` strictly, so a tie
    modulates audio, as the code does. A zero score divides by zero as in the code (a modality
    with ``S = 0`` makes the other's ``k`` exactly 0; two zero scores give NaN).
    """
    _check_two(scores, "OGM")
    if not alpha > 0:
        raise ValueError(f"OGM alpha must be > 0, got {alpha}")
    s = scores.float()
    ratio_v = s[1] / s[0]
    ratio_a = 1 / ratio_v
    video_dominant = ratio_v > 1
    one = torch.ones_like(ratio_v)
    k_v = torch.where(video_dominant, 1 - torch.tanh(alpha * torch.relu(ratio_v)), one)
    k_a = torch.where(video_dominant, one, 1 - torch.tanh(alpha * torch.relu(ratio_a)))
    return torch.stack([k_a, k_v]), torch.stack([ratio_a, ratio_v])


def balancebenchmark_coefficients(scores: Tensor, alpha: float, eps: float = 1e-5) -> Tensor:
    """BalanceBenchmark's OGM for two or three modalities (``OGM_trainer.py`` lines 112-151).

    Two: ``rho_m = S_m / (S_other + eps)``; three: ``rho_m = S_m / (min_m' S_m' + eps)``; then
    ``k_m = max(1 - tanh(alpha * rho_m), 0)`` where ``rho_m > 1``, else 1. With three, every
    modality above the weakest is slowed, each by its own ratio. (Its three-modality scores
    differ too: it counts only correctly classified samples, of ``softmax(cos(z))``; pass such
    scores here to reproduce it.)
    """
    if scores.dim() != 1 or scores.numel() not in (2, 3):
        raise ValueError(
            f"BalanceBenchmark's OGM is defined for 2 or 3 modalities, got scores of shape "
            f"{tuple(scores.shape)}"
        )
    s = scores.float()
    ratio = s / (s.flip(0) + eps) if s.numel() == 2 else s / (s.min() + eps)
    k = (1 - torch.tanh(alpha * torch.relu(ratio))).clamp_min(0)
    return torch.where(ratio > 1, k, torch.ones_like(k))


def ge_noise_targets(
    conv_weight: Tensor, param_modality: Tensor, dominant: Tensor, target: str = "every_encoder"
) -> Tensor:
    """(P,) bool: which parameters' gradients get GE noise.

    `conv_weight` (P,) bool marks 4-D conv weights (``ModalityGroups.table("conv_weight")``),
    `param_modality` (P,) long each parameter's modality, `dominant` (M,) bool. ``every_encoder``
    is the official code (every encoder's conv weights); ``dominant`` only the dominant
    encoder's, a reading of the paper this project shipped before (kept as a variant).
    """
    if target not in NOISE_TARGETS:
        raise ValueError(f"GE noise target must be one of {NOISE_TARGETS}, got {target!r}")
    if conv_weight.shape != param_modality.shape or conv_weight.dim() != 1:
        raise ValueError(
            f"conv_weight {tuple(conv_weight.shape)} and param_modality "
            f"{tuple(param_modality.shape)} must be the same (P,) shape"
        )
    if target == "every_encoder":
        return conv_weight.clone()
    return conv_weight & dominant.to(conv_weight.device)[param_modality]


def ge_noise_std(
    total: Tensor, total_sq: Tensor, count: Tensor, targets: Tensor, eps: float = 1e-8
) -> Tensor:
    """(P,) fp32 std of the added noise: ``std(g) + eps`` on targeted tensors, 0 elsewhere.

    `total`, `total_sq`, `count` are per-parameter (P,) sums of g, of g^2 and element counts of
    the unscaled gradient (all-reduced first when a tensor is split across ranks); the std is
    the unbiased one, as ``torch.Tensor.std()`` in the code.
    """
    std = std_from_moments(total, total_sq, count) + eps
    return torch.where(targets, std, torch.zeros_like(std)).float()


def _check_two(scores: Tensor, method: str) -> None:
    if scores.dim() != 1 or scores.numel() != 2:
        raise ValueError(
            f"{method} is defined for two modalities (audio, visual), got scores of shape "
            f"{tuple(scores.shape)}"
        )
