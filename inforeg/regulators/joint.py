"""Joint training: no regulation; the scores, gaps and information traces are still recorded,
so a joint run shows what InfoReg would have seen (paper Fig. 1's joint curves)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from inforeg import functional as Fn
from inforeg.kernels import GradientUpdate
from inforeg.regulators.base import Regulator

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig


class JointRegulator(Regulator):
    name = "joint"
    variant_sets_window = True

    def _decide(self, scores: Tensor) -> None:
        gaps = Fn.score_gaps(scores)
        zeros = torch.zeros_like(scores)
        self._record(scores, gaps, zeros, zeros.bool())

    def _update(self) -> GradientUpdate:
        return GradientUpdate(stat=self.stat)  # reads g once for the trace; changes nothing

    @classmethod
    def audit_step(
        cls,
        record: Mapping[str, Any],
        modalities: Sequence[str],
        cfg: RegulatorConfig,
        window: Mapping[str, bool] | None,
    ) -> list[str]:
        """Joint training never regulates."""
        if any(float(record[f"regulated.{m}"]) != 0 for m in modalities):
            return [f"step {record['step']}: joint training never regulates, but regulated is set"]
        return []
