from __future__ import annotations

import math

import torch

from inforeg.metrics import accuracy, confusion_matrix, macro_f1, summarize


def test_confusion_matrix_counts_true_by_predicted() -> None:
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    labels = torch.tensor([0, 1, 2, 2])
    conf = confusion_matrix(logits, labels, 3)
    assert conf.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert accuracy(conf) == 0.75


def test_macro_f1_by_hand() -> None:
    # class 0: tp 1, fp 0, fn 0 -> 1.0; class 1: tp 1, fp 1, fn 0 -> 2/3; class 2: tp 1, fn 1 -> 2/3
    conf = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    assert math.isclose(macro_f1(conf), (1.0 + 2 / 3 + 2 / 3) / 3)
    # A class never seen nor predicted does not count; one seen but never predicted counts 0.
    conf4 = torch.tensor([[2, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert math.isclose(macro_f1(conf4), (2 * 2 / (2 + 3) + 0.0) / 2)


def test_summarize_and_empty() -> None:
    conf = torch.tensor([[2, 0], [1, 1]])
    out = summarize(conf, {"audio": torch.tensor([[1, 1], [0, 2]])})
    assert out["acc"] == 0.75 and out["acc.audio"] == 0.75
    assert math.isnan(accuracy(torch.zeros(2, 2, dtype=torch.int64)))
