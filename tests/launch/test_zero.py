"""The ZeRO side of a step: at stage 0 fp32 the gradients stay views of the regulator's buffer."""

from __future__ import annotations

from pathlib import Path

import pytest

from inforeg.kernels import ParamGradients
from launch.session import build_session
from tests.launch.conftest import ROOT, train_args


@pytest.mark.timeout(300)
def test_zero0_keeps_gradients_in_the_contiguous_buffer(tiny_shards: Path, tmp_path: Path) -> None:
    """DeepSpeed's engine sets every .grad to None after its step; the trainer zeroes them in
    place instead, so backward accumulates straight into the regulator's contiguous buffer and no
    step copies gradients into it."""
    args = train_args(tiny_shards, tmp_path / "run", "regulator.name=inforeg", "run.epochs=1")
    zero0 = [str(ROOT / "deepspeed_configs" / "zero0.json")]
    session = build_session(args[1], args[2:], zero0, "none")
    assert session.run() == 0
    (view,) = session.trainer.gradients.views
    assert isinstance(view, ParamGradients)
    assert session.trainer.regulator.step > 0
    assert view.grad_copies == 0
