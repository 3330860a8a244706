"""The one training loop of docs/ARCHITECTURE.md, small, for regulator tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from inforeg.config import RegulatorConfig
from inforeg.groups import ModalityGroups
from inforeg.kernels import ModelGradients, ParamGradients
from inforeg.model import MultimodalModel
from inforeg.regulators import Regulator, build_regulator, regulator_class
from tests.inforeg.tiny import tiny_batch, tiny_model


@dataclass
class Run:
    model: MultimodalModel
    regulator: Regulator
    optimizer: torch.optim.Optimizer
    metrics: list[dict[str, float]] = field(default_factory=list)
    grads_before: list[list[Tensor]] = field(default_factory=list)  # per step, encoder params


def make_run(cfg: RegulatorConfig, *, modalities: int = 2, seed: int = 0, contiguous=True) -> Run:
    fusion = regulator_class(cfg.name).required_fusion or "concat"  # greedy: mmtm
    model = tiny_model(modalities, seed=seed, fusion=fusion)
    groups = ModalityGroups.from_model(model)
    view = ParamGradients(groups, contiguous=contiguous)
    whole = ModelGradients.of_model(view, model, model.head.weight)
    reg = build_regulator(
        cfg, groups, view, model.head, encoders=model.encoders, model_gradients=whole
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    return Run(model, reg, opt)


def train(
    run: Run,
    epochs: int,
    steps: int,
    *,
    start: tuple[int, int] = (0, 0),
    stop: tuple[int, int] | None = None,
    batch: int = 6,
    record_grads: bool = False,
) -> None:
    """Epochs x steps from `start`; returns early, before step `stop`, if given."""
    for epoch in range(start[0], epochs):
        run.regulator.on_epoch_start(epoch)  # a no-op for an epoch resumed in the middle
        first = start[1] if epoch == start[0] else 0
        for step in range(first, steps):
            if stop == (epoch, step):
                return
            data = tiny_batch(run.model, batch, seed=1000 * epoch + step)
            out = run.model(data)
            loss = run.regulator.loss(out, data["label"])
            run.optimizer.zero_grad(set_to_none=False)
            loss.backward()
            if record_grads:
                params = run.regulator.groups.parameters()
                run.grads_before.append([p.grad.detach().clone() for p in params])
            run.regulator.on_gradients()
            run.optimizer.step()
            run.metrics.append({k: float(v) for k, v in run.regulator.step_metrics().items()})
        run.regulator.on_epoch_end(epoch)
        run.model.eval()
        with torch.no_grad():  # the trainer's end-of-epoch evaluation (G-Blending reads it)
            for b in range(2):
                data = tiny_batch(run.model, batch, seed=10**6 + b)
                run.regulator.on_eval_batch(run.model(data), data["label"])
        run.model.train()


def checkpoint(run: Run) -> dict[str, Any]:
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "regulator": run.regulator.state_dict(),
    }
