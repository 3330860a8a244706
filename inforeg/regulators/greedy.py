"""Greedy (Wu et al., ICML 2022): balance the conditional learning speeds of the two branches,
measured on the MMTM cross-modal modules between them, by re-balancing windows that cut one
modality's cross-modal flow (`inforeg.functional.greedy` has the maths, docs/methods.md
"Greedy" the transcription from nyukat/greedy_multimodal_learning).

Needs ``model.fusion: mmtm`` (`inforeg.mmtm`): the MMTM modules live in ``model.bypass``, their
parameters in `ModalityGroups.bypass` (the shared squeeze layer counts for both modalities).

Per step:
- LOSS: the sum of the branch cross-entropies ``sum_m CE(z_m)`` (the code's ``blend_loss``; no
  fused term); the scores are recorded as by every method.
- GRADIENTS (after backward, before the update; the gradients themselves are left as they are):
  per modality ``sum g^2`` and ``sum w^2`` over its encoder parameters and over its bypass
  parameters from the gradient views (`inforeg.kernels.square_sums`, all-reduced when the views
  are ZeRO partitions), `speed_terms`, then `greedy_step` (``unlocked = epoch >=
  greedy_starting_epoch``), all on device. The new decision writes each MMTM's ``cut`` flags:
  the NEXT step's forward replaces the cared modality's gate by its running average.
- ``regulator.schedule``: the rule runs whatever the schedule; the cut of modality m acts only
  in epochs where the schedule allows m (the flags are rewritten at every epoch start).

Step records: ``regulated.m`` (m's gate was cut in this step's forward), ``cared.m`` (the
decision that step ran under, before the schedule), ``care.m`` (this step's decision, for the
next step), ``window_step.m`` (steps taken in the window caring for m that this step ran in,
this one included; 0 outside) and
``bdr.m`` (``BDR_m`` after this step); `audit_step` recomputes the decision from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from inforeg import functional as Fn
from inforeg.functional.greedy import GreedyState, branch_bias, greedy_step, speed_terms
from inforeg.kernels import GradientUpdate, square_sums
from inforeg.mmtm import MMTM
from inforeg.model import ModelOutput
from inforeg.regulators.base import Regulator, all_reduce_sum_, schedule_allows

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig

STATE = ("speeds", "curation", "caring", "step")


class GreedyRegulator(Regulator):
    name = "greedy"
    min_modalities = 2
    max_modalities = 2
    variants = ("official",)
    default_variant = "official"
    required_fusion = "mmtm"
    own_loss = "trains on the sum of the branch cross-entropies (its definition)"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mmtm = [m for m in self.groups.bypass_modules.values() if isinstance(m, MMTM)]
        if not self.mmtm or not self.groups.bypass:
            raise ValueError(
                "regulator.name: greedy needs MMTM modules between the two encoders "
                "(model.fusion: mmtm); this model has none"
            )
        self.state = GreedyState.initial(len(self.modalities), self.device)
        self._ids = torch.arange(len(self.modalities), device=self.device)

    # ----- the loss and the decision's record ------------------------------------------------
    def _objective(
        self,
        output: ModelOutput,
        labels: Tensor,
        uni: dict[str, Tensor],
        scores: Tensor,
        joint: Tensor,
    ) -> Tensor:
        self._decide(scores)
        loss = sum(F.cross_entropy(z, labels) for z in uni.values())
        assert isinstance(loss, Tensor)
        return loss

    def _decide(self, scores: Tensor) -> None:
        """Record the decision this step's forward ran under (the previous step's)."""
        cut = self.mmtm[0].cut.detach().clone().to(scores.device)
        zeros = torch.zeros_like(scores)
        self._record(scores, Fn.score_gaps(scores), zeros, cut)
        cared = self._cares(self.state)
        for i, mod in enumerate(self.modalities):
            self._metrics[f"cared.{mod}"] = cared[i].float()

    def _update(self) -> GradientUpdate:
        return GradientUpdate(stat=self.stat)  # the information trace; gradients unchanged

    # ----- events ----------------------------------------------------------------------------
    def on_gradients(self) -> None:
        super().on_gradients()
        assert self.epoch is not None
        sums = sum(square_sums(view) for view in self.views)  # (2, 2M) float64
        assert isinstance(sums, Tensor)
        if self.partial:
            all_reduce_sum_(sums, self.group)  # each rank summed its own partition
        m = len(self.modalities)
        terms = speed_terms(sums[0, :m], sums[1, :m], sums[0, m:], sums[1, m:])
        cfg = self.cfg
        cared = self._cares(self.state)  # the window this step ran in
        self.state, _ = greedy_step(
            self.state,
            terms,
            unlocked=self.epoch >= cfg.greedy_starting_epoch,
            epsilon=cfg.greedy_epsilon,
            window=cfg.greedy_window,
        )
        self._apply_cut()
        care = self._cares(self.state)
        bdr = branch_bias(self.state.speeds)
        for i, mod in enumerate(self.modalities):
            self._metrics[f"care.{mod}"] = care[i].float()
            self._metrics[f"window_step.{mod}"] = torch.where(cared[i], self.state.step, 0).float()
            self._metrics[f"bdr.{mod}"] = bdr[i].float()

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._apply_cut()  # this epoch's schedule

    def _cares(self, state: GreedyState) -> Tensor:
        """(M,) bool: the modality a decision cares for (none outside a window)."""
        return state.curation & (state.caring == self._ids)

    def _apply_cut(self) -> None:
        """Write the decision, masked by the schedule, into every MMTM's ``cut`` flags."""
        cut = self._cares(self.state) & self.allowed().to(self.device)
        for module in self.mmtm:
            module.cut.copy_(cut)

    # ----- state -----------------------------------------------------------------------------
    def _method_state(self) -> dict[str, Any]:
        return {key: getattr(self.state, key).clone() for key in STATE}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.state = GreedyState(**{k: state[k].to(self.device).clone() for k in STATE})
        self._apply_cut()

    @classmethod
    def audit_step(
        cls,
        record: Mapping[str, Any],
        modalities: Sequence[str],
        cfg: RegulatorConfig,
        window: Mapping[str, bool] | None,
    ) -> list[str]:
        """The decision after the record's step, from the decision it ran under (``cared``),
        the branch biases (``bdr``) and the window step; the cut applied where the schedule
        allows (`greedy_decision`)."""
        where = f"step {record['step']}"
        problems = []
        expected = greedy_decision(record, modalities, cfg)
        for key, values in expected.items():
            for m, value in zip(modalities, values, strict=True):
                got = float(record[f"{key}.{m}"])
                if got != value:
                    problems.append(f"{where}: {key}.{m}={got}, Greedy gives {value}")
        for m in modalities:
            if window is None:
                continue
            cut = bool(float(record[f"cared.{m}"])) and schedule_allows(
                cfg.resolved_schedule, window[m]
            )
            if bool(float(record[f"regulated.{m}"])) != cut:
                got = record[f"regulated.{m}"]
                problems.append(f"{where}: regulated.{m}={got}, Greedy gives {cut}")
        return problems


def greedy_decision(
    record: Mapping[str, Any], modalities: Sequence[str], cfg: RegulatorConfig
) -> dict[str, list[float]]:
    """``care`` and, for a step inside a window, ``window_step``, recomputed from a step record's
    ``cared``, ``bdr`` and (inside a window) logged ``window_step`` (`greedy_step`'s rule)."""
    cared = [bool(float(record[f"cared.{m}"])) for m in modalities]
    steps = [float(record[f"window_step.{m}"]) for m in modalities]
    bdr = [float(record[f"bdr.{m}"]) for m in modalities]
    none = [0.0] * len(modalities)
    if int(record["epoch"]) < cfg.greedy_starting_epoch:
        return {"care": none, "cared": none, "window_step": none}
    if any(cared):  # inside a window: count, close after the last step
        c = cared.index(True)
        count = [0.0] * len(modalities)
        count[c] = steps[c] if 1 <= steps[c] <= cfg.greedy_window else -1.0
        care = [0.0] * len(modalities)
        care[c] = float(count[c] != cfg.greedy_window)
        return {"care": care, "window_step": count}
    d = bdr[0] - bdr[1]
    care = [0.0] * len(modalities)
    if abs(d) > cfg.greedy_epsilon:
        care[0 if d > 0 else 1] = 1.0
    return {"care": care, "window_step": none}
