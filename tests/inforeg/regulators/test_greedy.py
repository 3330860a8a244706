"""Greedy's regulator on a hand-worked case: weights and gradients set to constants, so each
branch's conditional learning speed and the decision follow by hand (docs/methods.md)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from inforeg import functional as Fn
from inforeg.config import RegulatorConfig
from inforeg.groups import ModalityGroups
from inforeg.kernels import ParamGradients
from inforeg.model import MultimodalModel
from inforeg.regulators import GreedyRegulator, build_regulator
from tests.inforeg.tiny import tiny_batch, tiny_model


def make(**fields: object) -> tuple[MultimodalModel, GreedyRegulator]:
    model = tiny_model(fusion="mmtm")
    groups = ModalityGroups.from_model(model)
    cfg = RegulatorConfig(name="greedy", **fields)  # type: ignore[arg-type]
    reg = build_regulator(cfg, groups, ParamGradients(groups, contiguous=True), model.head)
    assert isinstance(reg, GreedyRegulator)
    return model, reg


def step(model: MultimodalModel, reg: GreedyRegulator, g: tuple[float, float, float]) -> dict:
    """One step whose gradients are, after backward, replaced by constants: audio encoder `g[0]`,
    video encoder `g[1]`, every MMTM parameter `g[2]`; every such weight is 1."""
    batch = tiny_batch(model, 4, seed=reg.step)
    out = model(batch)
    loss = reg.loss(out, batch["label"])
    uni = Fn.unimodal_logits(out.features, model.head)
    expected = sum(F.cross_entropy(z, batch["label"]) for z in uni.values())
    torch.testing.assert_close(loss, expected)  # the sum of the branch CEs, no fused term
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        parts = [*model.encoders.values(), model.bypass]
        for part, value in zip(parts, g, strict=True):
            for p in part.parameters():
                p.fill_(1.0)
                p.grad.fill_(value)  # type: ignore[union-attr]
    reg.on_gradients()
    return {k: float(v) for k, v in reg.step_metrics().items()}


def test_the_faster_main_branch_is_cared_for_during_a_five_step_window() -> None:
    model, reg = make(greedy_starting_epoch=0)
    reg.on_epoch_start(0)
    # speeds g^2 / w^2: audio main 0.01, video main 0.04, bypass 0.09 for both
    # BDR_audio = log10(9), BDR_video = log10(2.25): d = log10(4) > 0.01 -> care for audio
    first = step(model, reg, (0.1, 0.2, 0.3))
    assert first["bdr.audio"] == pytest.approx(math.log10(9), rel=1e-5)
    assert first["bdr.video"] == pytest.approx(math.log10(2.25), rel=1e-5)
    assert (first["care.audio"], first["care.video"]) == (1.0, 0.0)
    assert (first["regulated.audio"], first["cared.audio"]) == (0.0, 0.0)  # ran before it
    assert [bool(m.cut[0]) and not bool(m.cut[1]) for m in reg.mmtm] == [True] * 3
    window = [step(model, reg, (0.0, 0.5, 0.3)) for _ in range(5)]  # not accumulated inside
    assert [r["regulated.audio"] for r in window] == [1.0] * 5  # the cut forwards
    assert [r["window_step.audio"] for r in window] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [r["care.audio"] for r in window] == [1.0, 1.0, 1.0, 1.0, 0.0]  # closes after five
    assert all(r["bdr.audio"] == first["bdr.audio"] for r in window)
    assert not any(bool(m.cut.any()) for m in reg.mmtm)
    after = step(model, reg, (0.1, 0.2, 0.3))  # twice the speeds: the same biases, a new window
    assert after["regulated.audio"] == 0.0 and after["care.audio"] == 1.0
    assert after["bdr.audio"] == pytest.approx(first["bdr.audio"], rel=1e-5)


def test_the_other_direction_cares_for_video_and_a_small_gap_for_nothing() -> None:
    model, reg = make(greedy_starting_epoch=0)
    reg.on_epoch_start(0)
    r = step(model, reg, (0.2, 0.1, 0.3))  # d = log10(2.25) - log10(9) < 0
    assert (r["care.audio"], r["care.video"]) == (0.0, 1.0)
    assert [bool(m.cut[1]) and not bool(m.cut[0]) for m in reg.mmtm] == [True] * 3

    model, reg = make(greedy_starting_epoch=0, greedy_epsilon=0.7)  # |d| = 0.602 <= 0.7
    reg.on_epoch_start(0)
    r = step(model, reg, (0.1, 0.2, 0.3))
    assert (r["care.audio"], r["care.video"]) == (0.0, 0.0)


def test_before_the_starting_epoch_speeds_accumulate_and_nothing_is_cut() -> None:
    model, reg = make()  # greedy_starting_epoch 1 (the authors' 2 in 1-based epochs)
    reg.on_epoch_start(0)
    for _ in range(2):
        r = step(model, reg, (0.1, 0.2, 0.3))
        assert r["care.audio"] == r["care.video"] == 0.0
    torch.testing.assert_close(
        reg.state.speeds,
        torch.tensor([[0.18, 0.18], [0.02, 0.08]], dtype=torch.float64),
        rtol=1e-5,
        atol=0,
    )  # 2 x [bypass; main]
    reg.on_epoch_end(0)
    reg.on_epoch_start(1)
    assert step(model, reg, (0.1, 0.2, 0.3))["care.audio"] == 1.0


def test_the_schedule_masks_the_cut_but_not_the_rule() -> None:
    model, reg = make(greedy_starting_epoch=0, schedule="window")  # epoch 0: window closed
    reg.on_epoch_start(0)
    r = step(model, reg, (0.1, 0.2, 0.3))
    assert r["care.audio"] == 1.0 and not any(bool(m.cut.any()) for m in reg.mmtm)
    r = step(model, reg, (0.1, 0.2, 0.3))
    assert (r["cared.audio"], r["regulated.audio"], r["window_step.audio"]) == (1.0, 0.0, 1.0)


def test_the_audit_recomputes_care_and_window_steps_from_a_record() -> None:
    model, reg = make(greedy_starting_epoch=0)
    reg.on_epoch_start(0)
    records = [
        {"step": i, "epoch": 0, **step(model, reg, (0.1, 0.2, 0.3))} for i in range(7)
    ]  # opens a window after step 0, closes it after step 5, opens another after step 6
    cfg, mods, window = reg.cfg, reg.modalities, {"audio": False, "video": False}
    for r in records:
        assert GreedyRegulator.audit_step(r, mods, cfg, window) == [], r
    for r, key in [
        (records[0], "care.audio"),
        (records[3], "care.audio"),
        (records[5], "care.audio"),
    ]:
        bad = {**r, key: 1.0 - r[key]}
        assert any(key in p for p in GreedyRegulator.audit_step(bad, mods, cfg, window))
    bad = {**records[2], "window_step.audio": 7.0}  # past the window's five steps
    assert GreedyRegulator.audit_step(bad, mods, cfg, window) != []
    late = make(greedy_starting_epoch=3)[1].cfg  # before the starting epoch nothing is cared for
    assert GreedyRegulator.audit_step(records[0], mods, late, window) != []
