"""G-Blending (Wang, Tran, Feiszli, CVPR 2020): the loss is a weighted sum of each modality
head's and the fused head's cross-entropies, the weights re-estimated every ``super_epoch``
epochs from how each head's validation loss and overfitting gap moved (`inforeg.functional.
gblending`: ``w = |G / O^2|``, normalised).

The closest form this trainer allows (docs/methods.md, "G-Blending"): the authors'
(BalanceBenchmark's online method) trains M + 1 separate copies for each estimate; ours
measures the K = M + 1 heads of the jointly trained model itself: ``T`` is the sum over an
epoch's steps of each head's training loss (computed anyway), ``V`` the sum over the evaluation
batches of each head's loss in the trainer's end-of-epoch evaluation (`on_eval_batch`, no
extra forward). Window n (epochs ``nS .. (n+1)S - 1``) gives the weights used in window n + 1;
the first window uses ``1/K``. Where the schedule does not allow modality m, its head keeps
``1/K``. Weights, the window's first-epoch losses and the running sums are checkpointed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from inforeg import functional as Fn
from inforeg.functional.gblending import blended_loss, blending_weights
from inforeg.kernels import GradientUpdate
from inforeg.model import ModelOutput
from inforeg.regulators.base import Regulator, all_reduce_sum_, schedule_allows

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig

STATE = ("weights", "t_sum", "v_sum", "t_last", "t_pre", "v_pre")


class GBlendingRegulator(Regulator):
    name = "gblending"
    min_modalities = 2
    variants = ("official",)
    default_variant = "official"

    own_loss = "trains on its own weighted sum of the unimodal and fused losses"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        k = len(self.modalities) + 1
        zeros = torch.zeros(k, dtype=torch.float64, device=self.device)
        self.weights = torch.full((k,), 1.0 / k, dtype=torch.float64, device=self.device)
        self.t_sum = zeros.clone()  # this epoch's summed step losses per head (local)
        self.v_sum = zeros.clone()  # the last evaluation's summed batch losses (local)
        self.t_last = zeros.clone()  # the last finished epoch's T (global)
        self.t_pre = zeros.clone()  # the window's first epoch's T and V (global)
        self.v_pre = zeros.clone()

    def head_losses(self, output: ModelOutput, labels: Tensor) -> Tensor:
        """(K,) each modality head's CE, then the fused head's."""
        uni = Fn.unimodal_logits(output.features, self.head)
        losses = [F.cross_entropy(uni[m], labels) for m in self.modalities]
        return torch.stack([*losses, F.cross_entropy(output.logits.float(), labels)])

    def on_eval_batch(self, output: ModelOutput, labels: Tensor) -> None:
        self.v_sum += self.head_losses(output, labels).detach().double()

    def on_epoch_start(self, epoch: int) -> None:
        fresh = self.epoch != epoch
        super().on_epoch_start(epoch)
        if not fresh or epoch == 0:
            return
        last = epoch - 1  # the finished epoch whose T and (now all-reduced) V are known
        v_last = all_reduce_sum_(self.v_sum.clone(), self.group)
        span = self.cfg.gblending_super_epoch
        if last % span == 0:
            self.t_pre, self.v_pre = self.t_last.clone(), v_last
        if last % span == span - 1:
            self.weights = blending_weights(
                self.t_pre, self.t_last, self.v_pre, v_last, fallback=self.weights
            ).double()
        self.v_sum.zero_()
        self.t_sum.zero_()

    def on_epoch_end(self, epoch: int) -> dict[str, Any]:
        if self.epoch == epoch:
            total = all_reduce_sum_(self.t_sum.clone(), self.group)
            world = dist.get_world_size(self.group) if dist.is_initialized() else 1
            self.t_last = total / world  # sum over steps of the global batch's mean loss
            self.v_sum.zero_()  # the evaluation that follows fills it
        return super().on_epoch_end(epoch)

    def _decide(self, scores: Tensor) -> None:
        raise AssertionError("G-Blending decides from its weights")

    def _objective(
        self,
        output: ModelOutput,
        labels: Tensor,
        uni: dict[str, Tensor],
        scores: Tensor,
        joint: Tensor,
    ) -> Tensor:
        assert self.epoch is not None
        losses = self.head_losses(output, labels)
        self.t_sum += losses.detach().double()
        k = len(self.modalities) + 1
        estimated = self.epoch >= self.cfg.gblending_super_epoch
        active = self.allowed().to(self.device) & estimated
        uniform = torch.full_like(self.weights, 1.0 / k)
        applied = torch.where(torch.cat([active, active.new_ones(1)]), self.weights, uniform)
        self._record(scores, Fn.score_gaps(scores), applied[:-1].float(), active)
        for i, mod in enumerate(self.modalities):
            self._metrics[f"blend.{mod}"] = self.weights[i]
            self._metrics[f"fused_weight.{mod}"] = applied[-1]
        return blended_loss(losses, applied)

    def _update(self) -> GradientUpdate:
        return GradientUpdate(stat=self.stat)  # G-Blending acts through the loss

    def _method_state(self) -> dict[str, Any]:
        return {key: getattr(self, key).clone() for key in STATE}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        for key in STATE:
            if key in state:
                setattr(self, key, state[key].to(self.device, torch.float64).clone())

    @classmethod
    def audit_step(
        cls,
        record: Mapping[str, Any],
        modalities: Sequence[str],
        cfg: RegulatorConfig,
        window: Mapping[str, bool] | None,
    ) -> list[str]:
        """The estimated weights (blend.m and the fused one) sum to 1; the applied weight
        (alpha) is the estimate from the second window on where the schedule allows, else 1/K."""
        problems = []
        where = f"step {record['step']}"
        k = len(modalities) + 1
        blend = [float(record[f"blend.{m}"]) for m in modalities]
        fused = float(record[f"fused_weight.{modalities[0]}"])
        if abs(sum(blend) + fused - 1) > 1e-4 and int(record["epoch"]) >= cfg.gblending_super_epoch:
            problems.append(f"{where}: blending weights sum to {sum(blend) + fused}, not 1")
        if window is None:
            return problems
        estimated = int(record["epoch"]) >= cfg.gblending_super_epoch
        for i, m in enumerate(modalities):
            active = estimated and schedule_allows(cfg.schedule or "always", window[m])
            expected = blend[i] if active else 1.0 / k
            if abs(float(record[f"alpha.{m}"]) - expected) > 1e-5:
                problems.append(
                    f"{where}: alpha.{m}={record[f'alpha.{m}']}, G-Blending gives {expected}"
                )
            if bool(float(record[f"regulated.{m}"])) != active:
                problems.append(
                    f"{where}: regulated.{m}={record[f'regulated.{m}']}, G-Blending gives {active}"
                )
        return problems
