"""Regulators: joint, OGM / OGM-GE, InfoReg and the paper's other comparison methods as thin
event-driven wrappers (see `Event`; docs/methods.md).

The registry (`REGULATORS`, filled below) is the one list of method names.

Build one with `build_regulator(cfg, groups, gradients, head)`::

    model = build_model(...)
    groups = ModalityGroups.from_model(model)
    gradients = ParamGradients.from_groups(groups, contiguous=True)  # or FlatGradients per
    regulator = build_regulator(cfg, groups, gradients, model.head)  #   ZeRO partition
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from inforeg.groups import ModalityGroups
from inforeg.kernels import GradientView, ModelGradients
from inforeg.regulators.agm import AGMRegulator
from inforeg.regulators.base import Event, Regulator, all_reduce_sum_
from inforeg.regulators.gblending import GBlendingRegulator
from inforeg.regulators.greedy import GreedyRegulator
from inforeg.regulators.inforeg import InfoRegRegulator
from inforeg.regulators.joint import JointRegulator
from inforeg.regulators.mmpareto import MMParetoRegulator
from inforeg.regulators.ogm import OGMGERegulator, OGMRegulator
from inforeg.regulators.pmr import PMRRegulator
from inforeg.regulators.registry import REGULATORS, register, regulator_class, unregister

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig

register(JointRegulator)
register(OGMRegulator)
register(OGMGERegulator)
register(InfoRegRegulator)
register(PMRRegulator)
register(AGMRegulator)
register(GBlendingRegulator)
register(MMParetoRegulator)
register(GreedyRegulator)

__all__ = [
    "REGULATORS",
    "AGMRegulator",
    "Event",
    "GBlendingRegulator",
    "GreedyRegulator",
    "InfoRegRegulator",
    "JointRegulator",
    "MMParetoRegulator",
    "OGMGERegulator",
    "OGMRegulator",
    "PMRRegulator",
    "Regulator",
    "all_reduce_sum_",
    "build_regulator",
    "register",
    "regulator_class",
    "unregister",
]


def build_regulator(
    cfg: RegulatorConfig,
    groups: ModalityGroups,
    gradients: GradientView | Sequence[GradientView],
    head: nn.Linear,
    *,
    process_group: Any = None,
    encoders: Mapping[str, nn.Module] | nn.ModuleDict | None = None,
    model_gradients: ModelGradients | None = None,
) -> Regulator:
    """The regulator `cfg` names, over `gradients` (one view, or one per flat partition).

    `head` is the model's shared linear head (its slices give the unimodal logits);
    `process_group` is the data-parallel group (None: the default group when
    torch.distributed is initialized, else single-process); `encoders` (modality -> encoder)
    for the methods that run extra no-grad forwards (agm); `model_gradients` (every gradient
    of the model, `ModelGradients`) for the methods that act on the whole model (agm's clip).
    """
    cls = regulator_class(cfg.name)
    cls.check_config(cfg)
    cls.check_modalities(groups.modalities)
    return cls(
        cfg,
        groups,
        gradients,
        head,
        process_group=process_group,
        encoders=encoders,
        model_gradients=model_gradients,
    )
