"""Regulators: joint, OGM-GE and InfoReg as thin event-driven wrappers (see `Event`).

Build one with `build_regulator(cfg, groups, gradients, head)`::

    model = build_model(...)
    groups = ModalityGroups.from_model(model)
    gradients = ParamGradients.from_groups(groups, contiguous=True)  # or FlatGradients per
    regulator = build_regulator(cfg, groups, gradients, model.head)  #   ZeRO partition
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from inforeg.config import RegulatorConfig
from inforeg.groups import ModalityGroups
from inforeg.kernels import GradientView
from inforeg.regulators.base import Event, Regulator, all_reduce_sum_
from inforeg.regulators.inforeg import InfoRegRegulator
from inforeg.regulators.joint import JointRegulator
from inforeg.regulators.ogm_ge import OGMGERegulator

REGULATORS: dict[str, type[Regulator]] = {
    "joint": JointRegulator,
    "ogm_ge": OGMGERegulator,
    "inforeg": InfoRegRegulator,
}

__all__ = [
    "REGULATORS",
    "Event",
    "InfoRegRegulator",
    "JointRegulator",
    "OGMGERegulator",
    "Regulator",
    "all_reduce_sum_",
    "build_regulator",
]


def build_regulator(
    cfg: RegulatorConfig,
    groups: ModalityGroups,
    gradients: GradientView | Sequence[GradientView],
    head: nn.Linear,
    *,
    process_group: Any = None,
) -> Regulator:
    """The regulator `cfg` names, over `gradients` (one view, or one per flat partition).

    `head` is the model's shared linear head (its slices give the unimodal logits);
    `process_group` is the data-parallel group (None: the default group when
    torch.distributed is initialized, else single-process).
    """
    if cfg.name == "ogm_ge" and groups.num_modalities < 2:
        raise ValueError("regulator.name: ogm_ge needs at least two modalities")
    return REGULATORS[cfg.name](cfg, groups, gradients, head, process_group=process_group)
