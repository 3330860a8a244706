"""inforeg.functional against values computed by hand from METHOD.md."""

import math

import pytest
import torch
from torch import nn

from inforeg import functional as Fn


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_unimodal_logits_are_the_heads_slices_with_a_share_of_the_bias():
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 2.0]]))
        head.bias.copy_(t(0.2, 0.4))
    features = {"audio": torch.tensor([[1.0, 2.0]]), "video": torch.tensor([[3.0]])}
    z = Fn.unimodal_logits(features, head)
    # audio: [1*1 + 2*0, 1*0 + 2*1] + b/2; video: [3*1, 3*2] + b/2
    torch.testing.assert_close(z["audio"], torch.tensor([[1.1, 2.2]]))
    torch.testing.assert_close(z["video"], torch.tensor([[3.1, 6.2]]))
    full = head(torch.cat(list(features.values()), dim=1))
    torch.testing.assert_close(z["audio"] + z["video"], full)  # the slices add up to the head
    with pytest.raises(ValueError, match="sum to 4"):
        Fn.unimodal_logits({"audio": torch.ones(1, 4)}, head)


def test_scores_of_each_kind():
    # softmax([0, ln 3]) = [1/4, 3/4]; labels 1 then 0: true-class probabilities 3/4 and 1/4
    z = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    labels = torch.tensor([1, 0])
    nll = Fn.modality_scores({"a": z}, labels, "nll")["a"]
    assert nll.item() == pytest.approx((math.log(0.75) + math.log(0.25)) / 2, rel=1e-6)
    assert Fn.modality_scores({"a": z}, labels, "prob_sum")["a"].item() == pytest.approx(1.0)
    assert Fn.modality_scores({"a": z}, labels, "prob_mean")["a"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="score kind"):
        Fn.modality_scores({"a": z}, labels, "acc")


def test_scores_from_sums_combine_ranks_like_one_batch():
    gen = torch.Generator().manual_seed(0)
    z = {"a": torch.randn(8, 4, generator=gen), "v": torch.randn(8, 4, generator=gen)}
    labels = torch.randint(0, 4, (8,), generator=gen)
    for kind in Fn.SCORE_KINDS:
        whole = torch.stack(list(Fn.modality_scores(z, labels, kind).values()))
        halves = [
            Fn.score_sums({m: v[s] for m, v in z.items()}, labels[s], kind)
            for s in (slice(0, 3), slice(3, 8))
        ]
        torch.testing.assert_close(Fn.scores_from_sums(halves[0] + halves[1], 8, kind), whole)


def test_gaps_two_and_three_modalities():
    gaps = Fn.score_gaps({"a": t(3.0)[0], "v": t(1.0)[0]})
    assert (gaps["a"].item(), gaps["v"].item()) == (2.0, 0.0)
    # strongest: mean(3-1, 3-2) = 1.5; middle: 2-1 = 1; weakest: 0
    torch.testing.assert_close(Fn.score_gaps(t(3.0, 1.0, 2.0)), t(1.5, 0.0, 1.0))


def test_gaps_ties_and_nan():
    torch.testing.assert_close(Fn.score_gaps(t(2.0, 2.0)), t(0.0, 0.0))
    # a tie at the top: each compares only with the strictly weaker modality
    torch.testing.assert_close(Fn.score_gaps(t(3.0, 3.0, 1.0)), t(2.0, 2.0, 0.0))
    # a NaN score is never above or below anything
    torch.testing.assert_close(Fn.score_gaps(t(float("nan"), 1.0)), t(0.0, 0.0))
    torch.testing.assert_close(Fn.score_gaps(t(float("nan"), 1.0, 3.0)), t(0.0, 0.0, 2.0))


def test_regulation_alpha_eq16():
    alpha = Fn.regulation_alpha(t(2.0, 0.0, -1.0), beta=0.9)
    torch.testing.assert_close(alpha, t(math.exp(0.9 * math.tanh(2.0)), 0.0, 0.0))
    named = Fn.regulation_alpha({"a": t(0.5)[0]}, beta=0.5)
    assert named["a"].item() == pytest.approx(math.exp(0.5 * math.tanh(0.5)))


def test_official_alpha_first_modality_plays_audio():
    alpha = Fn.official_alpha(t(0.3, 0.0))
    torch.testing.assert_close(alpha, t(0.95 * math.exp(math.tanh(0.3)), 0.0))
    alpha = Fn.official_alpha(t(0.0, 0.7, 0.2), lead_coef=0.95, other_coef=0.1)
    torch.testing.assert_close(
        alpha, t(0.0, 0.1 * math.exp(math.tanh(0.7)), 0.1 * math.exp(math.tanh(0.2)))
    )


def test_window_open_eq11():
    assert not Fn.window_open([], 0) and not Fn.window_open([5.0], 1)  # epoch < 2
    assert Fn.window_open([1.0, 2.0], 2)  # (2 - 1) / 2 = 0.5 > 0.04
    assert not Fn.window_open([2.0, 1.0], 2)  # decreasing
    assert not Fn.window_open([1.0, 1.04], 2)  # 0.04 / 1.04 = 0.038
    assert Fn.window_open([1.0, 1.05], 2)  # 0.05 / 1.05 = 0.048
    assert not Fn.window_open([1.0, 1.05], 2, threshold=0.05)
    # only the last two epochs before `epoch` count
    assert Fn.window_open([9.0, 1.0, 2.0], 3) and not Fn.window_open([1.0, 2.0, 1.0], 3)


def test_window_open_zero_and_nan_traces():
    assert not Fn.window_open([1.0, 0.0], 2)  # no information
    assert not Fn.window_open([0.0, 0.0], 2)
    assert not Fn.window_open([1.0, float("nan")], 2)
    assert not Fn.window_open([float("nan"), 1.0], 2)
    assert not Fn.window_open([1.0, float("inf")], 2)
    with pytest.raises(ValueError, match="needs 2 traces"):
        Fn.window_open([1.0], 2)


def test_official_window_moving_averages():
    assert Fn.official_window_open([], 0)  # the code's k = 1 at epoch 0
    # epoch 1: mean of the last ten [0]*9 + [5] = 0.5, of the ten before 0: k = 1
    assert Fn.official_window_open([5.0], 1)
    assert Fn.official_window_open([5.0, 5.0], 2)  # k = (1.0 - 0.5) / 1.0
    assert not Fn.official_window_open([1.0] * 12, 12)  # flat: k = 0
    assert not Fn.official_window_open([0.0], 1)  # the code would divide by zero
    assert not Fn.official_window_open([float("nan")], 1)
    # k = (mean of [1]*9+[1.5] - mean of [1]*10) / 1.05 = 0.05 / 1.05 = 0.0476 < 0.05
    assert not Fn.official_window_open([1.0] * 11 + [1.5], 12)
    assert Fn.official_window_open([1.0] * 11 + [1.6], 12)


def test_traces():
    assert Fn.paper_trace(12.0, 4) == 3.0 and Fn.official_trace(12.0, 4) == 12.0
    assert math.isnan(Fn.paper_trace(0.0, 0)) and math.isnan(Fn.official_trace(0.0, 0))


def test_ogm_coefficients_match_the_two_modality_code():
    # S_a = 10, S_v = 5: ratio_v = 0.5 <= 1, so audio is modulated with ratio_a = 2
    k = Fn.ogm_coefficients(t(10.0, 5.0), alpha=0.8)
    torch.testing.assert_close(k, t(1 - math.tanh(1.6), 1.0))
    k = Fn.ogm_coefficients(t(2.0, 8.0), alpha=0.8)  # ratio_v = 4 > 1: video modulated
    torch.testing.assert_close(k, t(1.0, 1 - math.tanh(3.2)))
    k = Fn.ogm_coefficients(t(3.0, 3.0), alpha=0.8)  # tie: the code modulates audio (rho = 1)
    torch.testing.assert_close(k, t(1 - math.tanh(0.8), 1.0))
    # three: rho = 6 / mean(2, 4) = 2 for the dominant one
    k = Fn.ogm_coefficients(t(6.0, 2.0, 4.0), alpha=0.8)
    torch.testing.assert_close(k, t(1 - math.tanh(1.6), 1.0, 1.0))
    torch.testing.assert_close(Fn.ogm_ratios(t(6.0, 2.0, 4.0)), t(2.0, 0.4, 1.0))
    with pytest.raises(ValueError, match="two modalities"):
        Fn.ogm_coefficients(t(1.0))


def test_std_from_moments_is_the_unbiased_std():
    x = t(1.0, 2.0, 3.0, 4.0)
    std = Fn.std_from_moments(x.sum()[None], (x * x).sum()[None], torch.tensor([4]))
    assert std.item() == pytest.approx(math.sqrt(5 / 3)) == pytest.approx(x.std().item())
