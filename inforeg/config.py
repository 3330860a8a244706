"""The regulator's configuration: which method, which variant, its coefficients and schedule.

One flat, frozen section (`regulator.*` in the YAML), so that every field is a dotted key on the
command line (`regulator.name=inforeg regulator.variant=official`). Fields that only one method
reads say so; ``None`` defaults resolve to the variant's value (`RegulatorConfig.resolved_score`,
`RegulatorConfig.resolved_threshold`), as stated in METHOD.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inforeg import kernels
from inforeg.functional import SCORE_KINDS
from inforeg.regulators import regulator_class

VARIANTS = ("paper", "official")
SCHEDULES = ("window", "always", "outside_window")
IMPLS = ("auto", *kernels.IMPLS)

# Each variant's defaults (METHOD.md): the paper's Eq. 8 / Eq. 11 and the official code's.
VARIANT_SCORE = {"paper": "nll", "official": "prob_sum"}
VARIANT_THRESHOLD = {"paper": 0.04, "official": 0.05}


@dataclass(frozen=True, kw_only=True)
class RegulatorConfig:
    """How the encoders' gradients are regulated (METHOD.md)."""

    name: str = "inforeg"
    """joint (no regulation) | ogm_ge (OGM / OGM-GE, CVPR 2022) | inforeg (InfoReg, CVPR 2025)."""
    variant: str = "paper"
    """paper | official. inforeg: scores, alpha, window test and information trace as the paper
    (Eq. 8-16) or as its official code (METHOD.md); ogm_ge: GE noise on the dominant encoder only
    (paper) or on every encoder's conv weights (official OGM-GE code). Every regulator records the
    variant's information trace, so the traces of runs with the same variant compare."""
    unimodal_loss: bool = False
    """Add each modality's cross-entropy (from its head slice, weight 1) to the joint loss:
    inforeg with true is InfoReg*; the official InfoReg code always does this."""
    beta: float = 0.9
    """inforeg paper: alpha_m = exp(beta * tanh(gap_m)) (Eq. 16)."""
    threshold: float | None = None
    """inforeg: the window test's K; None = the variant's (paper 0.04, official 0.05)."""
    score: str | None = None
    """inforeg: the modality score, nll | prob_sum | prob_mean; None = the variant's (paper nll,
    official prob_sum). ogm_ge always uses prob_sum (its ratio is defined on it)."""
    schedule: str = "window"
    """inforeg: when regulation may act: window (in the prime learning window, the method),
    always (every epoch: paper Table 4's "all of training"), outside_window (only when the window
    is closed: Table 4's other ablation). Always only where the modality's gap is positive."""
    official_lead_coef: float = 0.95
    """inforeg official: alpha of the first modality in head order (the code's audio) is
    lead_coef * exp(tanh(gap))."""
    official_other_coef: float = 0.1
    """inforeg official: alpha of every other modality (the code's visual) is
    other_coef * exp(tanh(gap))."""
    official_span: int = 10
    """inforeg official: the window test's moving-average span (the code's history is seeded
    with this many zeros)."""
    alpha: float = 0.8
    """ogm_ge: modulation strength, k = 1 - tanh(alpha * rho) for the dominant modality."""
    ge: bool = True
    """ogm_ge: add N(0, std(g) + 1e-8) per conv-weight tensor (OGM-GE); false = plain OGM."""
    modulation_starts: int = 0
    """ogm_ge: first epoch with modulation (inclusive)."""
    modulation_ends: int = 50
    """ogm_ge: last epoch with modulation (inclusive)."""
    impl: str = "auto"
    """The fused gradient pass: reference | foreach | flat | auto (flat when the gradients live
    in one buffer, else foreach). See docs/regulator.md."""
    noise_seed: int = 0
    """ogm_ge: seed of the GE noise generator (reseeded each step from seed, step and rank)."""

    def __post_init__(self) -> None:
        method = regulator_class(self.name)  # the registry is the one list of names
        _choice("variant", self.variant, VARIANTS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("impl", self.impl, IMPLS)
        if not isinstance(self.unimodal_loss, bool):
            raise ValueError(
                f"regulator.unimodal_loss must be true or false, got {self.unimodal_loss!r}"
            )
        if not isinstance(self.ge, bool):
            raise ValueError(f"regulator.ge must be true or false, got {self.ge!r}")
        if self.score is not None:
            _choice("score", self.score, SCORE_KINDS)
        for field_name in ("beta", "alpha"):
            _positive(field_name, getattr(self, field_name))
        for field_name in ("official_lead_coef", "official_other_coef"):
            value = getattr(self, field_name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:  # NaN fails isfinite
                raise ValueError(
                    f"regulator.{field_name} must be a finite number >= 0, got {value!r}"
                )
        if self.threshold is not None and (
            not _is_real(self.threshold) or not math.isfinite(self.threshold)
        ):
            raise ValueError(f"regulator.threshold must be a finite number, got {self.threshold!r}")
        _int_at_least("official_span", self.official_span, 1)
        _int_at_least("modulation_starts", self.modulation_starts, 0)
        _int_at_least("modulation_ends", self.modulation_ends, self.modulation_starts)
        _int_at_least("noise_seed", self.noise_seed, 0)
        method.check_config(self)

    @property
    def resolved_score(self) -> str:
        """The score kind in use: ogm_ge's prob_sum, else the field or the variant's default."""
        if self.name == "ogm_ge":
            return "prob_sum"
        return self.score if self.score is not None else VARIANT_SCORE[self.variant]

    @property
    def resolved_threshold(self) -> float:
        """The window test's K in use: the field, or the variant's default."""
        return self.threshold if self.threshold is not None else VARIANT_THRESHOLD[self.variant]


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _choice(field_name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"regulator.{field_name} must be one of {choices}, got {value!r}")


def _positive(field_name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"regulator.{field_name} must be a finite number > 0, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"regulator.{field_name} must be a finite number > 0, got {value!r}")


def _int_at_least(field_name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"regulator.{field_name} must be an integer >= {low}, got {value!r}")
