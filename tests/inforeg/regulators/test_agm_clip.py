"""AGM's clip through the regulator: one step equals the encoders' gradients scaled by k and
then the authors' clip in plain PyTorch (`clip_reference`, ``clip_grad_norm_`` on the model);
the step record's clip fields, their audit, the switch and the missing-gradients error."""

from __future__ import annotations

import copy

import pytest
import torch

from inforeg.config import RegulatorConfig
from inforeg.functional.agm import clip_reference
from inforeg.groups import ModalityGroups
from inforeg.kernels import ParamGradients
from inforeg.regulators import AGMRegulator, build_regulator
from tests.inforeg.regulators.loop import make_run, train
from tests.inforeg.tiny import tiny_batch, tiny_model

FIRES = {"agm_clip_threshold": 0.01, "agm_clip_norm": 0.1}  # the tiny model's head exceeds 0.01


def one_step(cfg: RegulatorConfig, contiguous: bool = True):
    """The regulator's step on a fresh tiny model; the gradients before and after, the metrics."""
    run = make_run(cfg, contiguous=contiguous)
    reg, model = run.regulator, run.model
    reg.on_epoch_start(0)
    data = tiny_batch(model, 6, seed=3)
    loss = reg.loss(model(data), data["label"])
    loss.backward()
    before = copy.deepcopy(model)
    for p, q in zip(model.parameters(), before.parameters(), strict=True):
        q.grad = p.grad.clone()  # type: ignore[union-attr]
    reg.on_gradients()
    metrics = {k: float(v) for k, v in reg.step_metrics().items()}
    return model, before, metrics


@pytest.mark.parametrize("contiguous", [True, False])
def test_a_step_is_the_scaling_then_the_authors_clip(contiguous):
    cfg = RegulatorConfig(name="agm", **FIRES)
    model, plain, metrics = one_step(cfg, contiguous)
    for m, enc in plain.encoders.items():  # the hooks' k on every encoder gradient
        for p in enc.parameters():
            p.grad.mul_(metrics[f"coeff.{m}"])  # type: ignore[union-attr]
    factor = clip_reference(plain.parameters(), plain.head.weight, 0.01, 0.1)
    assert factor < 1.0
    for m in plain.encoders:
        assert metrics[f"clip.{m}"] == pytest.approx(factor, rel=1e-6)
        assert metrics[f"grad_norm.{m}"] == pytest.approx(0.1 / factor, rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9, msg=name)


def test_off_the_step_is_the_scaling_only_and_logs_no_clip():
    model, plain, metrics = one_step(RegulatorConfig(name="agm", agm_clip=False, **FIRES))
    assert not any(k.split(".")[0] in ("clip", "grad_norm", "head_absmax") for k in metrics)
    for m, enc in plain.encoders.items():
        for p in enc.parameters():
            p.grad.mul_(metrics[f"coeff.{m}"])  # type: ignore[union-attr]
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)


def test_inside_the_bound_nothing_is_clipped():
    _, _, metrics = one_step(RegulatorConfig(name="agm", agm_clip_threshold=1e6))
    assert metrics["clip.audio"] == metrics["clip.video"] == 1.0
    assert 0 < metrics["head_absmax.audio"] < 1e6


def test_the_clip_needs_the_models_gradients():
    model = tiny_model()
    groups = ModalityGroups.from_model(model)
    view = ParamGradients(groups)
    with pytest.raises(ValueError, match="agm_clip"):
        build_regulator(
            RegulatorConfig(name="agm"), groups, view, model.head, encoders=model.encoders
        )
    reg = build_regulator(
        RegulatorConfig(name="agm", agm_clip=False),
        groups,
        view,
        model.head,
        encoders=model.encoders,
    )
    assert reg.model_gradients is None


def test_the_audit_recomputes_the_clip_and_catches_a_wrong_one():
    cfg = RegulatorConfig(name="agm", **FIRES)
    run = make_run(cfg)
    train(run, 2, 2)
    mods = run.regulator.modalities
    records = [{"step": i, "epoch": i // 2, **m} for i, m in enumerate(run.metrics)]
    assert all(r["clip.audio"] < 1 for r in records)
    for r in records:
        window = dict(zip(mods, run.regulator.windows[r["epoch"]], strict=True))
        assert AGMRegulator.audit_step(r, mods, cfg, window) == []
        wrong = {**r, "clip.video": r["clip.video"] * 1.01}
        assert "AGM's clip gives" in AGMRegulator.audit_step(wrong, mods, cfg, window)[0]
        unclipped = {**r, "head_absmax.audio": 0.0, "head_absmax.video": 0.0}
        assert AGMRegulator.audit_step(unclipped, mods, cfg, window) != []
        missing = {k: v for k, v in r.items() if k != "grad_norm.audio"}
        assert "missing" in AGMRegulator.audit_step(missing, mods, cfg, window)[0]


def test_the_clip_reads_nothing_back_to_the_host(monkeypatch):
    """A CPU proxy for the GPU's host syncs: the clip never turns a tensor into a Python value
    (``.item()``, ``bool``, ``float``, ``.tolist()``)."""
    run = make_run(RegulatorConfig(name="agm", **FIRES))
    reg, model = run.regulator, run.model
    reg.on_epoch_start(0)
    data = tiny_batch(model, 6, seed=3)
    reg.loss(model(data), data["label"]).backward()
    reg.on_gradients()  # a first step builds the column table

    def refuse(*args, **kwargs):
        raise AssertionError("host sync in the clip")

    reg.loss(model(data), data["label"]).backward()
    for name in ("item", "__bool__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    with pytest.raises(AssertionError, match="host sync"):
        bool(torch.ones(()) > 0)  # the patch is live
    reg._clip()  # the clip alone (the fused pass before it is the base's)
    monkeypatch.undo()
    assert float(reg.step_metrics()["clip.audio"]) < 1.0
