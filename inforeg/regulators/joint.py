"""Joint training: no regulation; the scores, gaps and information traces are still recorded,
so a joint run shows what InfoReg would have seen (paper Fig. 1's joint curves)."""

from __future__ import annotations

import torch
from torch import Tensor

from inforeg import functional as Fn
from inforeg.kernels import GradientUpdate
from inforeg.regulators.base import Regulator


class JointRegulator(Regulator):
    name = "joint"

    def _decide(self, scores: Tensor) -> None:
        gaps = Fn.score_gaps(scores)
        zeros = torch.zeros_like(scores)
        self._record(scores, gaps, zeros, zeros.bool())

    def _update(self) -> GradientUpdate:
        return GradientUpdate(stat=self.stat)  # reads g once for the trace; changes nothing
