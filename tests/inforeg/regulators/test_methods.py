"""The paper's comparison methods as regulators: each one's decision audited from its own step
records (`Regulator.audit_step`), the Table 4 schedules, modality counts, and the gradient
rules against their slow twins in inforeg.functional."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inforeg import functional as Fn
from inforeg.config import RegulatorConfig
from inforeg.functional.agm import agm_score_sums, mono_logits, shapley_matrix
from inforeg.functional.mmpareto import mmpareto_reference
from inforeg.groups import ModalityGroups
from inforeg.kernels import ParamGradients
from inforeg.regulators import REGULATORS, build_regulator, regulator_class
from tests.inforeg.regulators.loop import make_run, train
from tests.inforeg.tiny import tiny_batch, tiny_model

METHODS = ["joint", "ogm", "ogm_ge", "inforeg", "pmr", "agm", "gblending", "mmpareto", "greedy"]
EXTRA = {"gblending": {"gblending_super_epoch": 1}}
EPOCHS, STEPS = 3, 2


def records(run, steps: int = STEPS) -> list[dict]:
    return [
        {"step": i, "epoch": i // steps, **m} for i, m in enumerate(run.metrics)
    ]  # what the trainer logs: the step metrics with the step and epoch


def test_every_registered_method_is_covered():
    assert set(REGULATORS) == set(METHODS)


@pytest.mark.parametrize("schedule", ["always", "window", "outside"])
@pytest.mark.parametrize("name", METHODS)
def test_logged_decisions_audit_clean_and_follow_the_schedule(name, schedule):
    # K = -1 opens each window from epoch 2 on (closed before: no trace history)
    cfg = RegulatorConfig(name=name, schedule=schedule, threshold=-1.0, **EXTRA.get(name, {}))
    run = make_run(cfg)
    train(run, EPOCHS, STEPS)
    reg = run.regulator
    assert reg.windows[:2] == [[False, False]] * 2 and all(reg.windows[2])
    cls = regulator_class(name)
    for r in records(run):
        window = dict(zip(reg.modalities, reg.windows[r["epoch"]], strict=True))
        assert cls.audit_step(r, reg.modalities, cfg, window) == [], r
        for m in reg.modalities:
            if r[f"regulated.{m}"]:
                assert schedule == "always" or (schedule == "window") == window[m]
    if name != "joint":  # the method did act somewhere in this schedule
        assert any(r[f"regulated.{m}"] for r in records(run) for m in reg.modalities)


@pytest.mark.parametrize("name", [m for m in METHODS if m != "joint"])
def test_the_audit_catches_a_wrong_decision(name):
    cfg = RegulatorConfig(name=name, **EXTRA.get(name, {}))
    run = make_run(cfg)
    train(run, 2, STEPS)
    reg = run.regulator
    r = records(run)[-1]
    window = dict(zip(reg.modalities, reg.windows[r["epoch"]], strict=True))
    m = reg.modalities[0]
    regulated = ("inforeg", "gblending", "mmpareto", "agm", "pmr", "greedy")
    key = "regulated" if name in regulated else "coeff"
    bad = {**r, f"{key}.{m}": 1.0 - r[f"{key}.{m}"] if key == "regulated" else 0.123}
    assert regulator_class(name).audit_step(bad, reg.modalities, cfg, window) != []


@pytest.mark.parametrize(
    ("name", "modalities", "message"),
    [("pmr", 3, "pmr is defined for two modalities"), ("ogm", 1, "at least two")],
)
def test_modality_counts_the_method_does_not_define_are_errors(name, modalities, message):
    with pytest.raises(ValueError, match=message):
        make_run(RegulatorConfig(name=name), modalities=modalities)


@pytest.mark.parametrize("name", ["agm", "gblending", "mmpareto", "ogm"])
def test_methods_defined_for_any_count_run_on_three(name):
    run = make_run(RegulatorConfig(name=name, **EXTRA.get(name, {})), modalities=3)
    train(run, 2, STEPS)
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_greedy_refuses_a_model_without_mmtm_modules():
    model = tiny_model(2)
    groups = ModalityGroups.from_model(model)
    with pytest.raises(ValueError, match=r"greedy needs MMTM .*model.fusion: mmtm"):
        build_regulator(RegulatorConfig(name="greedy"), groups, ParamGradients(groups), model.head)


def test_mmpareto_gradients_equal_the_authors_rule_on_separate_gradients():
    run = make_run(RegulatorConfig(name="mmpareto"))
    reg, model = run.regulator, run.model
    reg.on_epoch_start(0)
    data = tiny_batch(model, 6, seed=4)
    out = model(data)
    params = reg.groups.parameters()
    labels = data["label"]
    uni = Fn.unimodal_logits(out.features, model.head)
    g_mm = torch.autograd.grad(F.cross_entropy(out.logits, labels), params, retain_graph=True)
    g_u = torch.autograd.grad(
        sum(F.cross_entropy(z, labels) for z in uni.values()), params, retain_graph=True
    )
    loss = reg.loss(out, labels)
    loss.backward()
    reg.on_gradients()
    flat_mm = torch.cat([g.flatten() for g in g_mm])
    flat_u = torch.cat([g.flatten() for g in g_u])
    ids = torch.cat([torch.full((p.numel(),), i) for i, p in enumerate(params)])
    modality = reg.groups.table("modality", "cpu")
    expected, weights = mmpareto_reference(flat_mm, flat_u, ids, modality, 2, gamma=1.5)
    got = torch.cat([p.grad.flatten() for p in params])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for i, m in enumerate(reg.modalities):
        assert reg.step_metrics()[f"alpha.{m}"].item() == pytest.approx(weights[i, 0].item())


def test_agm_mono_scores_equal_the_masked_forwards_of_the_model():
    run = make_run(RegulatorConfig(name="agm"))
    reg, model = run.regulator, run.model
    reg.on_epoch_start(0)
    data = tiny_batch(model, 6, seed=6)
    out = model(data)
    labels = data["label"]
    reg.loss(out, labels)
    model.eval()
    with torch.no_grad():  # the authors' form: masked forwards of the whole model, eval mode
        f_a0 = model({**data, "video": torch.zeros_like(data["video"])}).logits
        f_0v = model({**data, "audio": torch.zeros_like(data["audio"])}).logits
    model.train()
    full = out.logits.detach()
    out_a = (full - f_0v + f_a0) / 2  # CREMAD_net.py lines 7-17
    out_v = (full - f_a0 + f_0v) / 2
    mono = mono_logits(torch.stack([torch.zeros_like(full), f_a0, f_0v, full]), shapley_matrix(2))
    torch.testing.assert_close(mono, torch.stack([out_a, out_v]))
    nll = agm_score_sums(mono, labels) / labels.shape[0]
    metrics = reg.step_metrics()
    torch.testing.assert_close(
        torch.stack([-metrics["score.audio"], -metrics["score.video"]]), nll, rtol=1e-5, atol=1e-5
    )


def test_pmr_adds_the_weak_modalitys_prototype_loss_from_last_epochs_class_means():
    run = make_run(RegulatorConfig(name="pmr"))
    train(run, 1, 3)
    reg, model = run.regulator, run.model
    assert reg.prototypes is not None
    protos = [c.clone() for c in reg.prototypes]
    reg.on_epoch_start(1)
    data = tiny_batch(model, 6, seed=8)
    out = model(data)
    labels = data["label"]
    loss = reg.loss(out, labels)
    logits = [
        Fn.pmr.prototype_logits(out.features[m], c)
        for m, c in zip(reg.modalities, protos, strict=True)
    ]
    scores = torch.stack([F.softmax(z, 1).gather(1, labels[:, None]).mean() for z in logits])
    coef = Fn.pmr.pmr_coefficients(scores, 2.0)
    expected = F.cross_entropy(out.logits, labels) + sum(
        c * F.cross_entropy(z, labels) for c, z in zip(coef, logits, strict=True)
    )
    torch.testing.assert_close(loss, expected)
    assert sorted(coef.tolist()) == [0.0, 2.0]


def test_gblending_weights_come_from_the_windows_train_and_evaluation_losses():
    run = make_run(RegulatorConfig(name="gblending", gblending_super_epoch=2))
    train(run, 2, 3)  # window 0: epochs 0 and 1, each followed by the evaluation
    reg = run.regulator
    t_pre, v_pre = reg.t_pre.clone(), reg.v_pre.clone()  # epoch 0's, folded at epoch 1's start
    t_now, v_now = reg.t_last.clone(), reg.v_sum.clone()  # epoch 1's (one rank: V unreduced)
    reg.on_epoch_start(2)
    expected = Fn.gblending.blending_weights(t_pre, t_now, v_pre, v_now).double()
    torch.testing.assert_close(reg.weights, expected)
    assert not torch.allclose(reg.weights, torch.full_like(reg.weights, 1 / 3))
    data = tiny_batch(run.model, 6, seed=9)
    out = run.model(data)
    labels = data["label"]
    uni = Fn.unimodal_logits(out.features, run.model.head)
    losses = [F.cross_entropy(uni[m], labels) for m in reg.modalities]
    losses.append(F.cross_entropy(out.logits, labels))
    blended = sum(w * loss for w, loss in zip(expected.float(), losses, strict=True))
    torch.testing.assert_close(reg.loss(out, labels), blended)


@pytest.mark.parametrize("name", [m for m in METHODS if m not in ("greedy", "agm", "mmpareto")])
def test_every_method_that_reads_the_models_outputs_trains_an_mmtm_model(name):
    model = tiny_model(2, fusion="mmtm")
    groups = ModalityGroups.from_model(model)
    cfg = RegulatorConfig(name=name, **EXTRA.get(name, {}))
    reg = build_regulator(cfg, groups, ParamGradients(groups, contiguous=True), model.head)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(2):
        reg.on_epoch_start(epoch)
        for step in range(2):
            batch = tiny_batch(model, 4, seed=10 * epoch + step)
            loss = reg.loss(model(batch), batch["label"])
            opt.zero_grad()
            loss.backward()
            reg.on_gradients()
            opt.step()
        reg.on_epoch_end(epoch)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not any(bool(m.cut.any()) for m in model.bypass.values())  # only Greedy cuts


@pytest.mark.parametrize("name", ["agm", "mmpareto"])
def test_methods_that_run_the_encoders_alone_refuse_an_mmtm_model(name):
    model = tiny_model(2, fusion="mmtm")
    groups = ModalityGroups.from_model(model)
    with pytest.raises(ValueError, match=f"{name} runs the encoders on their own"):
        build_regulator(
            RegulatorConfig(name=name),
            groups,
            ParamGradients(groups),
            model.head,
            encoders=model.encoders,
        )
