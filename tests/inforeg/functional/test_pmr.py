"""inforeg.functional.pmr against values worked by hand from fanyunfeng-bit/Modal-Imbalance-PMR
@ 3615e48 (main_Prototype_grad.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from inforeg.functional import pmr


def test_prototypes_are_class_means_and_batches_add_up():
    # calculate_prototype (lines 417-433): sums per class, divided by the class counts
    h = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = torch.tensor([0, 1, 0])
    sums, counts = pmr.prototype_sums(h, y, 3)
    torch.testing.assert_close(sums, torch.tensor([[6.0, 8.0], [3.0, 4.0], [0.0, 0.0]]))
    torch.testing.assert_close(counts, torch.tensor([2.0, 1.0, 0.0]))
    protos = pmr.prototypes_from_sums(sums, counts)
    torch.testing.assert_close(protos, torch.tensor([[3.0, 4.0], [3.0, 4.0], [0.0, 0.0]]))
    # an empty class keeps its previous prototype (the code would divide 0 by 0)
    prev = torch.full((3, 2), 7.0)
    kept = pmr.prototypes_from_sums(sums, counts, prev)
    torch.testing.assert_close(kept[2], torch.tensor([7.0, 7.0]))
    # two batches (or two ranks) summed give the whole
    s1, c1 = pmr.prototype_sums(h[:1], y[:1], 3)
    s2, c2 = pmr.prototype_sums(h[1:], y[1:], 3)
    torch.testing.assert_close(s1 + s2, sums)
    torch.testing.assert_close(c1 + c2, counts)


def test_momentum_update_of_the_prototypes():
    # lines 435-440: epoch 0 keeps the new estimate; later (1 - m) new + m old:
    # 0.75 * 1 + 0.25 * 3 = 1.5
    new, old = torch.ones(1, 2), torch.full((1, 2), 3.0)
    torch.testing.assert_close(pmr.ema_prototypes(new, old, 0.25), torch.full((1, 2), 1.5))
    torch.testing.assert_close(pmr.ema_prototypes(new, None, 0.25), new)
    torch.testing.assert_close(pmr.ema_prototypes(new, old, 0.0), new)  # the CREMA-D setting
    with pytest.raises(ValueError, match="momentum"):
        pmr.ema_prototypes(new, old, 1.5)


def test_prototype_logits_and_scores():
    # EU_dist (lines 69-75) negated: h = (0, 0) and (3, 4); c = (0, 0) and (3, 0):
    # row 0: (-0, -3); row 1: (-5, -4)
    h = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    c = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    z = pmr.prototype_logits(h, c)
    torch.testing.assert_close(z, torch.tensor([[0.0, -3.0], [-5.0, -4.0]]))
    # score_p (line 158): labels (0, 1): 1 / (1 + e^-3) + e^-4 / (e^-5 + e^-4)
    # = 0.9525741 + 0.7310586 = 1.6836327
    s = pmr.prototype_score_sums([z, z], torch.tensor([0, 1]))
    torch.testing.assert_close(s, torch.tensor([1.6836327, 1.6836327]))


def test_coefficients_help_the_slower_modality():
    # lines 169-177: rho = S_a / S_v; > 1 -> (beta, lam) = (0, alpha); < 1 -> (alpha, 0)
    torch.testing.assert_close(
        pmr.pmr_coefficients(torch.tensor([2.0, 1.0]), 2.0), torch.tensor([0.0, 2.0])
    )
    torch.testing.assert_close(
        pmr.pmr_coefficients(torch.tensor([1.0, 2.0]), 2.0), torch.tensor([2.0, 0.0])
    )
    torch.testing.assert_close(
        pmr.pmr_coefficients(torch.tensor([1.5, 1.5]), 2.0), torch.tensor([0.0, 0.0])
    )
    with pytest.raises(ValueError, match="two modalities"):
        pmr.pmr_coefficients(torch.tensor([1.0, 2.0, 3.0]), 2.0)


def test_loss_adds_the_weighted_prototype_cross_entropies():
    # line 178: CE(out) + beta CE(-d_a) + lam CE(-d_v); with (beta, lam) = (0, 2) and the video
    # prototype logits (0, ln 3) at label 1: CE = -ln(3 / 4) = 0.2876821 -> 1 + 2 * 0.2876821
    za = torch.tensor([[0.0, -3.0]])
    zv = torch.tensor([[0.0, math.log(3.0)]])
    loss = pmr.pmr_loss(torch.tensor(1.0), [za, zv], torch.tensor([1]), torch.tensor([0.0, 2.0]))
    assert loss.item() == pytest.approx(1.5753641, abs=1e-6)
    with pytest.raises(ValueError, match="coefficients"):
        pmr.pmr_loss(torch.tensor(1.0), [za, zv], torch.tensor([1]), torch.tensor([1.0]))


def test_gradients_reach_the_features_not_the_prototypes():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    c = torch.tensor([[1.0, 1.0], [0.0, 0.0]], requires_grad=True)
    loss = F.cross_entropy(pmr.prototype_logits(h, c), torch.tensor([0, 1]))
    loss.backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert c.grad is None
    with pytest.raises(ValueError, match="share D"):
        pmr.prototype_logits(h, torch.zeros(2, 3))
