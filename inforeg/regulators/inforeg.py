"""InfoReg (CVPR 2025): in a modality's prime learning window, pull its encoder toward the
weights it had at the start of the epoch, harder the further it is ahead of the others.

Per step: scores (paper: minus the mean NLL; official: batch sum of true-class probabilities)
of the global batch, their gaps (Eq. 9-10), alpha (paper Eq. 16, or the official 0.95 / 0.1
coefficients), and ``g_m <- g_m + alpha_m (w_m - anchor_m)`` for every modality with a positive
gap that the schedule allows (default ``window``: its window is open; ``always`` / ``outside``
for Table 4's ablations). Per epoch: the window test (Eq. 11, or the official moving-average test
on the first modality's trace).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from inforeg import functional as Fn
from inforeg.kernels import GradientUpdate
from inforeg.regulators.base import Regulator, schedule_allows

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig


class InfoRegRegulator(Regulator):
    name = "inforeg"
    needs_anchor = True
    variant_sets_window = True
    default_schedule = "window"

    _alpha: Tensor | None = None  # (M,) applied pull of this step (0 where not regulated)

    def _decide(self, scores: Tensor) -> None:
        gaps = Fn.score_gaps(scores)
        alpha = self.alpha_of(gaps, self.cfg)
        regulated = self.allowed().to(scores.device) & (gaps > 0)
        self._alpha = alpha * regulated  # (M,)
        self._record(scores, gaps, alpha, regulated)

    @staticmethod
    def alpha_of(gaps: Tensor, cfg: RegulatorConfig) -> Tensor:
        """alpha per modality from the gaps: the paper's Eq. 16 or the official coefficients."""
        if cfg.resolved_variant == "official":
            return Fn.official_alpha(gaps, cfg.official_lead_coef, cfg.official_other_coef)
        return Fn.regulation_alpha(gaps, cfg.beta)

    def _update(self) -> GradientUpdate:
        assert self._alpha is not None
        return GradientUpdate(alpha=self._alpha.to(self.device), stat=self.stat)

    @classmethod
    def audit_step(
        cls,
        record: Mapping[str, Any],
        modalities: Sequence[str],
        cfg: RegulatorConfig,
        window: Mapping[str, bool] | None,
    ) -> list[str]:
        """alpha from the logged gaps; regulated where the schedule allows and the gap > 0."""
        problems = []
        where = f"step {record['step']}"
        gaps = torch.tensor([float(record[f"gap.{m}"]) for m in modalities], dtype=torch.float64)
        alpha = cls.alpha_of(gaps, cfg).tolist()
        for i, m in enumerate(modalities):
            if abs(float(record[f"alpha.{m}"]) - alpha[i]) > 1e-4 * max(1.0, abs(alpha[i])):
                problems.append(
                    f"{where}: alpha.{m}={record[f'alpha.{m}']}, METHOD.md gives {alpha[i]}"
                )
            if window is None:
                continue  # the run stopped before this epoch's record
            expected = schedule_allows(cfg.resolved_schedule, window[m]) and gaps[i] > 0
            if bool(float(record[f"regulated.{m}"])) != bool(expected):
                problems.append(
                    f"{where}: regulated.{m}={record[f'regulated.{m}']} but window={window[m]}, "
                    f"gap={record[f'gap.{m}']}, schedule={cfg.resolved_schedule}"
                )
        return problems
