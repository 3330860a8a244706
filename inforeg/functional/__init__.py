"""The maths of InfoReg and OGM-GE as pure functions (METHOD.md), device-agnostic, no host syncs.

Per-modality values are passed either as a mapping modality -> 0-dim tensor (the readable form,
returned as a dict in the same order) or as one stacked (M,) tensor in head order (the form the
regulators use on device); each function returns the form it was given. Histories of per-epoch
information traces are host floats (one host sync per epoch, in the regulators).

Paper and official-code variants are separate functions, never a hidden branch:
- scores: `modality_scores(kind="nll")` (paper Eq. 8) or ``kind="prob_sum"`` (official code);
- alpha: `regulation_alpha` (Eq. 16) or `official_alpha` (0.95 / 0.1 * exp(tanh(gap)));
- window: `window_open` (Eq. 11) or `official_window_open` (10-epoch moving averages);
- trace: `paper_trace` (mean over batches) or `official_trace` (sum over batches; the per-tensor
  mean over Conv/Linear weights is applied by the kernels' ``official`` statistic weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCORE_KINDS = ("nll", "prob_sum", "prob_mean")

PerModality = Mapping[str, Tensor] | Tensor


def unimodal_logits(features: Mapping[str, Tensor], head: nn.Linear) -> dict[str, Tensor]:
    """Each modality's logits from the shared head's own slice: ``h_m W[:, slice_m]^T + b / M``.

    `features` maps modality -> (B, D_m) in the head's concatenation order; returns modality ->
    (B, C). Gradients flow to the features and the head, so the result serves both the scores
    (detach it) and InfoReg*'s unimodal losses.
    """
    dims = {m: h.shape[-1] for m, h in features.items()}
    if sum(dims.values()) != head.in_features:
        raise ValueError(
            f"features {dims} sum to {sum(dims.values())}, the head takes {head.in_features}"
        )
    bias = None if head.bias is None else head.bias / len(features)
    out: dict[str, Tensor] = {}
    start = 0
    for m, h in features.items():
        out[m] = F.linear(h, head.weight[:, start : start + dims[m]], bias)  # (B, C)
        start += dims[m]
    return out


def score_sums(logits: Mapping[str, Tensor], labels: Tensor, kind: str = "nll") -> Tensor:
    """Per-modality batch sums behind the scores, stacked (M,) fp32, detached.

    nll: sum of the cross-entropies; prob_sum / prob_mean: sum of the true-class probabilities.
    Sums (not means) so that data-parallel ranks can all-reduce them into the global batch's
    value before `scores_from_sums`.
    """
    _check_kind(kind)
    sums = []
    for m, z in logits.items():
        if z.dim() != 2 or z.shape[0] != labels.shape[0]:
            raise ValueError(f"logits of {m!r} have shape {tuple(z.shape)}, labels {labels.shape}")
        z32 = z.detach().float()  # (B, C)
        if kind == "nll":
            sums.append(F.cross_entropy(z32, labels, reduction="sum"))
        else:
            sums.append(z32.softmax(dim=1).gather(1, labels[:, None]).sum())
    return torch.stack(sums)  # (M,)


def scores_from_sums(sums: Tensor, count: Tensor | float, kind: str = "nll") -> Tensor:
    """Scores (M,) from `score_sums` over `count` samples; higher is better.

    nll: ``-sum / count`` (minus the mean cross-entropy, the paper's sign); prob_sum: the sum
    itself (the official code's and OGM-GE's batch sum); prob_mean: ``sum / count``.
    """
    _check_kind(kind)
    if kind == "nll":
        return -sums / count
    if kind == "prob_mean":
        return sums / count
    return sums


def modality_scores(
    logits: Mapping[str, Tensor], labels: Tensor, kind: str = "nll"
) -> dict[str, Tensor]:
    """modality -> 0-dim score of this batch (Eq. 8 with ``kind="nll"``); higher is better."""
    scores = scores_from_sums(score_sums(logits, labels, kind), labels.shape[0], kind)
    return dict(zip(logits.keys(), scores.unbind(), strict=True))


@overload
def score_gaps(scores: Mapping[str, Tensor]) -> dict[str, Tensor]: ...
@overload
def score_gaps(scores: Tensor) -> Tensor: ...
def score_gaps(scores: PerModality) -> PerModality:
    """Eq. 9-10: for each m, the mean of ``s_m - s_m'`` over the m' with a strictly smaller score.

    0 for a modality with none (the weakest, every modality of a tie, a NaN score), so with two
    modalities only the stronger one has a positive gap, and with three the strongest and the
    middle one have their own gaps.
    """
    names, s = _stack(scores)  # (M,)
    diff = s[:, None] - s[None, :]  # (M, M): s_m - s_m'
    below = s[None, :] < s[:, None]  # (M, M): s_m' < s_m (False for NaN)
    count = below.sum(dim=1)
    total = torch.where(below, diff, torch.zeros_like(diff)).sum(dim=1)
    gaps = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    return _unstack(names, gaps)


@overload
def regulation_alpha(gaps: Mapping[str, Tensor], beta: float = 0.9) -> dict[str, Tensor]: ...
@overload
def regulation_alpha(gaps: Tensor, beta: float = 0.9) -> Tensor: ...
def regulation_alpha(gaps: PerModality, beta: float = 0.9) -> PerModality:
    """Eq. 16: ``exp(beta * tanh(gap))`` where ``gap > 0``, else 0 (no regulation)."""
    names, g = _stack(gaps)
    alpha = torch.where(g > 0, torch.exp(beta * torch.tanh(g)), torch.zeros_like(g))
    return _unstack(names, alpha)


@overload
def official_alpha(
    gaps: Mapping[str, Tensor], lead_coef: float = 0.95, other_coef: float = 0.1
) -> dict[str, Tensor]: ...
@overload
def official_alpha(gaps: Tensor, lead_coef: float = 0.95, other_coef: float = 0.1) -> Tensor: ...
def official_alpha(
    gaps: PerModality, lead_coef: float = 0.95, other_coef: float = 0.1
) -> PerModality:
    """The official code's coefficient: ``c_m * exp(tanh(gap))`` where ``gap > 0``, else 0.

    The code names audio (c = 0.95) and visual (c = 0.1); here the first modality in head order
    plays audio (`lead_coef`) and every other one plays visual (`other_coef`).
    """
    names, g = _stack(gaps)
    coef = torch.full_like(g, other_coef)
    coef[:1] = lead_coef
    alpha = torch.where(g > 0, coef * torch.exp(torch.tanh(g)), torch.zeros_like(g))
    return _unstack(names, alpha)


def window_open(history: Sequence[float], epoch: int, threshold: float = 0.04) -> bool:
    """Eq. 11: is epoch `epoch` in the prime learning window of a modality with this history?

    ``history[t]`` is the modality's information trace over epoch t. False for ``epoch < 2``;
    else ``(h[epoch-1] - h[epoch-2]) / h[epoch-1] > threshold``, False when ``h[epoch-1] <= 0``
    or is not finite (no information, or a diverged run: nothing to protect).
    """
    _check_history(history, epoch)
    if epoch < 2:
        return False
    new, old = float(history[epoch - 1]), float(history[epoch - 2])
    if not math.isfinite(new) or new <= 0:
        return False
    return (new - old) / new > threshold  # NaN old -> False


def official_window_open(
    history: Sequence[float], epoch: int, threshold: float = 0.05, span: int = 10
) -> bool:
    """The official code's window test (one test, on the first modality's trace, for all).

    Epoch 0 is open (the code's k = 1). Later, with the history seeded with `span` zeros,
    ``k = (mean(last span) - mean(the span before, shifted by one)) / mean(last span)`` and the
    window is open when ``k > threshold``; False when that mean is <= 0 or not finite (the code
    would divide by zero).
    """
    _check_history(history, epoch)
    if epoch == 0:
        return threshold < 1.0  # the code's k = 1
    padded = [0.0] * span + [float(h) for h in history[:epoch]]
    new = sum(padded[-span:]) / span
    old = sum(padded[-span - 1 : -1]) / span
    if not math.isfinite(new) or new <= 0:
        return False
    return (new - old) / new > threshold


def paper_trace(sum_sq: float, steps: int) -> float:
    """Eq. 7: an epoch's trace, the mean over its batches of ``||g_m||^2``; NaN for no batches."""
    return sum_sq / steps if steps > 0 else math.nan


def official_trace(sum_sq: float, steps: int) -> float:
    """The official trace: the sum over batches (of the per-tensor means the kernels weight)."""
    return sum_sq if steps > 0 else math.nan


@overload
def ogm_coefficients(scores: Mapping[str, Tensor], alpha: float = 0.8) -> dict[str, Tensor]: ...
@overload
def ogm_coefficients(scores: Tensor, alpha: float = 0.8) -> Tensor: ...
def ogm_coefficients(scores: PerModality, alpha: float = 0.8) -> PerModality:
    """OGM's gradient scale per modality from prob_sum scores: ``1 - tanh(alpha * rho)`` for the
    dominant one, 1 for the others.

    The dominant modality is the highest score, the earlier in head order on a tie (with
    audio first, the OGM-GE code modulates audio when ``rho_v <= 1``). ``rho`` is its score over
    the mean of the others' (with two modalities exactly the code's ``S_v / S_a`` or ``S_a / S_v``).
    """
    names, s = _stack(scores)
    if s.numel() < 2:
        raise ValueError("OGM needs at least two modalities")
    rho = _ogm_ratio(s)
    dominant = torch.arange(s.numel(), device=s.device) == torch.argmax(s)
    k = torch.where(dominant, 1 - torch.tanh(alpha * rho), torch.ones_like(s))
    return _unstack(names, k)


def ogm_ratios(scores: Tensor) -> Tensor:
    """(M,) each modality's prob_sum score over the mean of the others' (logged by OGM-GE)."""
    return _ogm_ratio(scores)


def _ogm_ratio(s: Tensor) -> Tensor:
    others = (s.sum() - s) / (s.numel() - 1)  # (M,) mean of the other modalities' scores
    return s / others.clamp_min(torch.finfo(s.dtype).tiny)


def std_from_moments(total: Tensor, total_sq: Tensor, count: Tensor) -> Tensor:
    """Unbiased standard deviations from sums, sums of squares and counts (all (P,)).

    The GE noise's std(g) per tensor, from moments that data-parallel ranks can all-reduce when
    a tensor is split across their partitions. Computed in float64 (catastrophic cancellation of
    ``sum_sq - sum^2 / n`` is then far below fp32 noise).
    """
    n = count.double()
    var = (total_sq.double() - total.double() ** 2 / n.clamp_min(1)) / (n - 1).clamp_min(1)
    return var.clamp_min(0).sqrt()


def _check_kind(kind: str) -> None:
    if kind not in SCORE_KINDS:
        raise ValueError(f"score kind must be one of {SCORE_KINDS}, got {kind!r}")


def _check_history(history: Sequence[float], epoch: int) -> None:
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if len(history) < epoch:
        raise ValueError(f"a window test at epoch {epoch} needs {epoch} traces, got {len(history)}")


def _stack(values: PerModality) -> tuple[list[str] | None, Tensor]:
    if isinstance(values, Tensor):
        if values.dim() != 1:
            raise ValueError(f"stacked per-modality values must be (M,), got {tuple(values.shape)}")
        return None, values
    return list(values.keys()), torch.stack([v.reshape(()) for v in values.values()])


def _unstack(names: list[str] | None, values: Tensor) -> PerModality:
    if names is None:
        return values
    return dict(zip(names, values.unbind(), strict=True))
