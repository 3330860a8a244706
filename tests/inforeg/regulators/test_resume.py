"""A run stopped mid-epoch and resumed from its saved state equals an uninterrupted one, bit
for bit on CPU (Composer's resumption test, per regulator)."""

from __future__ import annotations

import io

import pytest
import torch

from inforeg.config import RegulatorConfig
from tests.inforeg.regulators.loop import checkpoint, make_run, train

CONFIGS = {
    "joint": RegulatorConfig(name="joint"),
    "ogm_ge": RegulatorConfig(name="ogm_ge"),
    "inforeg": RegulatorConfig(schedule="always"),
    "inforeg_star_window": RegulatorConfig(unimodal_loss=True, threshold=-1.0),
    "inforeg_official_foreach": RegulatorConfig(variant="official", impl="foreach"),
    "ogm": RegulatorConfig(name="ogm", schedule="outside"),
    "pmr": RegulatorConfig(name="pmr", pmr_momentum=0.5),
    "agm": RegulatorConfig(name="agm"),
    "gblending": RegulatorConfig(name="gblending", gblending_super_epoch=1),
    "gblending_window2": RegulatorConfig(name="gblending", gblending_super_epoch=2),
    "mmpareto": RegulatorConfig(name="mmpareto"),
    "mmpareto_foreach": RegulatorConfig(name="mmpareto", impl="foreach"),
    "greedy": RegulatorConfig(name="greedy", greedy_starting_epoch=0),
    "greedy_outside_foreach": RegulatorConfig(name="greedy", schedule="outside", impl="foreach"),
}
EPOCHS, STEPS, STOP = 3, 3, (1, 2)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_resumed_run_equals_uninterrupted(name):
    cfg = CONFIGS[name]
    contiguous = cfg.impl != "foreach"
    whole = make_run(cfg, contiguous=contiguous)
    train(whole, EPOCHS, STEPS)

    first = make_run(cfg, contiguous=contiguous)
    train(first, EPOCHS, STEPS, stop=STOP)
    buffer = io.BytesIO()
    torch.save(checkpoint(first), buffer)  # a real serialisation round trip
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)

    second = make_run(cfg, seed=123, contiguous=contiguous)  # different init: all from state
    second.model.load_state_dict(state["model"])
    second.optimizer.load_state_dict(state["optimizer"])
    second.regulator.load_state_dict(state["regulator"])
    train(second, EPOCHS, STEPS, start=STOP)

    for p, q in zip(whole.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert second.regulator.history == whole.regulator.history
    assert second.regulator.windows == whole.regulator.windows
    assert first.metrics + second.metrics == whole.metrics
    if not name.startswith("joint"):  # the runs did regulate something
        assert any(m["regulated.audio"] + m["regulated.video"] > 0 for m in whole.metrics)
