"""Regulator decisions, metrics and traces against inforeg.functional and METHOD.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from inforeg import functional as Fn
from inforeg.config import RegulatorConfig
from inforeg.functional.ogm import official_coefficients
from inforeg.groups import ModalityGroups
from inforeg.kernels import ParamGradients
from inforeg.regulators import Event, build_regulator
from tests.inforeg.regulators.loop import make_run, train
from tests.inforeg.tiny import tiny_batch, tiny_model


def test_event_names_are_the_regulator_methods():
    run = make_run(RegulatorConfig(name="joint"))
    for event in Event:
        assert callable(getattr(run.regulator, event.value))


def test_scores_and_decisions_logged_as_device_tensors():
    run = make_run(RegulatorConfig(schedule="always"))
    reg, model = run.regulator, run.model
    reg.on_epoch_start(0)
    data = tiny_batch(model, 6, seed=1)
    out = model(data)
    loss = reg.loss(out, data["label"])
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, data["label"]))
    metrics = reg.step_metrics()
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values())
    uni = Fn.unimodal_logits(out.features, model.head)
    scores = Fn.modality_scores(uni, data["label"], "nll")
    gaps = Fn.score_gaps(scores)
    alpha = Fn.regulation_alpha(gaps, 0.9)
    for m in ("audio", "video"):
        torch.testing.assert_close(metrics[f"score.{m}"], scores[m])
        torch.testing.assert_close(metrics[f"gap.{m}"], gaps[m])
        torch.testing.assert_close(metrics[f"alpha.{m}"], alpha[m])
        assert metrics[f"regulated.{m}"].item() == float(gaps[m].item() > 0)


def test_inforeg_star_adds_the_unimodal_losses():
    run = make_run(RegulatorConfig(unimodal_loss=True))
    reg, model = run.regulator, run.model
    reg.on_epoch_start(0)
    data = tiny_batch(model, 6, seed=2)
    out = model(data)
    uni = Fn.unimodal_logits(out.features, model.head)
    expected = F.cross_entropy(out.logits, data["label"]) + sum(
        F.cross_entropy(z, data["label"]) for z in uni.values()
    )
    torch.testing.assert_close(reg.loss(out, data["label"]), expected)


@pytest.mark.parametrize("schedule", ["window", "always", "outside"])
def test_pull_is_applied_where_the_schedule_and_gap_allow(schedule):
    run = make_run(RegulatorConfig(schedule=schedule))
    train(run, epochs=1, steps=3, record_grads=True)  # epoch 0: the window is closed
    reg = run.regulator
    # replay the last step by hand: the regulated gradient must be g + alpha (w - anchor)
    reg.on_epoch_start(1)
    data = tiny_batch(run.model, 6, seed=5)
    loss = reg.loss(run.model(data), data["label"])
    run.optimizer.zero_grad(set_to_none=False)
    loss.backward()
    params = reg.groups.parameters()
    before = [p.grad.clone() for p in params]
    reg.on_gradients()
    metrics = reg.step_metrics()
    (anchors,) = reg.state_dict()["anchors"]  # contiguous view: one flat anchor
    flat_anchor = anchors[0]
    offset = 0
    for info, p, g in zip(reg.groups.params, params, before, strict=True):
        m = info.modality
        a = flat_anchor[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        applied = metrics[f"alpha.{m}"] * metrics[f"regulated.{m}"]
        torch.testing.assert_close(p.grad, g + applied * (p.detach() - a), rtol=0, atol=1e-6)
    for m in reg.modalities:
        window_closed = not reg.windows[-1][reg.modalities.index(m)]
        allowed = {"window": not window_closed, "always": True, "outside": window_closed}
        gap_positive = metrics[f"gap.{m}"].item() > 0
        assert metrics[f"regulated.{m}"].item() == float(allowed[schedule] and gap_positive)


def test_window_decisions_from_the_trace_history():
    run = make_run(RegulatorConfig())
    reg = run.regulator
    train(run, epochs=2, steps=1)
    reg.history = {"audio": [1.0, 2.0], "video": [2.0, 1.0]}  # audio rising, video falling
    reg.on_epoch_start(2)
    assert reg.windows[-1] == [True, False]
    reg.epoch = None
    reg.windows.pop()
    reg.history = {"audio": [1.0, 0.0], "video": [1.0, float("nan")]}
    reg.on_epoch_start(2)
    assert reg.windows[-1] == [False, False]

    official = make_run(RegulatorConfig(variant="official")).regulator
    official.on_epoch_start(0)
    assert official.windows[-1] == [True, True]  # the code regulates from epoch 0
    official.epoch = None
    official.history = {"audio": [0.0], "video": [5.0]}  # only the first modality's trace counts
    official.on_epoch_start(1)
    assert official.windows[-1] == [False, False]


def test_three_modalities_weakest_never_regulated():
    run = make_run(RegulatorConfig(schedule="always"), modalities=3)
    train(run, epochs=1, steps=4)
    for step in run.metrics:
        scores = torch.tensor([step[f"score.{m}"] for m in ("audio", "video", "text")])
        gaps = Fn.score_gaps(scores)
        weakest = int(torch.argmin(scores))
        assert step[f"regulated.{('audio', 'video', 'text')[weakest]}"] == 0.0
        for i, m in enumerate(("audio", "video", "text")):
            assert step[f"gap.{m}"] == pytest.approx(gaps[i].item(), abs=1e-6)
            expect = math.exp(0.9 * math.tanh(gaps[i].item())) if gaps[i] > 0 else 0.0
            assert step[f"alpha.{m}"] == pytest.approx(expect, rel=1e-6)
            assert step[f"regulated.{m}"] == float(gaps[i] > 0)


def test_paper_trace_is_the_mean_squared_gradient_norm_before_regulation():
    run = make_run(RegulatorConfig(schedule="always"))
    train(run, epochs=1, steps=3, record_grads=True)
    infos = run.regulator.groups.params
    for m in ("audio", "video"):
        per_step = [
            sum(float((g.double() ** 2).sum()) for g, i in zip(grads, infos, strict=True)
                if i.modality == m)
            for grads in run.grads_before
        ]  # fmt: skip
        assert run.regulator.history[m][0] == pytest.approx(sum(per_step) / 3, rel=1e-5)
    assert set(run.regulator.epoch_metrics()) == {
        "trace.audio", "trace.video", "window_open.audio", "window_open.video"
    }  # fmt: skip


def test_official_trace_sums_per_tensor_means_of_regulated_conv_and_linear_weights():
    run = make_run(RegulatorConfig(variant="official"))
    reg = run.regulator
    reg.on_epoch_start(0)
    expected = {"audio": 0.0, "video": 0.0}
    for step in range(2):
        data = tiny_batch(run.model, 6, seed=step)
        loss = reg.loss(run.model(data), data["label"])
        run.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        reg.on_gradients()
        for info, p in reg.groups:
            if info.kind in ("conv_weight", "linear_weight"):
                expected[info.modality] += float((p.grad.double() ** 2).mean())
        run.optimizer.step()
    reg.on_epoch_end(0)
    for m, value in expected.items():
        assert reg.history[m][0] == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize(
    ("name", "variant"), [("ogm", None), ("ogm_ge", None), ("ogm_ge", "paper")]
)
def test_ogm_scales_the_dominant_and_ge_noises_every_encoder_by_default(name, variant):
    """ogm: the dominant conv weights scaled by k, no noise. ogm_ge (official code, the
    default): every encoder's conv weights get N(0, std(g)^2), the weak one at k = 1 too;
    variant paper: the dominant encoder's only."""
    run = make_run(RegulatorConfig(name=name, variant=variant))
    reg = run.regulator
    reg.on_epoch_start(0)
    data = tiny_batch(run.model, 6, seed=3)
    loss = reg.loss(run.model(data), data["label"])
    loss.backward()
    before = [p.grad.clone() for p in reg.groups.parameters()]
    reg.on_gradients()
    metrics = reg.step_metrics()
    scores = torch.stack([metrics["score.audio"], metrics["score.video"]])
    k, _ = official_coefficients(scores, 0.8)  # the project's M-modality rule at M = 2
    torch.testing.assert_close(k, Fn.ogm_coefficients(scores, 0.8))
    dominant = int(torch.argmax(scores))
    for i, (info, p) in enumerate(reg.groups):
        scaled = before[i] * (k[info.modality_index] if info.is_conv_weight else 1.0)
        noisy = (
            info.is_conv_weight
            and name == "ogm_ge"
            and (variant != "paper" or info.modality_index == dominant)
        )
        if noisy:
            noise = p.grad - scaled
            assert noise.abs().max() > 0
            if p.numel() > 1000:
                std = before[i].std().item() + 1e-8
                assert noise.std().item() == pytest.approx(std, rel=0.1)
        else:
            torch.testing.assert_close(p.grad, scaled, rtol=0, atol=1e-7)
    assert metrics[f"coeff.{reg.modalities[dominant]}"].item() == pytest.approx(k[dominant].item())
    for i, m in enumerate(reg.modalities):
        assert metrics[f"regulated.{m}"].item() == float(i == dominant)
        if name == "ogm_ge":
            assert metrics[f"noise.{m}"].item() == float(variant != "paper" or i == dominant)
    assert reg.audit_step({"step": 0, "epoch": 0, **metrics}, reg.modalities, reg.cfg, {
        m: False for m in reg.modalities}) == []  # fmt: skip


def test_ogm_outside_the_modulation_epochs_changes_nothing():
    run = make_run(RegulatorConfig(name="ogm_ge", modulation_starts=1, modulation_ends=1))
    reg = run.regulator
    reg.on_epoch_start(0)
    data = tiny_batch(run.model, 6, seed=3)
    reg.loss(run.model(data), data["label"]).backward()
    before = [p.grad.clone() for p in reg.groups.parameters()]
    reg.on_gradients()
    for g, p in zip(before, reg.groups.parameters(), strict=True):
        assert torch.equal(g, p.grad)
    assert all(v.item() == 0 for k, v in reg.step_metrics().items() if k.startswith("regulated"))


def test_events_out_of_order_are_errors():
    run = make_run(RegulatorConfig())
    reg = run.regulator
    data = tiny_batch(run.model, 4, seed=0)
    with pytest.raises(ValueError, match="before on_epoch_start"):
        reg.loss(run.model(data), data["label"])
    with pytest.raises(ValueError, match="in order from 0"):
        reg.on_epoch_start(3)
    reg.on_epoch_start(0)
    with pytest.raises(ValueError, match="before loss"):
        reg.on_gradients()
    with pytest.raises(ValueError, match="before epoch 0 ended"):
        reg.on_epoch_start(1)
    with pytest.raises(ValueError, match="running epoch is 0"):
        reg.on_epoch_end(1)
    other = make_run(RegulatorConfig(name="joint")).regulator
    with pytest.raises(ValueError, match="name='inforeg'"):
        other.load_state_dict(reg.state_dict())


def test_build_regulator_checks_its_views():
    model = tiny_model()
    groups = ModalityGroups.from_model(model)
    foreign = ParamGradients(ModalityGroups.from_model(tiny_model()))
    with pytest.raises(ValueError, match="regulator's groups"):
        build_regulator(RegulatorConfig(), groups, foreign, model.head)
    with pytest.raises(ValueError, match="at least one gradient view"):
        build_regulator(RegulatorConfig(), groups, [], model.head)
    single = tiny_model(modalities=1)
    g1 = ModalityGroups.from_model(single)
    with pytest.raises(ValueError, match="two modalities"):
        build_regulator(RegulatorConfig(name="ogm_ge"), g1, ParamGradients(g1), single.head)
