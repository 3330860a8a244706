"""G-Blending (Wang, Tran, Feiszli, CVPR 2020): loss weights from each head's
overfitting-to-generalization behaviour; docs/methods.md, section G-Blending.

Transcribed from GeWu-Lab/BalanceBenchmark @ 4c1482f, ``balancemm/trainer/GBlending_trainer.py``:

- lines 92-95, 306-376 (``super_epoch_origin``, the ``online`` method): every ``super_epoch``
  (10) epochs, for each modality m and for the fused output, a copy of the model (other
  modalities zeroed for m) is trained ``super_epoch`` epochs; with ``T`` the summed training
  batch losses of a copy's epoch and ``V`` its summed validation batch losses after it, at the
  first (``pre``) and last (``now``) epoch: ``G = V_now - V_pre``,
  ``O = (V_now - T_now) - (V_pre - T_pre)``, ``w = |G / O^2|``, normalised to sum to 1;
- lines 292-302: the training loss is ``sum_k w_k CE(z_k, y)`` over the modalities' logits and the
  fused logits.

The original authors' code (facebookresearch/VMZ @ 4cc542d, ``c2/lib/models/loss/loss_creator.py``
lines 194-197; ``c2/tutorials/gradient_blending.md``) takes fixed, offline-estimated weights
``audio_weight``, ``visual_weight``, ``av_weight``. Defined for any number of modalities
(K = M + 1 heads).
"""

from __future__ import annotations

import torch
from torch import Tensor


def blending_weights(
    train_pre: Tensor,
    train_now: Tensor,
    val_pre: Tensor,
    val_now: Tensor,
    fallback: Tensor | None = None,
) -> Tensor:
    """(K,) weights ``|G / O^2| / sum``, one per head (each modality, then the fused output).

    Arguments are (K,) losses at the start (``pre``) and end (``now``) of the estimation
    window. A zero overfitting change makes a weight infinite (the code then divides inf by inf);
    where any weight is not finite the result is `fallback` (K,) when given, else the
    non-finite weights (the caller keeps its previous weights), all on device.
    """
    shapes = {tuple(x.shape) for x in (train_pre, train_now, val_pre, val_now)}
    if len(shapes) != 1 or train_pre.dim() != 1:
        raise ValueError(f"blending_weights takes four (K,) losses, got shapes {sorted(shapes)}")
    g = val_now.double() - val_pre.double()
    o = (val_now.double() - train_now.double()) - (val_pre.double() - train_pre.double())
    w = (g / (o * o)).abs()
    w = w / w.sum()
    if fallback is None:
        return w.float()
    if fallback.shape != w.shape:
        raise ValueError(f"fallback {tuple(fallback.shape)} does not match {tuple(w.shape)}")
    ok = w.isfinite().all()
    return torch.where(ok, w, fallback.to(w)).float()


def blended_loss(losses: Tensor, weights: Tensor) -> Tensor:
    """``sum_k weights[k] * losses[k]`` for (K,) per-head losses (modalities, then fused)."""
    if losses.shape != weights.shape or losses.dim() != 1:
        raise ValueError(
            f"losses {tuple(losses.shape)} and weights {tuple(weights.shape)} must be (K,)"
        )
    return (weights.to(losses) * losses).sum()
