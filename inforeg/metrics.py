"""Classification metrics from confusion matrices, accumulated on device and reduced across ranks.

A confusion matrix (C, C) counts (true class, predicted class). Matrices add across batches and
ranks, so evaluation accumulates them on device (no host sync per batch) and all-reduces once.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def confusion_matrix(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C) int64 counts of (true, predicted) for logits (B, C) and labels (B,)."""
    predicted = logits.argmax(dim=1)
    flat = labels.to(torch.int64) * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def accuracy(confusion: Tensor) -> float:
    """Fraction of correct predictions; NaN for an empty matrix."""
    total = confusion.sum().item()
    return float(confusion.diagonal().sum().item() / total) if total else float("nan")


def macro_f1(confusion: Tensor) -> float:
    """Unweighted mean over classes of F1; a class absent from both truth and prediction counts 0.

    This matches scikit-learn's ``f1_score(average="macro", zero_division=0)`` over the classes
    present in the truth or the predictions.
    """
    c = confusion.to(torch.float64)
    tp = c.diagonal()
    support = c.sum(dim=1)  # true counts per class
    predicted = c.sum(dim=0)
    present = (support + predicted) > 0
    if not bool(present.any()):
        return float("nan")
    f1 = torch.where(present, 2 * tp / (support + predicted).clamp_min(1), torch.zeros_like(tp))
    return float(f1[present].mean().item())


def summarize(joint: Tensor, per_modality: Mapping[str, Tensor]) -> dict[str, float]:
    """Epoch metrics: ``acc``, ``macro_f1`` of the fused prediction and ``acc.<m>`` per modality."""
    out = {"acc": accuracy(joint), "macro_f1": macro_f1(joint)}
    for m, conf in per_modality.items():
        out[f"acc.{m}"] = accuracy(conf)
    return out
