"""How to add a regulator (docs/ARCHITECTURE.md), proven: a method defined in this file, one
`register` call, and the real trainer (config validation, ZeRO views, the pre-step event, the
records) trains it with no other change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from inforeg import functional as Fn
from inforeg.kernels import GradientUpdate
from inforeg.model import build_model
from inforeg.regulators import Regulator, register, unregister
from launch.config import load_config
from launch.data import input_spec
from launch.records import read_run
from launch.train import main as train_main
from preprocess.schema import load_dataset_info
from tests.launch.conftest import train_args


class FreezeLast(Regulator):
    """A toy method: the last modality's encoder gets no gradient at all (scale 0)."""

    name = "freeze_last"
    _scale: Tensor | None = None

    def _decide(self, scores: Tensor) -> None:
        frozen = torch.arange(len(scores), device=scores.device) == len(scores) - 1
        self._scale = (~frozen).float()
        self._record(scores, Fn.score_gaps(scores), torch.zeros_like(scores), frozen)

    def _update(self) -> GradientUpdate:
        return GradientUpdate(scale=self._scale, stat=self.stat)


@pytest.fixture
def freeze_last() -> Iterator[type[Regulator]]:
    register(FreezeLast)
    yield FreezeLast
    unregister(FreezeLast.name)


@pytest.mark.timeout(300)
def test_a_regulator_defined_in_a_test_trains_through_the_real_loop(
    freeze_last: type[Regulator], tiny_shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    overrides = ["regulator.name=freeze_last", "optim.weight_decay=0", "run.epochs=2"]
    args = train_args(tiny_shards, out, *overrides)
    assert train_main(args) == 0
    run = read_run(out / "metrics.jsonl")
    assert len(run.epochs) == 2 and run.steps
    assert all(s.regulated == {"audio": 0.0, "video": 1.0} for s in run.steps)

    # the frozen encoder's weights are still the initial ones (same seed, same model); the other
    # encoder's have moved
    cfg = load_config(args[1], args[2:])
    info = load_dataset_info(tiny_shards)
    torch.manual_seed(cfg.run.seed)
    initial = build_model(cfg.model, input_spec(info), len(info.classes)).state_dict()
    final = torch.load(out / "last_model.pt", weights_only=True)
    trained = [k for k, v in final.items() if k.startswith("encoders.") and v.is_floating_point()]
    params = {k for k, _ in build_model(cfg.model, input_spec(info), 4).named_parameters()}
    video = [k for k in trained if k.startswith("encoders.video.") and k in params]
    audio = [k for k in trained if k.startswith("encoders.audio.") and k in params]
    assert video and audio
    assert all(torch.equal(final[k], initial[k]) for k in video)
    assert not all(torch.equal(final[k], initial[k]) for k in audio)


def test_a_name_taken_by_another_class_is_refused() -> None:
    class Impostor(FreezeLast):
        name = "inforeg"

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)
