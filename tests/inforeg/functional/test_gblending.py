"""inforeg.functional.gblending against values worked by hand from GeWu-Lab/BalanceBenchmark
@ 4c1482f (balancemm/trainer/GBlending_trainer.py)."""

import pytest
import torch

from inforeg.functional import gblending


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_weights_from_generalization_over_overfitting_squared():
    # heads (audio, video, fused). lines 361-373: g = V_now - V_pre = (-1, 0.5, -3);
    # o_pre = V_pre - T_pre = (2, 1, 2); o_now = V_now - T_now = (7, 5.5, 3); o = (5, 4.5, 1);
    # |g / o^2| = (1 / 25, 0.5 / 20.25, 3) = (0.04, 2 / 81, 3); sum = 3.0646914
    # -> (0.0130518, 0.0080567, 0.9788915)
    w = gblending.blending_weights(
        train_pre=t(10.0, 8.0, 6.0),
        train_now=t(4.0, 4.0, 2.0),
        val_pre=t(12.0, 9.0, 8.0),
        val_now=t(11.0, 9.5, 5.0),
    )
    torch.testing.assert_close(w, t(0.0130518, 0.0080567, 0.9788915))
    assert w.sum().item() == pytest.approx(1.0)


def test_zero_overfitting_change_falls_back():
    # head 0: o = (3 - 1) - (4 - 2) = 0 -> |g / 0| = inf; the previous weights are kept
    prev = t(0.2, 0.3, 0.5)
    w = gblending.blending_weights(
        t(2.0, 1.0, 1.0), t(1.0, 0.5, 0.5), t(4.0, 2.0, 2.0), t(3.0, 3.0, 3.0), fallback=prev
    )
    torch.testing.assert_close(w, prev)
    raw = gblending.blending_weights(t(2.0, 1.0), t(1.0, 0.5), t(4.0, 2.0), t(3.0, 3.0))
    assert not torch.isfinite(raw).all()
    with pytest.raises(ValueError, match="fallback"):
        gblending.blending_weights(t(2.0), t(1.0), t(4.0), t(3.0), fallback=t(1.0, 0.0))


def test_blended_loss_and_shapes():
    # lines 299-301: sum_k w_k CE_k = 0.2 * 1 + 0.3 * 2 + 0.5 * 3 = 2.3
    loss = gblending.blended_loss(t(1.0, 2.0, 3.0), t(0.2, 0.3, 0.5))
    assert loss.item() == pytest.approx(2.3)
    with pytest.raises(ValueError, match="must be"):
        gblending.blended_loss(t(1.0, 2.0), t(1.0))
    with pytest.raises(ValueError, match="four"):
        gblending.blending_weights(t(1.0), t(1.0, 2.0), t(1.0), t(1.0))
