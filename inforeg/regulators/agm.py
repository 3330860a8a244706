"""AGM (Li et al., ICCV 2023): adaptive gradient modulation from Shapley mono outputs.

Per step: each encoder in eval mode and without gradients sees the step's real inputs and one
zeroed sample; with the late-fusion linear head these give every coalition's logits
(`inforeg.functional.agm.coalition_logits`, the full one the training forward's), the Shapley
mono outputs, their mean NLL scores over the global batch, and ``k_m = exp(alpha min(optimal_m -
ratio_m, cap))`` against the running mean scores of all of training before this step. In the
modulation epochs (and where the schedule allows m) every gradient of encoder m is scaled by
``k_m`` after the one backward (the authors scale through backward hooks on the mono outputs;
docs/methods.md says what differs). The running means and the step count are checkpointed.

Then, at every step (as the code, whatever the modulation epochs), the authors' conditional clip
(``regulator.agm_clip``): the abs-max of the head weight's gradient (per modality's input
columns) and the sum of g^2 of every gradient of the model after the scaling, all-reduced over
the ZeRO partitions (MAX and SUM), give `clip_scale`, which multiplies every gradient (encoders,
head, the rest) on device, without a host sync.

The inputs are captured by forward pre-hooks on the encoders (`inforeg.regulators.capture`; the
regulator needs ``build_regulator(..., encoders=model.encoders)``), a reference, no copy; the
clip needs every gradient of the model (``model_gradients=``, `inforeg.kernels.ModelGradients`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from inforeg import functional as Fn
from inforeg.functional.agm import (
    agm_coefficients,
    agm_score_sums,
    clip_scale,
    coalition_logits,
    mono_logits,
    running_mean_update,
    shapley_matrix,
)
from inforeg.kernels import GradientUpdate, head_abs_max, model_sum_squares, scale_model_
from inforeg.model import ModelOutput
from inforeg.regulators.base import Regulator, all_reduce_sum_, schedule_allows
from inforeg.regulators.capture import InputCapture

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig


class AGMRegulator(Regulator):
    name = "agm"
    min_modalities = 2
    variants = ("official",)
    default_variant = "official"
    needs_encoders = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.capture = InputCapture(self.encoder_modules, self.modalities, self.name)
        self.running = torch.zeros(len(self.modalities), dtype=torch.float64, device=self.device)
        self.matrix = shapley_matrix(len(self.modalities)).to(self.device)
        self._scale: Tensor | None = None
        self._columns: Tensor | None = None  # (D,) long: the modality of each head input column
        if self.cfg.agm_clip and self.model_gradients is None:
            raise ValueError(
                "regulator.agm_clip: AGM's clip scales every gradient of the model: build it "
                "with build_regulator(..., model_gradients=...) (launch.zero.ZeroGradients.model, "
                "or ModelGradients.of_model for a plain model), or set regulator.agm_clip=false"
            )

    @torch.no_grad()
    def _masked_features(self) -> tuple[list[Tensor], list[Tensor]]:
        """Eval-mode features of the step's inputs and of one zeroed sample, per encoder."""
        inputs = self.capture.taken()
        real, zero = [], []
        with self.capture.own_forwards():
            for m, enc in self.capture.encoders.items():
                was_training = enc.training
                enc.eval()
                x = inputs[m]
                real.append(enc(x).float())
                zero.append(enc(torch.zeros_like(x[:1])).float()[0])
                enc.train(was_training)
        return real, zero

    def _decide(self, scores: Tensor) -> None:
        raise AssertionError("AGM decides from its mono outputs")

    def _objective(
        self,
        output: ModelOutput,
        labels: Tensor,
        uni: dict[str, Tensor],
        scores: Tensor,
        joint: Tensor,
    ) -> Tensor:
        assert self.epoch is not None
        real, zero = self._masked_features()
        if self._columns is None:
            dims = torch.tensor([h.shape[-1] for h in real])  # built on the host, once
            columns = torch.repeat_interleave(torch.arange(len(real)), dims)
            self._columns = columns.to(self.device)
        coalitions = coalition_logits(real, zero, self.head.weight, self.head.bias, output.logits)
        sums = agm_score_sums(mono_logits(coalitions, self.matrix), labels).double()
        count = torch.full((1,), float(labels.shape[0]), dtype=torch.float64, device=sums.device)
        packed = all_reduce_sum_(torch.cat([sums, count]), self.group)
        mono_scores = (packed[:-1] / packed[-1]).float()  # mean NLL, lower is better
        cfg = self.cfg
        before = self.running.clone()
        k = agm_coefficients(mono_scores, before, cfg.agm_alpha, cfg.agm_cap)
        self.running = running_mean_update(self.running, mono_scores.double(), self.step + 1)
        in_range = cfg.modulation_starts <= self.epoch <= cfg.agm_modulation_ends
        active = self.allowed().to(k.device) & in_range
        self._scale = torch.where(active, k, torch.ones_like(k))
        # score.m: minus the NLL, higher = better as for the other methods
        self._record(-mono_scores, Fn.score_gaps(-mono_scores), k, active)
        for i, mod in enumerate(self.modalities):
            self._metrics[f"running.{mod}"] = before[i]
            self._metrics[f"coeff.{mod}"] = self._scale[i]
        if cfg.unimodal_loss:
            joint = joint + sum(torch.nn.functional.cross_entropy(z, labels) for z in uni.values())
        return joint

    def _update(self) -> GradientUpdate:
        assert self._scale is not None
        return GradientUpdate(scale=self._scale.to(self.device), stat=self.stat)

    def on_gradients(self) -> None:
        super().on_gradients()  # k on the encoders' gradients: the fused pass
        if self.cfg.agm_clip:
            self._clip()

    def _clip(self) -> None:
        """The code's clip, after the scaling: every gradient times `clip_scale` of the head
        weight gradient's abs-max and the whole model's norm (both over every partition)."""
        grads, columns = self.model_gradients, self._columns
        assert grads is not None and columns is not None
        tensors = grads.tensors()  # this step's gradient buffers
        sumsq = model_sum_squares(tensors).view(1)  # this rank's part
        head = head_abs_max(grads, columns, len(self.modalities))  # (M,) this rank's part
        if self.partial:
            all_reduce_sum_(sumsq, self.group)
            all_reduce_max_(head, self.group)
        norm = sumsq[0].sqrt()
        cfg = self.cfg
        factor = clip_scale(head.max(), norm, cfg.agm_clip_threshold, cfg.agm_clip_norm)
        scale_model_(tensors, factor)
        for i, mod in enumerate(self.modalities):
            # model-wide values written under every modality (the records are per modality)
            self._metrics[f"head_absmax.{mod}"] = head[i]
            self._metrics[f"grad_norm.{mod}"] = norm
            self._metrics[f"clip.{mod}"] = factor

    def _method_state(self) -> dict[str, Any]:
        return {"running": self.running.clone()}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        if "running" in state:
            self.running = state["running"].to(self.device, torch.float64).clone()

    @classmethod
    def audit_step(
        cls,
        record: Mapping[str, Any],
        modalities: Sequence[str],
        cfg: RegulatorConfig,
        window: Mapping[str, bool] | None,
    ) -> list[str]:
        """k (logged as alpha) from the logged scores (minus the mono NLLs) and running means;
        applied (coeff) and regulated in the modulation epochs where the schedule allows."""
        problems = []
        where = f"step {record['step']}"
        nll = torch.tensor([-float(record[f"score.{m}"]) for m in modalities])
        running = torch.tensor([float(record[f"running.{m}"]) for m in modalities])
        k = agm_coefficients(nll, running, cfg.agm_alpha, cfg.agm_cap).tolist()
        in_range = cfg.modulation_starts <= int(record["epoch"]) <= cfg.agm_modulation_ends
        for i, m in enumerate(modalities):
            if abs(float(record[f"alpha.{m}"]) - k[i]) > 1e-4 * max(1.0, abs(k[i])):
                problems.append(f"{where}: alpha.{m}={record[f'alpha.{m}']}, AGM gives {k[i]}")
            if window is None:
                continue
            active = in_range and schedule_allows(cfg.schedule or "always", window[m])
            expected = k[i] if active else 1.0
            if abs(float(record[f"coeff.{m}"]) - expected) > 1e-4 * max(1.0, abs(expected)):
                problems.append(f"{where}: coeff.{m}={record[f'coeff.{m}']}, AGM gives {expected}")
            if bool(float(record[f"regulated.{m}"])) != active:
                problems.append(
                    f"{where}: regulated.{m}={record[f'regulated.{m}']}, AGM gives {active}"
                )
        return problems + cls._audit_clip(record, modalities, cfg)

    @staticmethod
    def _audit_clip(
        record: Mapping[str, Any], modalities: Sequence[str], cfg: RegulatorConfig
    ) -> list[str]:
        """clip.m (the factor on every gradient) from the logged head abs-maxima and norm."""
        where = f"step {record['step']}"
        if not cfg.agm_clip:
            return [f"{where}: clip.{m} logged with agm_clip off" for m in modalities
                    if f"clip.{m}" in record]  # fmt: skip
        keys = [f"{k}.{m}" for k in ("head_absmax", "grad_norm", "clip") for m in modalities]
        missing = [k for k in keys if record.get(k) is None]
        if missing:
            return [f"{where}: AGM's clip fields missing: {missing}"]
        head = max(float(record[f"head_absmax.{m}"]) for m in modalities)
        norms = {float(record[f"grad_norm.{m}"]) for m in modalities}
        if len(norms) != 1:
            return [f"{where}: grad_norm differs between modalities: {sorted(norms)}"]
        expected = clip_scale(
            torch.tensor(head), torch.tensor(norms.pop()), cfg.agm_clip_threshold, cfg.agm_clip_norm
        ).item()
        return [
            f"{where}: clip.{m}={record[f'clip.{m}']}, AGM's clip gives {expected}"
            for m in modalities
            if abs(float(record[f"clip.{m}"]) - expected) > 1e-4 * expected
        ]


def all_reduce_max_(t: Tensor, group: Any = None) -> Tensor:
    """In-place MAX across the data-parallel group when torch.distributed is initialized."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t
