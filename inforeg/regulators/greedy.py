"""Greedy (Wu et al., ICML 2022): balance the conditional learning speeds measured on MMTM
cross-modal bypass modules between the encoders (`inforeg.functional.greedy` has the maths).

Not runnable on this trainer's models: MMTM is mid-fusion (the two trunks run stage by stage
with a module between them after ResNet layers 2-4), and `MultimodalModel` is late-fusion (each
encoder runs whole; one linear head on the concatenated features) with no MMTM option. Without
the bypass modules there is no conditional learning speed to measure, so the method refuses
every configuration with an error that says what is missing, rather than run something else
under its name (docs/methods.md, "Greedy").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inforeg.regulators.base import Regulator

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig

MISSING = (
    "regulator.name: greedy needs MMTM mid-fusion modules between two image encoders (the "
    "trunks run stage-wise, MMTM after their last three stages, the running gate averages as "
    "model buffers, and the bypass parameters grouped per modality), which this trainer's "
    "late-fusion model (each encoder run whole into one linear head) does not have: the model "
    "option model.fusion=mmtm is not implemented yet (docs/methods.md, Greedy)"
)


class GreedyRegulator(Regulator):
    name = "greedy"
    min_modalities = 2
    max_modalities = 2
    variants = ("official",)
    default_variant = "official"

    @classmethod
    def check_config(cls, cfg: RegulatorConfig) -> None:
        raise ValueError(MISSING)
