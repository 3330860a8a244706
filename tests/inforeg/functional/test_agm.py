"""inforeg.functional.agm against values worked by hand from lihong2303/AGM_ICCV2023 @ 5a65542
(model/CREMAD_net.py, run/CREMAD_main.py) and GeWu-Lab/BalanceBenchmark @ 4c1482f
(balancemm/trainer/AGM_trainer.py)."""

import math

import pytest
import torch

from inforeg.functional import agm


def d64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_two_modality_matrix_is_the_codes_mono_outputs():
    # coalitions (bitmask): 0 none, 1 audio only = pad_visual_out, 2 video only = pad_audio_out,
    # 3 total. CREMAD_net.py 17: m_a = (total - pad_audio + pad_visual) / 2; line 11: m_v
    w = agm.shapley_matrix(2)
    torch.testing.assert_close(w, d64(0, 0.5, -0.5, 0.5, 0, -0.5, 0.5, 0.5).reshape(2, 4))
    # the textbook value also subtracts f(empty) / 2 from each
    w = agm.shapley_matrix(2, empty="forward")
    torch.testing.assert_close(w[:, 0], d64(-0.5, -0.5))


def test_three_modality_matrix_is_balancebenchmarks():
    # AGM_trainer.py 38: m_a = 1/3 (AVT - VT) + 1/6 (AV - V + AT - T) + 1/3 A; times 6, columns
    # (none, A, V, AV, T, AT, VT, AVT); lines 46 and 53 for V and T
    w6 = agm.shapley_matrix(3) * 6
    torch.testing.assert_close(w6[0], d64(0, 2, -1, 1, -1, 1, -2, 2))
    torch.testing.assert_close(w6[1], d64(0, -1, 2, 1, -1, -2, 1, 2))
    torch.testing.assert_close(w6[2], d64(0, -1, -1, -2, 2, 1, 1, 2))
    # the mono outputs add up to the full forward (the code's out = m_a + m_v)
    torch.testing.assert_close(w6.sum(0) / 6, d64(0, 0, 0, 0, 0, 0, 0, 1))
    with pytest.raises(ValueError, match="empty coalition"):
        agm.shapley_matrix(2, empty="mean")


def test_coalition_logits_of_a_linear_head_and_mono_outputs():
    # head W = [[1, 2], [0, 1]], b = (0.5, 0); a = 1, v = 2; zeroed inputs give a0 = 0.1, v0 = 0.2
    # f(none) = (0.1 + 0.4 + 0.5, 0.2) = (1.0, 0.2); f(a) = (1 + 0.4 + 0.5, 0.2) = (1.9, 0.2)
    # f(v) = (0.1 + 4 + 0.5, 2) = (4.6, 2.0); f(a, v) = (1 + 4 + 0.5, 2) = (5.5, 2.0)
    weight = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    bias = torch.tensor([0.5, 0.0])
    feats = [torch.tensor([[1.0]]), torch.tensor([[2.0]])]
    zeros = [torch.tensor([0.1]), torch.tensor([0.2])]
    f = agm.coalition_logits(feats, zeros, weight, bias)
    expected = torch.tensor([[1.0, 0.2], [1.9, 0.2], [4.6, 2.0], [5.5, 2.0]])
    torch.testing.assert_close(f[:, 0], expected)
    # m_a = (5.5 - 4.6 + 1.9, 2 - 2 + 0.2) / 2 = (1.4, 0.1); m_v = (5.5 - 1.9 + 4.6, 3.8) / 2
    mono = agm.mono_logits(f, agm.shapley_matrix(2))
    torch.testing.assert_close(mono[:, 0], torch.tensor([[1.4, 0.1], [4.1, 1.9]]))
    # the code's total_out is the training-mode forward: it replaces the full coalition
    f = agm.coalition_logits(feats, zeros, weight, bias, full_logits=torch.tensor([[6.5, 3.0]]))
    torch.testing.assert_close(f[3, 0], torch.tensor([6.5, 3.0]))
    with pytest.raises(ValueError, match="head takes"):
        agm.coalition_logits(feats, zeros, torch.ones(2, 3), bias)


def test_scores_clamp_the_true_class_probability_at_1e8():
    # CREMAD_main.py 133-143: -log(p[y]), with p < 1e-8 counted as -log(1e-8) = 18.4206807
    # modality 0: softmax(0, ln 3) at label 1 = 3/4 -> 0.2876821; modality 1: p = e^-40 < 1e-8
    mono = torch.tensor([[[0.0, math.log(3.0)]], [[0.0, -40.0]]])  # (M=2, B=1, C=2)
    s = agm.agm_score_sums(mono, torch.tensor([1]))
    torch.testing.assert_close(s, torch.tensor([0.2876821, 18.4206807]))


def test_coefficients_from_scores_and_running_means():
    # CREMAD_main.py 145-152 with s = (0.5, 1.0), r = (0.6, 0.9), alpha = 0.1:
    # ratio_a = e^(1.0 - 0.5) = 1.6487213, optimal_a = e^(0.9 - 0.6) = 1.3498588
    # k_a = e^(0.1 (1.3498588 - 1.6487213)) = e^-0.0298862 = 0.9705559
    # ratio_v = e^-0.5 = 0.6065307, optimal_v = e^-0.3 = 0.7408182, k_v = e^0.0134288 = 1.0135193
    k = agm.agm_coefficients(d64(0.5, 1.0), d64(0.6, 0.9), alpha=0.1)
    torch.testing.assert_close(k, torch.tensor([0.9705559, 1.0135193]))


def test_coefficient_exponent_is_capped_at_ten():
    # s = (5, 0), r = (0, 5): optimal_a - ratio_a = e^5 - e^-5 = 148.4 -> min(., 10) = 10,
    # k_a = e^(0.1 * 10) = e; k_v = e^(0.1 (0.0067379 - 148.4131591)) = e^-14.8406421 = 3.5875e-7
    k = agm.agm_coefficients(d64(5.0, 0.0), d64(0.0, 5.0), alpha=0.1)
    torch.testing.assert_close(k, torch.tensor([math.e, 3.5875e-7]), rtol=1e-4, atol=0.0)


def test_three_modalities_generalise_with_the_mean_score():
    # c = 3/2; s = (1, 2, 3), mean 2: ratio = e^(1.5 (2 - s)) = (e^1.5, 1, e^-1.5)
    # running all 2: optimal = 1; k = e^(0.2 (1 - ratio)) = (e^-0.6963378, 1, e^0.1553740)
    # = (0.4984072, 1, 1.1680947)
    k = agm.agm_coefficients(d64(1.0, 2.0, 3.0), d64(2.0, 2.0, 2.0), alpha=0.2)
    torch.testing.assert_close(k, torch.tensor([0.4984072, 1.0, 1.1680947]))
    with pytest.raises(ValueError, match="M >= 2"):
        agm.agm_coefficients(d64(1.0), d64(1.0), alpha=0.2)


def test_running_mean_over_global_iterations():
    # line 154: r (it - 1) / it + s / it. it = 1 from r = 0: s; it = 2: (2 + 4) / 2, (4 + 0) / 2
    r = agm.running_mean_update(d64(0.0, 0.0), d64(2.0, 4.0), 1)
    torch.testing.assert_close(r, d64(2.0, 4.0))
    r = agm.running_mean_update(r, d64(4.0, 0.0), 2)
    torch.testing.assert_close(r, d64(3.0, 2.0))


def test_clip_only_when_the_heads_gradient_leaves_the_unit_box():
    # lines 234-238, clip_grad_norm_(max_norm=1): factor min(1, 1 / (norm + 1e-6))
    assert agm.clip_scale(torch.tensor(0.5), torch.tensor(4.0)).item() == 1.0
    assert agm.clip_scale(torch.tensor(2.0), torch.tensor(4.0)).item() == pytest.approx(
        1 / (4 + 1e-6)
    )
    assert agm.clip_scale(torch.tensor(2.0), torch.tensor(0.5)).item() == 1.0


def test_clip_at_exactly_the_threshold_does_not_fire_and_other_bounds_apply():
    # `grad_max > 1 or grad_min < -1`: an entry of exactly +-1 stays inside the box
    assert agm.clip_scale(torch.tensor(1.0), torch.tensor(4.0)).item() == 1.0
    # threshold 0.1, max_norm 2: fires at 0.5; factor 2 / (8 + 1e-6)
    scale = agm.clip_scale(torch.tensor(0.5), torch.tensor(8.0), threshold=0.1, max_norm=2.0)
    assert scale.item() == pytest.approx(0.25 / (1 + 1.25e-7))


def hand_model() -> tuple[torch.nn.Parameter, torch.nn.Linear]:
    """An encoder parameter with gradient (3, 4) and a 1 x 2 head with weight gradient
    (0.5, -2) and bias gradient 0: ||g|| = sqrt(9 + 16 + 0.25 + 4) = 5.408326913."""
    enc = torch.nn.Parameter(torch.zeros(2))
    enc.grad = torch.tensor([3.0, 4.0])
    head = torch.nn.Linear(2, 1)
    head.weight.grad = torch.tensor([[0.5, -2.0]])
    head.bias.grad = torch.tensor([0.0])
    return enc, head


def test_the_plain_reference_clips_the_whole_model_when_the_head_leaves_the_box():
    enc, head = hand_model()
    params = [enc, *head.parameters()]
    factor = agm.clip_reference(params, head.weight, threshold=1.0, max_norm=1.0)
    assert factor == pytest.approx(0.18490003122)  # 1 / (5.408326913 + 1e-6)
    torch.testing.assert_close(enc.grad, torch.tensor([0.5547000937, 0.7396001249]))
    torch.testing.assert_close(head.weight.grad, torch.tensor([[0.0924500156, -0.3698000624]]))
    assert agm.clip_scale(torch.tensor(2.0), torch.tensor(5.408326913)).item() == pytest.approx(
        factor
    )


def test_the_plain_reference_leaves_gradients_inside_the_box_alone():
    enc, head = hand_model()
    head.weight.grad = torch.tensor([[0.5, -1.0]])  # min == -1: not beyond
    assert agm.clip_reference([enc, *head.parameters()], head.weight, 1.0, 1.0) == 1.0
    torch.testing.assert_close(enc.grad, torch.tensor([3.0, 4.0]))
