"""PMR (Fan et al., CVPR 2023): prototypical modal rebalance. Per step, each modality's
features are classified by their distance to per-class prototypes (class means of the
features); the modality whose prototype classifier is weaker gets ``alpha * CE(-d_m, y)`` added
to the joint loss (`inforeg.functional.pmr`), which pulls its features toward its own class
prototypes.

Prototypes, the closest form this trainer's loop allows (docs/methods.md, "PMR"): the authors
estimate them at every epoch start with a no-grad eval-mode pass over the first tenth of the
training loader; a regulator sees no batches but the step's own outputs, so ours are the class
means of the training step features (detached, all-reduced every step so every rank holds the
same) over the whole previous epoch, combined with the previous prototypes by the EMA
(``pmr_momentum``); in epoch 0, which has no previous epoch, the class means of epoch 0's steps so
far (this one included). No extra forward at all. The prototypes and the running sums are in
the regulator's state, so a resumed run is bit-identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from inforeg import functional as Fn
from inforeg.functional.pmr import (
    ema_prototypes,
    pmr_coefficients,
    pmr_loss,
    prototype_logits,
    prototype_score_sums,
    prototype_sums,
    prototypes_from_sums,
)
from inforeg.kernels import GradientUpdate
from inforeg.model import ModelOutput
from inforeg.regulators.base import Regulator, all_reduce_sum_, schedule_allows

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig


class PMRRegulator(Regulator):
    name = "pmr"
    min_modalities = 2
    max_modalities = 2
    variants = ("official",)
    default_variant = "official"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prototypes: list[Tensor] | None = None  # per modality (C, D_m), from past epochs
        self.sums: list[Tensor] | None = None  # this epoch's per-class feature sums
        self.counts: Tensor | None = None  # (C,) this epoch's per-class sample counts

    def on_epoch_start(self, epoch: int) -> None:
        fresh = self.epoch != epoch
        super().on_epoch_start(epoch)
        if fresh:
            self.sums, self.counts = None, None

    def on_epoch_end(self, epoch: int) -> dict[str, Any]:
        if self.epoch == epoch and self.sums is not None and self.counts is not None:
            old = self.prototypes
            new = [
                prototypes_from_sums(s, self.counts, None if old is None else old[i])
                for i, s in enumerate(self.sums)
            ]
            momentum = self.cfg.pmr_momentum
            self.prototypes = [
                ema_prototypes(n, None if old is None else old[i], momentum)
                for i, n in enumerate(new)
            ]
        return super().on_epoch_end(epoch)

    def _batch_sums(self, output: ModelOutput, labels: Tensor) -> list[tuple[Tensor, Tensor]]:
        classes = self.head.out_features
        return [prototype_sums(output.features[m], labels, classes) for m in self.modalities]

    def _accumulate(self, output: ModelOutput, labels: Tensor) -> None:
        classes = self.head.out_features
        pieces = self._batch_sums(output, labels)
        shapes = [s.shape for s, _ in pieces]
        packed = torch.cat([s.reshape(-1) for s, _ in pieces] + [pieces[0][1]])
        all_reduce_sum_(packed, self.group)  # the global batch: identical on every rank
        parts = packed.split([s.numel() for s in shapes] + [classes])
        batch_sums = [p.view(shape) for p, shape in zip(parts, shapes, strict=False)]
        if self.sums is None or self.counts is None:
            self.sums = [torch.zeros_like(s) for s in batch_sums]
            self.counts = torch.zeros_like(parts[-1])
        for acc, s in zip(self.sums, batch_sums, strict=True):
            acc += s
        self.counts += parts[-1]

    def _objective(
        self,
        output: ModelOutput,
        labels: Tensor,
        uni: dict[str, Tensor],
        scores: Tensor,
        joint: Tensor,
    ) -> Tensor:
        assert self.epoch is not None
        protos = self.prototypes
        estimated = protos is not None or self.counts is not None
        if protos is None:  # epoch 0: this epoch's class means of the steps before this one
            if self.sums is None or self.counts is None:
                protos = [torch.zeros_like(s) for s, _ in self._batch_sums(output, labels)]
            else:
                protos = [prototypes_from_sums(s, self.counts) for s in self.sums]
        self._accumulate(output, labels)
        logits = [
            prototype_logits(
                output.features[m].float() if estimated else output.features[m].detach().float(),
                c,
            )
            for m, c in zip(self.modalities, protos, strict=True)
        ]
        sums = prototype_score_sums(logits, labels).double()
        count = torch.full((1,), float(labels.shape[0]), dtype=torch.float64, device=sums.device)
        packed = all_reduce_sum_(torch.cat([sums, count]), self.group)
        proto_scores = (packed[:-1] / packed[-1]).float()  # mean softmax(-d)[y]: same ratio
        cfg = self.cfg
        in_range = cfg.modulation_starts <= self.epoch <= cfg.pmr_modulation_ends
        active = self.allowed().to(proto_scores.device) & in_range
        active = active & estimated  # no prototype estimate yet (the run's first step): none
        coef = pmr_coefficients(proto_scores, cfg.pmr_alpha) * active
        self._record(proto_scores, Fn.score_gaps(proto_scores), coef, coef > 0)
        loss = pmr_loss(joint, logits, labels, coef)
        if cfg.unimodal_loss:
            loss = loss + sum(torch.nn.functional.cross_entropy(z, labels) for z in uni.values())
        return loss

    def _update(self) -> GradientUpdate:
        return GradientUpdate(stat=self.stat)  # PMR acts through the loss

    def _method_state(self) -> dict[str, Any]:
        def cloned(ts: list[Tensor] | None) -> list[Tensor] | None:
            return None if ts is None else [t.clone() for t in ts]

        return {
            "prototypes": cloned(self.prototypes),
            "sums": cloned(self.sums),
            "counts": None if self.counts is None else self.counts.clone(),
        }

    def _load_method_state(self, state: dict[str, Any]) -> None:
        def moved(ts: list[Tensor] | None) -> list[Tensor] | None:
            return None if ts is None else [t.to(self.device).clone() for t in ts]

        self.prototypes = moved(state.get("prototypes"))
        self.sums = moved(state.get("sums"))
        counts = state.get("counts")
        self.counts = None if counts is None else counts.to(self.device).clone()

    @classmethod
    def audit_step(
        cls,
        record: Mapping[str, Any],
        modalities: Sequence[str],
        cfg: RegulatorConfig,
        window: Mapping[str, bool] | None,
    ) -> list[str]:
        """The prototype loss weights (logged as alpha) from the logged prototype scores, in the
        modulation epochs where the schedule allows; regulated where the weight is > 0."""
        if window is None:
            return []
        problems = []
        where = f"step {record['step']}"
        scores = torch.tensor([float(record[f"score.{m}"]) for m in modalities])
        coef = pmr_coefficients(scores, cfg.pmr_alpha).tolist()
        in_range = cfg.modulation_starts <= int(record["epoch"]) <= cfg.pmr_modulation_ends
        for i, m in enumerate(modalities):
            active = in_range and schedule_allows(cfg.schedule or "always", window[m])
            expected = coef[i] if active else 0.0
            if abs(float(record[f"alpha.{m}"]) - expected) > 1e-6:
                problems.append(f"{where}: alpha.{m}={record[f'alpha.{m}']}, PMR gives {expected}")
            if bool(float(record[f"regulated.{m}"])) != (expected > 0):
                problems.append(f"{where}: regulated.{m}={record[f'regulated.{m}']}, PMR disagrees")
        return problems
