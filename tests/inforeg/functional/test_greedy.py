"""inforeg.functional.greedy against values worked by hand from nyukat/greedy_multimodal_learning
@ a190e03 (src/callbacks.py Bias_Mitigation_Strong, src/balanced_mmtm.py MMTM_mitigate)."""

import math

import pytest
import torch

from inforeg.functional import greedy
from inforeg.functional.greedy import GreedyState


def d64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def terms(main_a: float, main_v: float, bypass_a: float, bypass_v: float) -> torch.Tensor:
    """Speed terms with every weight norm 1, so each term is its g^2 sum."""
    one = d64(1.0, 1.0)
    return greedy.speed_terms(d64(main_a, main_v), one, d64(bypass_a, bypass_v), one)


def test_speed_terms_and_the_bias_gap():
    # callbacks.py 225-233: gn / wn per branch. main: (4 / 2, 1 / 4) = (2, 0.25);
    # bypass: (1 / 10, 3 / 3) = (0.1, 1). BDR = (log10(0.1 / 2), log10(1 / 0.25))
    # = (-1.3010300, 0.6020600); d = BDR_0 - BDR_1 = -1.9030900
    s = greedy.speed_terms(d64(4.0, 1.0), d64(2.0, 4.0), d64(1.0, 3.0), d64(10.0, 3.0))
    torch.testing.assert_close(s, d64(0.1, 1.0, 2.0, 0.25).reshape(2, 2))
    torch.testing.assert_close(greedy.branch_bias(s), d64(-1.3010300, 0.6020600))
    assert greedy.bias_gap(s).item() == pytest.approx(-1.9030900, abs=1e-7)


def test_locked_epochs_accumulate_and_never_curate():
    # callbacks.py 260-263: before starting_epoch, compute_BDR (accumulate) and curation off
    state = GreedyState.initial()
    state, d = greedy.greedy_step(state, terms(1.0, 1.0, 100.0, 1.0), unlocked=False)
    assert not state.curation.item() and state.caring.item() == 0
    torch.testing.assert_close(state.speeds, d64(100.0, 1.0, 1.0, 1.0).reshape(2, 2))
    assert d.item() == pytest.approx(2.0)  # log10(100) - log10(1)


def test_a_window_of_five_steps_then_accumulation_resumes():
    state = GreedyState.initial()
    # unlocked step: speeds bypass (10, 1), main (1, 1): d = log10(10) - 0 = 1 > 0.01, so
    # a window starts caring for modality 0 (lines 244-252: sign(d) = 1 -> caring 0)
    state, d = greedy.greedy_step(state, terms(1.0, 1.0, 10.0, 1.0), unlocked=True)
    assert d.item() == pytest.approx(1.0)
    assert state.curation.item() and state.caring.item() == 0 and state.step.item() == 0
    frozen = state.speeds.clone()
    for k in range(1, 6):  # lines 256-259: five curated steps, nothing accumulates
        state, d = greedy.greedy_step(state, terms(5.0, 5.0, 5.0, 5.0), unlocked=True)
        assert state.step.item() == k and state.caring.item() == 0
        assert state.curation.item() == (k < 5)
        torch.testing.assert_close(state.speeds, frozen)
        assert d.item() == pytest.approx(1.0)
    # accumulating again: bypass (10 + 1, 1 + 1), main (1 + 1, 1 + 10):
    # d = log10(11 / 2) - log10(2 / 11) = 2 log10(5.5) = 1.4806975 -> a new window on modality 0
    state, d = greedy.greedy_step(state, terms(1.0, 10.0, 1.0, 1.0), unlocked=True)
    assert d.item() == pytest.approx(2 * math.log10(5.5))
    assert state.curation.item() and state.step.item() == 0


def test_negative_gap_cares_for_modality_one_and_small_gap_does_nothing():
    state = GreedyState.initial()
    # bypass (1, 1), main (1, 1.01): d = 0 - log10(1 / 1.01) = 0.0043214 <= 0.01: no window
    state, d = greedy.greedy_step(state, terms(1.0, 1.01, 1.0, 1.0), unlocked=True)
    assert d.item() == pytest.approx(math.log10(1.01))
    assert not state.curation.item() and state.caring.item() == 0
    # + bypass (1, 100): bypass (2, 101), main (2, 2.01): d = log10(1) - log10(101 / 2.01)
    # = -1.7011297 < -0.01: caring 1 (lines 249-250)
    state, d = greedy.greedy_step(state, terms(1.0, 1.0, 1.0, 100.0), unlocked=True)
    assert d.item() == pytest.approx(-math.log10(101 / 2.01))
    assert state.curation.item() and state.caring.item() == 1


def test_cut_gate_replaces_only_the_cared_modalitys_gate():
    # balanced_mmtm.py 136-152: the cared modality's gate is its running average, stacked over B
    gate = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    running = torch.tensor([0.9, 0.8, 0.7])
    state = GreedyState.initial()
    state = GreedyState(state.speeds, torch.tensor(True), torch.tensor(1), state.step)
    torch.testing.assert_close(greedy.cut_gate(gate, running, 1, state), running.expand(2, 3))
    torch.testing.assert_close(greedy.cut_gate(gate, running, 0, state), gate)
    off = GreedyState.initial()
    torch.testing.assert_close(greedy.cut_gate(gate, running, 1, off), gate)


def test_conditional_utilization_rate():
    # (A - A_cut) / A: (0.8 - 0.6) / 0.8 = 0.25; (0.5 - 0.5) / 0.5 = 0
    u = greedy.conditional_utilization(torch.tensor([0.8, 0.5]), torch.tensor([0.6, 0.5]))
    torch.testing.assert_close(u, torch.tensor([0.25, 0.0]))
    with pytest.raises(ValueError, match="differ"):
        greedy.conditional_utilization(torch.ones(2), torch.ones(3))


def test_greedy_is_defined_for_two_modalities():
    with pytest.raises(ValueError, match="two modalities"):
        GreedyState.initial(3)
    three = GreedyState(
        torch.zeros(2, 3, dtype=torch.float64),
        torch.tensor(False),
        torch.tensor(0),
        torch.tensor(0),
    )
    with pytest.raises(ValueError, match="two modalities"):
        greedy.greedy_step(three, torch.zeros(2, 3, dtype=torch.float64), unlocked=True)
    with pytest.raises(ValueError, match="window"):
        greedy.greedy_step(GreedyState.initial(), terms(1, 1, 1, 1), unlocked=True, window=0)
    with pytest.raises(ValueError, match="equal shape"):
        greedy.speed_terms(d64(1.0), d64(1.0, 1.0), d64(1.0), d64(1.0))


def test_mmtm_gates_and_their_running_average():
    # balanced_mmtm.py 93-111: squeeze = channel means; branch 0 map (1, 1, 2, 2) of mean 2,
    # branch 1 map (1, 1, 2, 2) of mean -1 -> s = (2, -1); relu(W_sq s + b) with W_sq = [[1, 1]],
    # b = 0 -> e = relu(1) = 1; gates sigmoid(w_m e + b_m): sigmoid(2 - 2) = 0.5, sigmoid(0 + ln 3)
    # = 0.75
    x0 = torch.full((1, 1, 2, 2), 2.0)
    x1 = torch.tensor([[[[-2.0, 0.0], [-1.0, -1.0]]]])
    squeeze = (torch.tensor([[1.0, 1.0]]), torch.zeros(1))
    excite = [
        (torch.tensor([[2.0]]), torch.tensor([-2.0])),
        (torch.tensor([[0.0]]), torch.tensor([math.log(3.0)])),
    ]
    g0, g1 = greedy.mmtm_gates([x0, x1], squeeze, excite)
    torch.testing.assert_close(g0, torch.tensor([[0.5]]))
    torch.testing.assert_close(g1, torch.tensor([[0.75]]))
    # lines 113-116: (mean_b gate + avg * step) / (step + 1): (0.5 + 0.9 * 3) / 4 = 0.8
    avg = greedy.running_gate(torch.tensor([0.9]), torch.tensor([[0.4], [0.6]]), 3)
    torch.testing.assert_close(avg, torch.tensor([0.8]))
    with pytest.raises(ValueError, match="excitation"):
        greedy.mmtm_gates([x0, x1], squeeze, excite[:1])
