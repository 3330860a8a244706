"""InfoReg (CVPR 2025): in a modality's prime learning window, pull its encoder toward the
weights it had at the start of the epoch, harder the further it is ahead of the others.

Per step: scores (paper: minus the mean NLL; official: batch sum of true-class probabilities)
of the global batch, their gaps (Eq. 9-10), alpha (paper Eq. 16, or the official 0.95 / 0.1
coefficients), and ``g_m <- g_m + alpha_m (w_m - anchor_m)`` for every modality with a positive
gap whose window is open (`RegulatorConfig.schedule` for Table 4's ablations). Per epoch: the
window test (Eq. 11, or the official moving-average test on the first modality's trace).
"""

from __future__ import annotations

from torch import Tensor

from inforeg import functional as Fn
from inforeg.kernels import GradientUpdate
from inforeg.regulators.base import Regulator


class InfoRegRegulator(Regulator):
    name = "inforeg"
    needs_anchor = True

    _alpha: Tensor | None = None  # (M,) applied pull of this step (0 where not regulated)

    def _decide(self, scores: Tensor) -> None:
        cfg = self.cfg
        gaps = Fn.score_gaps(scores)
        if cfg.variant == "official":
            alpha = Fn.official_alpha(gaps, cfg.official_lead_coef, cfg.official_other_coef)
        else:
            alpha = Fn.regulation_alpha(gaps, cfg.beta)
        window = self._window.to(scores.device)
        if cfg.schedule == "always":
            window = window | True
        elif cfg.schedule == "outside_window":
            window = ~window
        regulated = window & (gaps > 0)
        self._alpha = alpha * regulated  # (M,)
        self._record(scores, gaps, alpha, regulated)

    def _update(self) -> GradientUpdate:
        assert self._alpha is not None
        return GradientUpdate(alpha=self._alpha.to(self.device), stat=self.stat)
