"""OGM and OGM-GE (Peng et al., CVPR 2022): slow down the dominant modality's conv weights.

Per step in epochs ``modulation_starts..modulation_ends`` (and where ``regulator.schedule``
allows, per modality): from prob_sum scores of the global batch, every encoder's conv-weight
gradients become ``k_m g`` (`inforeg.functional.ogm_coefficients`: ``1 - tanh(alpha rho)`` for
the dominant modality, 1 for the others; with two modalities exactly the official
``official_coefficients``). OGM-GE adds ``N(0, (std(g) + 1e-8)^2)`` per conv-weight tensor: on
EVERY encoder's conv weights, the weak one at k = 1 too (the official code, the default), or on
the dominant encoder's only (``variant: paper``, the reading this project shipped first).

Two registered classes sharing this code: ``ogm`` (no noise) and ``ogm_ge`` (the noise).
std(g) is the unbiased std of the whole parameter tensor: with partitioned gradients its
moments are all-reduced across ranks first, so a tensor split across ranks gets the same std as
unsplit. The noise is drawn from a generator seeded by (noise_seed, step, rank for partitioned
gradients), never from the global RNG: ranks holding full gradients draw identical noise and
keep identical parameters, and a resumed run draws the same noise as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from inforeg import functional as Fn
from inforeg.functional.ogm import ge_noise_std, ge_noise_targets
from inforeg.kernels import GradientUpdate, param_moments
from inforeg.regulators.base import Regulator, all_reduce_sum_, schedule_allows

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig


class OGMRegulator(Regulator):
    name = "ogm"
    min_modalities = 2
    variants: ClassVar[tuple[str, ...]] = ("official",)
    default_variant = "official"
    fixed_score = "prob_sum"
    ge: ClassVar[bool] = False
    """Add the GE noise (``ogm_ge``)."""

    _scale: Tensor | None = None  # (M,) this step's k (ones where not modulated)
    _dominant: Tensor | None = None  # (M,) bool, the highest score (first on a tie)
    _active: Tensor | None = None  # (M,) bool, modulation epoch and schedule allow m

    def _decide(self, scores: Tensor) -> None:
        cfg = self.cfg
        assert self.epoch is not None
        in_range = cfg.modulation_starts <= self.epoch <= cfg.modulation_ends
        active = self.allowed().to(scores.device) & in_range
        k = Fn.ogm_coefficients(scores, cfg.alpha)  # (M,) 1 except the dominant
        self._dominant = torch.arange(len(k), device=k.device) == torch.argmax(scores)
        self._active = active
        self._scale = torch.where(active, k, torch.ones_like(k))
        regulated = self._dominant & active
        self._record(scores, Fn.score_gaps(scores), torch.zeros_like(scores), regulated)
        ratios = Fn.ogm_ratios(scores)
        noised = self._noised_modalities()
        for i, mod in enumerate(self.modalities):
            self._metrics[f"coeff.{mod}"] = self._scale[i]
            self._metrics[f"ratio.{mod}"] = ratios[i]
            if self.ge:
                self._metrics[f"noise.{mod}"] = noised[i].float()

    def _noised_modalities(self) -> Tensor:
        """(M,) bool: the encoders whose conv weights get GE noise this step."""
        assert self._active is not None and self._dominant is not None
        if not self.ge:
            return torch.zeros_like(self._active)
        if self.cfg.resolved_variant == "paper":
            return self._active & self._dominant
        return self._active.clone()

    def _update(self) -> GradientUpdate:
        assert self._scale is not None
        noise_std = self._noise_std() if self.ge else None
        return GradientUpdate(
            scale=self._scale.to(self.device),
            scale_conv_only=True,
            noise_std=noise_std,
            noise_seed=self._noise_seed(),
            stat=self.stat,
        )

    def _noise_std(self) -> Tensor:
        """(P,) std(g) + 1e-8 of each targeted conv weight, 0 elsewhere."""
        moments = sum(param_moments(v) for v in self.views)  # (P, 2) float64
        assert isinstance(moments, Tensor)
        if self.partial:
            all_reduce_sum_(moments, self.group)
        numel = self.groups.table("numel", self.device)
        conv = self.groups.table("conv_weight", self.device)
        modality = self.groups.table("modality", self.device)
        noised = self._noised_modalities().to(self.device)
        # the noised modalities play the role of the "dominant" set in ge_noise_targets
        targets = ge_noise_targets(conv, modality, noised, "dominant")
        return ge_noise_std(moments[:, 0], moments[:, 1], numel, targets)

    def _noise_seed(self) -> int:
        rank = self.rank if self.partial else 0  # full gradients: the same noise on every rank
        mixed = self.cfg.noise_seed * 0x9E3779B1 + self.step * 0x85EBCA6B + rank * 0xC2B2AE35
        return mixed % (2**31 - 1)

    @classmethod
    def audit_step(
        cls,
        record: Mapping[str, Any],
        modalities: Sequence[str],
        cfg: RegulatorConfig,
        window: Mapping[str, bool] | None,
    ) -> list[str]:
        """k from the logged scores, modulation where the epoch range and schedule allow, the
        dominant (highest score, first on a tie) regulated; GE noise where the variant says."""
        problems = []
        where = f"step {record['step']}"
        scores = torch.tensor([float(record[f"score.{m}"]) for m in modalities])
        k = Fn.ogm_coefficients(scores, cfg.alpha).tolist()
        dominant = int(torch.argmax(scores))
        in_range = cfg.modulation_starts <= int(record["epoch"]) <= cfg.modulation_ends
        for i, m in enumerate(modalities):
            if window is None:
                continue
            active = in_range and schedule_allows(cfg.resolved_schedule, window[m])
            expected_k = k[i] if active else 1.0
            if not _close(float(record[f"coeff.{m}"]), expected_k):
                problems.append(
                    f"{where}: coeff.{m}={record[f'coeff.{m}']}, OGM gives {expected_k}"
                )
            if bool(float(record[f"regulated.{m}"])) != (active and i == dominant):
                problems.append(f"{where}: regulated.{m}={record[f'regulated.{m}']}, OGM disagrees")
            if cls.ge:
                noised = active and (cfg.resolved_variant != "paper" or i == dominant)
                if bool(float(record[f"noise.{m}"])) != noised:
                    problems.append(
                        f"{where}: noise.{m}={record[f'noise.{m}']}, OGM-GE gives {noised}"
                    )
        return problems


class OGMGERegulator(OGMRegulator):
    name = "ogm_ge"
    variants = ("paper", "official")
    default_variant = "official"
    ge = True


def _close(a: float, b: float, tol: float = 1e-4) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))
