"""OGM / OGM-GE (CVPR 2022): slow down the dominant modality's conv weights.

Per step in epochs ``modulation_starts..modulation_ends``: from prob_sum scores, the dominant
modality's conv-weight gradients become ``k g`` with ``k = 1 - tanh(alpha rho)``
(`inforeg.functional.ogm_coefficients`), plus ``N(0, std(g) + 1e-8)`` per tensor with GE: on the
dominant modality's conv weights (paper, METHOD.md) or on every modality's conv weights (the
official OGM-GE code, ``variant: official``). std(g) is the unbiased std of the whole parameter
tensor: with partitioned gradients its moments are all-reduced across ranks first, so a tensor
split across ranks gets the same std as unsplit. The noise is drawn from a generator seeded by
(noise_seed, step, rank for partitioned gradients), never from the global RNG: ranks holding
full gradients draw identical noise and keep identical parameters, and a resumed run draws the
same noise as an uninterrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from inforeg import functional as Fn
from inforeg.kernels import GradientUpdate, param_moments
from inforeg.regulators.base import Regulator, all_reduce_sum_

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig


class OGMGERegulator(Regulator):
    name = "ogm_ge"
    min_modalities = 2

    @classmethod
    def check_config(cls, cfg: RegulatorConfig) -> None:
        if cfg.score is not None and cfg.score != "prob_sum":
            raise ValueError("regulator.score: ogm_ge is defined on prob_sum scores")

    _scale: Tensor | None = None  # (M,) this step's k (ones outside the modulation epochs)
    _dominant: Tensor | None = None  # (M,) bool, the highest score (first on a tie)
    _active = False  # this epoch is in modulation_starts..modulation_ends

    def _decide(self, scores: Tensor) -> None:
        cfg = self.cfg
        assert self.epoch is not None
        self._active = cfg.modulation_starts <= self.epoch <= cfg.modulation_ends
        k = Fn.ogm_coefficients(scores, cfg.alpha)  # (M,) 1 except the dominant modality
        self._dominant = torch.arange(len(k), device=k.device) == torch.argmax(scores)
        self._scale = k if self._active else torch.ones_like(k)
        regulated = self._dominant & self._active
        self._record(scores, Fn.score_gaps(scores), torch.zeros_like(scores), regulated)
        ratios = Fn.ogm_ratios(scores)
        for i, mod in enumerate(self.modalities):
            self._metrics[f"coeff.{mod}"] = self._scale[i]
            self._metrics[f"ratio.{mod}"] = ratios[i]

    def _update(self) -> GradientUpdate:
        assert self._scale is not None and self._dominant is not None
        if not self._active:
            return GradientUpdate(stat=self.stat)
        noise_std = self._noise_std() if self.cfg.ge else None
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
        std = Fn.std_from_moments(moments[:, 0], moments[:, 1], numel) + 1e-8
        target = self.groups.table("conv_weight", self.device)
        if self.cfg.variant == "paper":  # the dominant encoder only
            assert self._dominant is not None
            modality = self.groups.table("modality", self.device)
            target = target & self._dominant.to(self.device)[modality]
        return torch.where(target, std, torch.zeros_like(std)).float()

    def _noise_seed(self) -> int:
        rank = self.rank if self.partial else 0  # full gradients: the same noise on every rank
        mixed = self.cfg.noise_seed * 0x9E3779B1 + self.step * 0x85EBCA6B + rank * 0xC2B2AE35
        return mixed % (2**31 - 1)
