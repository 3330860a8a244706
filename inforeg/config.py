"""The regulator's configuration: which method, which variant, its coefficients and schedule.

One flat, frozen section (`regulator.*` in the YAML), so that every field is a dotted key on the
command line (`regulator.name=inforeg regulator.variant=official`). Fields that only one method
reads say so. ``None`` defaults resolve per method or per variant: the variant (each method's
own default, `RegulatorConfig.resolved_variant`), the schedule (`resolved_schedule`), the score
(`resolved_score`) and the window test's K (`resolved_threshold`), as stated in METHOD.md and
docs/methods.md. ``schedule: null`` is resolved when the config is built, so a run's config.json
names the schedule it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inforeg import kernels
from inforeg.functional import SCORE_KINDS
from inforeg.regulators import regulator_class

VARIANTS = ("paper", "official")
SCHEDULES = ("always", "window", "outside")
IMPLS = ("auto", *kernels.IMPLS)

# Each variant's defaults (METHOD.md): the paper's Eq. 8 / Eq. 11 and the official code's.
VARIANT_SCORE = {"paper": "nll", "official": "prob_sum"}
VARIANT_THRESHOLD = {"paper": 0.04, "official": 0.05}
POSITIVE = (
    "beta",
    "alpha",
    "pmr_alpha",
    "agm_alpha",
    "agm_cap",
    "agm_clip_threshold",
    "agm_clip_norm",
    "mmpareto_gamma",
)


@dataclass(frozen=True, kw_only=True)
class RegulatorConfig:
    """How the encoders' gradients are regulated (METHOD.md)."""

    name: str = "inforeg"
    """The method (the registry's names, `inforeg.regulators.REGULATORS`): joint, ogm, ogm_ge,
    inforeg, pmr, agm, gblending, mmpareto, greedy (docs/methods.md)."""
    variant: str | None = None
    """paper | official | None (the method's default, `Regulator.default_variant`). inforeg
    (default paper): scores, alpha, window test and information trace as the paper (Eq. 8-16) or
    as its official code (METHOD.md); joint: which of the two traces and window tests it records;
    ogm_ge (default official): GE noise on every encoder's conv weights (the official code) or on
    the dominant encoder's only (paper). The other methods have their authors' code form only."""
    unimodal_loss: bool = False
    """Add each modality's cross-entropy (from its head slice, weight 1) to the joint loss:
    inforeg with true is InfoReg*; the official InfoReg code always does this."""
    beta: float = 0.9
    """inforeg paper: alpha_m = exp(beta * tanh(gap_m)) (Eq. 16)."""
    threshold: float | None = None
    """The window test's K; None = the variant's (paper 0.04, official 0.05)."""
    score: str | None = None
    """inforeg: the modality score, nll | prob_sum | prob_mean; None = the variant's (paper nll,
    official prob_sum). ogm / ogm_ge always use prob_sum (their ratio is defined on it)."""
    schedule: str | None = None
    """When a method's modulation of modality m may act, from the prime-window test of m (paper
    Table 4): always | window (only while m's window is open) | outside (only while it is
    closed); None = the method's own (inforeg: window; every other method: always)."""
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
    """ogm, ogm_ge: modulation strength, k = 1 - tanh(alpha * rho) for the dominant modality
    (the authors' CREMA-D 0.8)."""
    modulation_starts: int = 0
    """ogm, ogm_ge, pmr, agm: first epoch with modulation (inclusive, 0-based)."""
    modulation_ends: int = 50
    """ogm, ogm_ge: last epoch with modulation (inclusive, 0-based; the authors' 50)."""
    pmr_alpha: float = 2.0
    """pmr: the prototype loss weight of the weak modality (the authors' CREMA-D concat 2.0)."""
    pmr_modulation_ends: int = 70
    """pmr: last epoch with modulation (inclusive; the authors' CREMA-D 70)."""
    agm_alpha: float = 1.0
    """agm: k = exp(alpha * min(optimal - ratio, cap)) (the authors' default 1.0)."""
    agm_modulation_ends: int = 19
    """agm: last epoch with modulation (inclusive, 0-based: the code's 1-based epochs 1..20)."""
    pmr_momentum: float = 0.0
    """pmr: prototype EMA, new = (1 - m) estimate + m previous (the authors' CREMA-D 0.0)."""
    agm_cap: float = 10.0
    """agm: k = exp(alpha * min(optimal - ratio, cap)) (the code's 10)."""
    agm_clip: bool = True
    """agm: the authors' conditional clip after the modulation: when an entry of the head
    weight's gradient leaves [-agm_clip_threshold, agm_clip_threshold], every gradient of the
    model is scaled as ``clip_grad_norm_(model, agm_clip_norm)`` would (false: never clip)."""
    agm_clip_threshold: float = 1.0
    """agm: the head weight gradient's bound that triggers the clip (the code's 1)."""
    agm_clip_norm: float = 1.0
    """agm: the whole model's gradient norm the clip scales down to (the code's max_norm 1)."""
    gblending_super_epoch: int = 10
    """gblending: epochs per weight estimate (BalanceBenchmark's super_epoch)."""
    mmpareto_gamma: float = 1.5
    """mmpareto: the gradient magnitude factor (the code's 1.5)."""
    greedy_epsilon: float = 0.01
    """greedy: a re-balancing window starts when |d| = |BDR_0 - BDR_1| > epsilon (the authors'
    ModelNet40 0.01; BalanceBenchmark's 0.001)."""
    greedy_window: int = 5
    """greedy: steps in a re-balancing window (the authors' curation_windowsize 5)."""
    greedy_starting_epoch: int = 1
    """greedy: first 0-based epoch with re-balancing windows (the authors' starting_epoch 2 in
    Poutyne's 1-based epochs); before it the speeds only accumulate."""
    impl: str = "auto"
    """The fused gradient pass: reference | foreach | flat | auto (flat when the gradients live
    in one buffer, else foreach). See docs/regulator.md."""
    noise_seed: int = 0
    """ogm_ge: seed of the GE noise generator (reseeded each step from seed, step and rank)."""

    def __post_init__(self) -> None:
        method = regulator_class(self.name)  # the registry is the one list of names
        if self.variant is not None:
            _choice("variant", self.variant, method.variants)
        if self.schedule is None:  # the method's own, recorded in config.json
            object.__setattr__(self, "schedule", method.default_schedule)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("impl", self.impl, IMPLS)
        for flag in ("unimodal_loss", "agm_clip"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(
                    f"regulator.{flag} must be true or false, got {getattr(self, flag)!r}"
                )
        if self.score is not None:
            _choice("score", self.score, SCORE_KINDS)
        for field_name in POSITIVE:
            _positive(field_name, getattr(self, field_name))
        if not _is_real(self.pmr_momentum) or not 0 <= self.pmr_momentum < 1:
            raise ValueError(f"regulator.pmr_momentum must be in [0, 1), got {self.pmr_momentum!r}")
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
        for field_name in ("modulation_ends", "pmr_modulation_ends", "agm_modulation_ends"):
            _int_at_least(field_name, getattr(self, field_name), self.modulation_starts)
        _int_at_least("gblending_super_epoch", self.gblending_super_epoch, 1)
        _int_at_least("greedy_window", self.greedy_window, 1)
        _int_at_least("greedy_starting_epoch", self.greedy_starting_epoch, 0)
        if not _is_real(self.greedy_epsilon) or not 0 <= self.greedy_epsilon < math.inf:
            value = self.greedy_epsilon
            raise ValueError(
                f"regulator.greedy_epsilon must be a finite number >= 0, got {value!r}"
            )
        _int_at_least("noise_seed", self.noise_seed, 0)
        method.check_config(self)

    @property
    def resolved_variant(self) -> str:
        """The variant in use: the field, or the method's default."""
        return (
            self.variant if self.variant is not None else regulator_class(self.name).default_variant
        )

    @property
    def resolved_window(self) -> str:
        """The form of the information trace and window test recorded (paper | official): the
        variant for the methods whose variant is InfoReg's (joint, inforeg), else paper (the
        per-modality test that the schedules of the other methods read)."""
        if regulator_class(self.name).variant_sets_window:
            return self.resolved_variant
        return "paper"

    @property
    def resolved_schedule(self) -> str:
        """The schedule in use: the field, or the method's own."""
        return (
            self.schedule
            if self.schedule is not None
            else regulator_class(self.name).default_schedule
        )

    @property
    def resolved_score(self) -> str:
        """The score kind in use: the method's fixed kind (ogm, ogm_ge: prob_sum), else the field
        or the trace variant's default."""
        fixed = regulator_class(self.name).fixed_score
        if fixed is not None:
            return fixed
        return self.score if self.score is not None else VARIANT_SCORE[self.resolved_window]

    @property
    def resolved_threshold(self) -> float:
        """The window test's K in use: the field, or the trace variant's default."""
        if self.threshold is not None:
            return self.threshold
        return VARIANT_THRESHOLD[self.resolved_window]


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
