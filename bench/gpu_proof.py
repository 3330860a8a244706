"""Proof that a training step's gradients were regulated, and that the optimizer used them.

Pure functions over flat fp32 tensors (one segment table), so the same proof runs on CPU in the
tests and on CUDA in the GPU check:

1. the pass changed the regulated modality's gradients by exactly ``alpha_m (w - anchor)``
   (to fp32 rounding) and left every other covered gradient bit-identical;
2. the optimizer consumed the regulated gradient: for torch SGD with momentum ``mu`` and weight
   decay ``wd`` the new momentum buffer is ``mu * buf + (g' + wd * w)`` (the first step:
   ``buf = 0``), to fp32 rounding. A pass whose edit never reached the optimizer (ZeRO-0 with
   bf16, where DeepSpeed had already copied the gradients) fails here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from inforeg.groups import ModalityGroups, Segment

ULP = 2.0**-24  # fp32 unit roundoff


@dataclass(frozen=True)
class Snapshot:
    """Flat fp32 copies taken around one regulated step."""

    before: Tensor  # gradient before the pass
    after: Tensor  # gradient after the pass (what the optimizer should step)
    weight: Tensor  # weights before the optimizer step
    anchor: Tensor  # the regulator's anchor
    buf_old: Tensor | None  # SGD momentum buffer before the step (None: the first step)
    buf_new: Tensor  # SGD momentum buffer after the step


def element_alpha(
    segments: Sequence[Segment], groups: ModalityGroups, alpha: Tensor, numel: int
) -> tuple[Tensor, Tensor]:
    """((numel,) fp64 alpha of each element's modality, (numel,) bool covered by a segment)."""
    device = alpha.device
    out = torch.zeros(numel, dtype=torch.float64, device=device)
    covered = torch.zeros(numel, dtype=torch.bool, device=device)
    for seg in segments:
        m = groups.params[seg.param].modality_index
        out[seg.start : seg.start + seg.length] = alpha[m].double()
        covered[seg.start : seg.start + seg.length] = True
    return out, covered


def pull_error(snap: Snapshot, alpha_e: Tensor, covered: Tensor) -> tuple[float, float, bool]:
    """(worst error of ``after - before - alpha (w - anchor)`` in units of fp32 roundoff of its
    terms, the fraction of regulated elements the pass changed, whether every covered element
    of an unregulated modality is bit-identical)."""
    before, after = snap.before.double(), snap.after.double()
    pull = alpha_e * (snap.weight.double() - snap.anchor.double())
    scale = before.abs() + pull.abs() + after.abs()
    err = ((after - before - pull).abs() / (ULP * scale).clamp_min(1e-300)).max().item()
    regulated = covered & (alpha_e != 0)
    changed = (snap.after != snap.before)[regulated].float().mean().item() if regulated.any() else 0
    quiet = covered & (alpha_e == 0)
    untouched = bool(torch.equal(snap.after[quiet], snap.before[quiet]))
    return err, float(changed), untouched


def consumed_error(snap: Snapshot, momentum: float, weight_decay: float) -> float:
    """Worst error of ``buf_new - mu buf_old - (after + wd w)`` in fp32 roundoffs of its terms."""
    old = torch.zeros_like(snap.buf_new, dtype=torch.float64)
    if snap.buf_old is not None:
        old = snap.buf_old.double() * momentum
    step = snap.after.double() + weight_decay * snap.weight.double()
    scale = old.abs() + snap.after.double().abs() + (weight_decay * snap.weight.double()).abs()
    resid = (snap.buf_new.double() - old - step).abs()
    return (resid / (ULP * scale).clamp_min(1e-300)).max().item()


def prove(
    snap: Snapshot,
    segments: Sequence[Segment],
    groups: ModalityGroups,
    alpha: Tensor,
    momentum: float,
    weight_decay: float,
) -> tuple[bool, str]:
    """(proved, one line): the pass's edit is exact and reached the optimizer's update."""
    alpha_e, covered = element_alpha(segments, groups, alpha, snap.before.numel())
    pull_ulps, changed, untouched = pull_error(snap, alpha_e, covered)
    sgd_ulps = consumed_error(snap, momentum, weight_decay)
    regulated = [m for m, a in zip(groups.modalities, alpha.tolist(), strict=True) if a != 0]
    # fused multiply-add vs separate roundings: a few roundoffs; the SGD update: three roundings
    ok = bool(regulated) and changed > 0.5 and untouched and pull_ulps <= 4 and sgd_ulps <= 8
    alphas = ", ".join(
        f"{m} {a:.3f}" for m, a in zip(groups.modalities, alpha.tolist(), strict=True)
    )
    return ok, (
        f"alpha {alphas}: {changed:.1%} of {'/'.join(regulated) or 'no'} gradients changed by "
        f"alpha (w - anchor) (worst {pull_ulps:.1f} roundoffs), the others "
        f"{'bit-identical' if untouched else 'CHANGED'}; the SGD momentum took the regulated "
        f"gradient (worst {sgd_ulps:.1f} roundoffs)"
    )
