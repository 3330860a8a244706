"""MMPareto (Wei & Hu, ICML 2024): per encoder, the multimodal and the unimodal loss's
gradients combined by the two-task min-norm (Pareto) weights when they conflict, (0.5, 0.5)
when they agree, then scaled by gamma (more where the summed gradient is longer).

The loss is ``L_mm + sum_m L_m`` (one engine backward gives ``g = g_mm + g_u`` per encoder).
Before it, inside `loss()`, ``torch.autograd.grad(sum_m L_m, encoder parameters)`` gives
``g_u`` without touching ``.grad`` (so none of DeepSpeed's reduction hooks fire). It cannot
start from the step's own graph: DeepSpeed hooks the engine's outputs (the features) to open its
backward, so a gradient through them would run the engine's backward epilogue. The encoders
therefore run once more on the step's inputs (captured by pre-hooks, `inforeg.regulators.
capture`; same batch, train mode, so the same batch statistics; the BatchNorm running
statistics left as they are: the forward updates copies), and ``sum_m L_m`` of those features
through the head slices is differentiated with respect to the encoder parameters only. ``g_u``
is averaged across ranks with one all-reduce of a parameter-ordered fp32 buffer and read through
each view's plan (`inforeg.kernels.pairs`), so a ZeRO 1/2 partition sees its own slice. After
the backward: per-parameter dots of (g - g_u, g_u), all-reduced when partitioned, per-encoder
`pareto_weights`, `param_factors`, and the combination written into the gradients. A modality the
schedule does not allow keeps ``g`` (the Joint* gradient).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from inforeg import functional as Fn
from inforeg.functional.mmpareto import modality_dots, param_factors, pareto_weights
from inforeg.kernels import GradientUpdate
from inforeg.kernels.pairs import flat_grad, flatten_params, pair_dots, pareto_combine_
from inforeg.model import ModelOutput
from inforeg.regulators.base import Regulator, all_reduce_sum_, schedule_allows
from inforeg.regulators.capture import InputCapture

if TYPE_CHECKING:
    from inforeg.config import RegulatorConfig

DOTS = ("dot_mm", "dot_mu", "dot_uu")


class MMParetoRegulator(Regulator):
    name = "mmpareto"
    min_modalities = 2
    variants = ("official",)
    default_variant = "official"

    own_loss = "always trains on the joint plus the unimodal losses (its definition)"

    needs_encoders = True

    _second: Tensor | None = None  # (N,) fp32 rank-averaged unimodal gradient, parameter order

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.capture = InputCapture(self.encoder_modules, self.modalities, self.name)

    def unimodal_gradient(self, labels: Tensor) -> list[Tensor | None]:
        """d(sum_m CE(z_m))/d(encoder parameters) from a second forward of the encoders on the
        step's inputs (the same function of the parameters as the step's own forward)."""
        inputs = self.capture.taken()
        with torch.enable_grad():
            features = {m: self.capture.forward_detached_buffers(m, inputs[m]) for m in inputs}
            uni = Fn.unimodal_logits(features, self.head)
            loss = sum(F.cross_entropy(z.float(), labels) for z in uni.values())
            assert isinstance(loss, Tensor)
            params = self.groups.parameters()
            grads = torch.autograd.grad(loss, params, materialize_grads=True)
        return list(grads)

    def _objective(
        self,
        output: ModelOutput,
        labels: Tensor,
        uni: dict[str, Tensor],
        scores: Tensor,
        joint: Tensor,
    ) -> Tensor:
        zeros = torch.zeros_like(scores)
        self._record(scores, Fn.score_gaps(scores), zeros, zeros.bool())
        uni_loss = sum(F.cross_entropy(z, labels) for z in uni.values())
        assert isinstance(uni_loss, Tensor)
        second = flatten_params(self.unimodal_gradient(labels), self.groups)
        if dist.is_initialized():
            all_reduce_sum_(second, self.group)
            second /= dist.get_world_size(self.group)  # the engine averages gradients too
        self._second = second
        return joint + uni_loss

    def _decide(self, scores: Tensor) -> None:  # the decision is taken in on_gradients
        raise AssertionError("MMPareto decides from the gradients")

    def _update(self) -> GradientUpdate:
        return GradientUpdate(stat=self.stat)  # the trace of the incoming gradient

    def on_gradients(self) -> None:
        second = self._second
        if second is None:
            raise ValueError("on_gradients() before loss(): no unimodal gradient for this step")
        super().on_gradients()  # the information statistic, before the combination
        num_params = len(self.groups.params)
        flats = [flat_grad(view) for view in self.views]
        dots = sum(pair_dots(g, plan, second, num_params) for g, plan, _ in flats)
        assert isinstance(dots, Tensor)
        if self.partial:
            all_reduce_sum_(dots, self.group)  # tensors split across partitions
        modality = self.groups.table("modality", self.device)
        per_modality = modality_dots(dots, modality, len(self.modalities))  # (M, 3)
        weights = pareto_weights(per_modality)  # (M, 2)
        per_param = weights.index_select(0, modality)
        factors = param_factors(dots, per_param, self.cfg.mmpareto_gamma)
        allowed = self.allowed().to(self.device)
        keep = ~allowed.index_select(0, modality)
        for grad, plan, back in flats:
            pareto_combine_(grad, plan, second, factors, per_param, keep, back)
        self._second = None
        for i, mod in enumerate(self.modalities):
            self._metrics[f"alpha.{mod}"] = weights[i, 0].float()  # k_mm
            self._metrics[f"regulated.{mod}"] = allowed[i].float()
            for j, key in enumerate(DOTS):
                self._metrics[f"{key}.{mod}"] = per_modality[i, j]

    @classmethod
    def audit_step(
        cls,
        record: Mapping[str, Any],
        modalities: Sequence[str],
        cfg: RegulatorConfig,
        window: Mapping[str, bool] | None,
    ) -> list[str]:
        """k_mm (logged as alpha) from the logged per-encoder dots; regulated = schedule."""
        problems = []
        where = f"step {record['step']}"
        dots = torch.tensor(
            [[float(record[f"{k}.{m}"]) for k in DOTS] for m in modalities], dtype=torch.float64
        )
        k_mm = pareto_weights(dots)[:, 0].tolist()
        for i, m in enumerate(modalities):
            if abs(float(record[f"alpha.{m}"]) - k_mm[i]) > 1e-4:
                problems.append(
                    f"{where}: alpha.{m}={record[f'alpha.{m}']}, MMPareto gives {k_mm[i]}"
                )
            if window is not None:
                expected = schedule_allows(cfg.schedule or "always", window[m])
                if bool(float(record[f"regulated.{m}"])) != expected:
                    got = record[f"regulated.{m}"]
                    problems.append(f"{where}: regulated.{m}={got}, schedule gives {expected}")
        return problems
