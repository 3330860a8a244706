"""inforeg.functional.ogm against values worked by hand from GeWu-Lab/OGM-GE_CVPR2022 @ 343dc1d
(main.py) and GeWu-Lab/BalanceBenchmark @ 4c1482f (balancemm/trainer/OGM_trainer.py)."""

import math

import pytest
import torch

from inforeg.functional import ogm


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_audio_dominant_is_slowed_video_keeps_one():
    # main.py 108-124: ratio_v = 5 / 10 = 0.5 <= 1, so coeff_a = 1 - tanh(0.8 * 2) = 1 - 0.9216686
    k, rho = ogm.official_coefficients(t(10.0, 5.0), alpha=0.8)
    torch.testing.assert_close(k, t(0.0783314, 1.0))
    torch.testing.assert_close(rho, t(2.0, 0.5))


def test_video_dominant_when_its_ratio_exceeds_one():
    # ratio_v = 8 / 2 = 4 > 1: coeff_v = 1 - tanh(3.2) = 1 - 0.9966824, coeff_a = 1
    k, _ = ogm.official_coefficients(t(2.0, 8.0), alpha=0.8)
    torch.testing.assert_close(k, t(1.0, 0.0033176))


def test_a_tie_modulates_audio_as_the_code_does():
    # ratio_v = 1 is not > 1 (line 119): the else branch, coeff_a = 1 - tanh(0.8 * 1) = 0.3359632
    k, _ = ogm.official_coefficients(t(3.0, 3.0), alpha=0.8)
    torch.testing.assert_close(k, t(0.3359632, 1.0))


def test_coefficients_from_head_slice_logits():
    # audio: softmax([0, ln 3]) = [1/4, 3/4] for both samples, labels (1, 0): S_a = 3/4 + 1/4 = 1
    # video: softmax([0, ln 7]) = [1/8, 7/8], labels (1, 1): S_v = 7/4 (lines 105-106)
    # ratio_v = 1.75 > 1: coeff_v = 1 - tanh(0.8 * 1.75) = 1 - tanh(1.4) = 1 - 0.8853516
    za = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    zv = torch.tensor([[0.0, math.log(7.0)], [0.0, math.log(7.0)]])
    labels = torch.tensor([1, 0])
    labels_v = torch.tensor([1, 1])
    sa = ogm.ogm_score_sums([za], labels)
    sv = ogm.ogm_score_sums({"video": zv}, labels_v)
    torch.testing.assert_close(torch.cat([sa, sv]), t(1.0, 1.75))
    k, _ = ogm.official_coefficients(torch.cat([sa, sv]), alpha=0.8)
    torch.testing.assert_close(k, t(1.0, 0.1146484))


def test_ogm_is_defined_for_two_modalities():
    with pytest.raises(ValueError, match="two modalities"):
        ogm.official_coefficients(t(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="alpha"):
        ogm.official_coefficients(t(1.0, 2.0), alpha=0.0)


def test_a_zero_score_gives_the_other_modality_k_zero():
    # S_a = 0: ratio_v = inf > 1, coeff_v = 1 - tanh(inf) = 0 (the code divides the same way)
    k, _ = ogm.official_coefficients(t(0.0, 2.0))
    torch.testing.assert_close(k, t(1.0, 0.0))


def test_balancebenchmark_three_modalities_ratio_to_the_weakest():
    # OGM_trainer.py 136-151: rho_m = S_m / (min S + 1e-5) = (6, 2, 4) / 2.00001;
    # k = max(1 - tanh(0.5 rho), 0) where rho > 1: tanh(1.4999925) = 0.9051469, tanh(0.99999500)
    # = 0.7615920; the weakest has rho = 0.999995 <= 1 and keeps 1
    k = ogm.balancebenchmark_coefficients(t(6.0, 2.0, 4.0), alpha=0.5)
    torch.testing.assert_close(k, t(0.0948531, 1.0, 0.2384080))
    # two: rho = (2 / 1.00001, 1 / 2.00001) -> (1 - tanh(0.99999000), 1), tanh = 0.7615900
    k = ogm.balancebenchmark_coefficients(t(2.0, 1.0), alpha=0.5)
    torch.testing.assert_close(k, t(0.2384100, 1.0))
    with pytest.raises(ValueError, match="2 or 3 modalities"):
        ogm.balancebenchmark_coefficients(t(1.0, 2.0, 3.0, 4.0), alpha=0.5)


def test_ge_noise_on_every_encoders_conv_weights_by_default():
    # main.py 136-148: every 4-D weight of audio AND visual gets noise, k = 1 or not
    conv = torch.tensor([True, True, False, True])
    modality = torch.tensor([0, 1, 1, 0])
    dominant = torch.tensor([False, True])
    every = ogm.ge_noise_targets(conv, modality, dominant)
    assert every.tolist() == [True, True, False, True]
    only = ogm.ge_noise_targets(conv, modality, dominant, "dominant")
    assert only.tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="noise target"):
        ogm.ge_noise_targets(conv, modality, dominant, "weak")
    with pytest.raises(ValueError, match="same"):
        ogm.ge_noise_targets(conv, modality[:3], dominant)


def test_ge_noise_std_is_the_unbiased_std_plus_1e8():
    # g = (1, 2, 3, 4): sum 10, sum g^2 30, n 4 -> var = (30 - 100 / 4) / 3 = 5 / 3 (torch.std)
    g = t(1.0, 2.0, 3.0, 4.0)
    total = torch.tensor([g.sum(), 5.0], dtype=torch.float64)
    total_sq = torch.tensor([(g * g).sum(), 25.0], dtype=torch.float64)
    count = torch.tensor([4, 1])
    std = ogm.ge_noise_std(total, total_sq, count, torch.tensor([True, False]))
    torch.testing.assert_close(std, t(math.sqrt(5 / 3) + 1e-8, 0.0))
    assert std[0].item() == pytest.approx(g.std().item() + 1e-8, rel=1e-6)
