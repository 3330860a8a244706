"""The events a regulator reacts to, and what every regulator shares (scores, traces, state).

A regulator is a thin wrapper: the maths is in `inforeg.functional`, the gradient pass in
`inforeg.kernels`; a regulator only decides, per step, the `GradientUpdate` to run, and keeps
the state that decision needs (anchors, trace history, epoch) in `state_dict()`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from inforeg import functional as Fn
from inforeg.groups import ModalityGroups
from inforeg.kernels import GradientUpdate, GradientView, ModelGradients, regulate_
from inforeg.model import ModelOutput

if TYPE_CHECKING:  # the config validates names against the registry of these classes
    from inforeg.config import RegulatorConfig


class Event(enum.Enum):
    """The points of the one training loop where a regulator acts, as its method names::

        for epoch in range(epochs):
            regulator.on_epoch_start(epoch)          # EPOCH_START: window test from the trace
                                                     #   history; anchors <- encoder weights
            for batch in loader:
                out = model(batch)
                loss = regulator.loss(out, labels)   # LOSS: joint CE (+ unimodal CEs for
                                                     #   InfoReg*); scores, all-reduced; decision
                backward(loss)                       #   (gradients averaged, unscaled)
                regulator.on_gradients()             # GRADIENTS: ONE fused pass over the
                                                     #   encoders' gradients; sum g^2 on device
                optimizer.step()
            metrics = regulator.on_epoch_end(epoch)  # EPOCH_END: traces all-reduced, one host
                                                     #   sync, appended to the history
            for batch in eval_loader:                #   then the evaluation, no gradients:
                regulator.on_eval_batch(model(batch), labels)  # EVAL (G-Blending's V)
        checkpoint = regulator.state_dict()          # SAVE / LOAD: anchors, history, epoch,
        regulator.load_state_dict(checkpoint)        #   accumulators; resumes bit-identically

    No event syncs the host with the device except EPOCH_END (and SAVE, which copies state).
    `on_epoch_start` is a no-op for the epoch already started (after a mid-epoch resume).
    """

    EPOCH_START = "on_epoch_start"
    LOSS = "loss"
    GRADIENTS = "on_gradients"
    EPOCH_END = "on_epoch_end"
    EVAL = "on_eval_batch"
    SAVE = "state_dict"
    LOAD = "load_state_dict"


def all_reduce_sum_(t: Tensor, group: Any = None) -> Tensor:
    """In-place SUM across the data-parallel group when torch.distributed is initialized."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def schedule_allows(schedule: str, window_open: bool) -> bool:
    """Whether `schedule` lets a method modulate a modality whose window is `window_open`."""
    if schedule == "always":
        return True
    return window_open if schedule == "window" else not window_open


def schedule_mask(schedule: str, window: Tensor) -> Tensor:
    """(M,) bool: `schedule_allows` per modality, on device."""
    if schedule == "always":
        return torch.ones_like(window, dtype=torch.bool)
    return window.clone() if schedule == "window" else ~window


def _count(n: int) -> str:
    return {1: "one", 2: "two", 3: "three", 4: "four"}.get(n, str(n))


class Regulator:
    """Shared machinery; subclasses implement `_decide` (per step) and `_update`."""

    name: ClassVar[str] = "base"
    """The registry name (`regulator.name`)."""
    needs_anchor = False
    needs_encoders: ClassVar[bool] = False
    """The method runs forwards of its own on the encoders (``encoders=`` at build)."""
    min_modalities: ClassVar[int] = 1
    """The fewest modalities the method is defined for."""
    max_modalities: ClassVar[int | None] = None
    """The most (None: any number)."""
    variants: ClassVar[tuple[str, ...]] = ("paper", "official")
    """The values ``regulator.variant`` may take for this method."""
    default_variant: ClassVar[str] = "paper"
    """``variant: null`` resolves to this."""
    variant_sets_window: ClassVar[bool] = False
    """The variant also selects the information trace and window test recorded (joint and
    inforeg, whose variant is InfoReg's); else they are the paper's per-modality ones."""
    default_schedule: ClassVar[str] = "always"
    """``schedule: null`` resolves to this (InfoReg: window)."""
    fixed_score: ClassVar[str | None] = None
    """The score kind the method is defined on (None: ``regulator.score`` / the variant's)."""
    required_fusion: ClassVar[str | None] = None
    """The ``model.fusion`` the method needs (greedy: mmtm); None: any."""
    own_loss: ClassVar[str | None] = None
    """What the method trains on when it fixes its own loss (then ``unimodal_loss`` must stay
    false); None: the joint CE, plus the unimodal CEs with ``unimodal_loss``."""

    @classmethod
    def check_config(cls, cfg: RegulatorConfig) -> None:
        """The method's own checks of `cfg` (ValueError naming the field); called when the
        config is built and again when the regulator is."""
        if cls.fixed_score is not None and cfg.score not in (None, cls.fixed_score):
            raise ValueError(f"regulator.score: {cls.name} is defined on {cls.fixed_score} scores")
        if cls.own_loss is not None and cfg.unimodal_loss:
            raise ValueError(
                f"regulator.unimodal_loss: {cls.name} {cls.own_loss}; leave unimodal_loss false"
            )

    @classmethod
    def audit_step(
        cls,
        record: Mapping[str, Any],
        modalities: Sequence[str],
        cfg: RegulatorConfig,
        window: Mapping[str, bool] | None,
    ) -> list[str]:
        """The disagreements of one logged step record with the method's decision recomputed
        from the record's own logged inputs (empty: none). `window` is the window test used in
        the record's epoch (None when unknown). The base checks only that no modality was
        regulated where the schedule forbids it."""
        if window is None:
            return []
        out = []
        for m in modalities:
            if float(record[f"regulated.{m}"]) and not schedule_allows(
                cfg.resolved_schedule, window[m]
            ):
                out.append(
                    f"step {record['step']}: regulated.{m} is set but schedule "
                    f"{cfg.resolved_schedule} forbids it (window={window[m]})"
                )
        return out

    @classmethod
    def check_modalities(cls, modalities: Sequence[str]) -> None:
        """ValueError when the method is not defined for this many modalities."""
        n, low, high = len(modalities), cls.min_modalities, cls.max_modalities
        if n >= low and (high is None or n <= high):
            return
        if high is None:
            wanted = f"at least {_count(low)}"
        else:
            wanted = _count(low) if low == high else f"{_count(low)} to {_count(high)}"
        raise ValueError(
            f"regulator.name: {cls.name} is defined for {wanted} modalities; the model has "
            f"{n} ({', '.join(modalities)})"
        )

    def __init__(
        self,
        cfg: RegulatorConfig,
        groups: ModalityGroups,
        gradients: GradientView | Sequence[GradientView],
        head: nn.Linear,
        *,
        process_group: Any = None,
        encoders: Mapping[str, nn.Module] | nn.ModuleDict | None = None,
        model_gradients: ModelGradients | None = None,
    ):
        views = [gradients] if isinstance(gradients, GradientView) else list(gradients)
        if not views:
            raise ValueError("a regulator needs at least one gradient view")
        if len({v.partial for v in views}) != 1:
            raise ValueError("gradient views mix partial and full gradients")
        for v in views:
            if v.groups is not groups:
                raise ValueError("every gradient view must be built on the regulator's groups")
        self.cfg = cfg
        self.groups = groups
        self.views = views
        self.head = head
        self.group = process_group
        self.encoder_modules = None if encoders is None else dict(encoders.items())
        if self.needs_encoders and groups.bypass:
            raise ValueError(
                f"regulator.name: {self.name} runs the encoders on their own, which is not the "
                "function of a model with cross-modal modules (model.fusion: mmtm)"
            )
        if model_gradients is not None and model_gradients.partial != views[0].partial:
            raise ValueError("model_gradients and the gradient views mix partial and full")
        self.model_gradients = model_gradients  # every gradient of the model (AGM's clip)
        self.modalities = groups.modalities
        self.partial = views[0].partial
        self.rank = dist.get_rank(process_group) if dist.is_initialized() else 0
        self.device = views[0].device
        self.stat = cfg.resolved_window  # the information trace's form
        m = groups.num_modalities
        # state (state_dict)
        self.epoch: int | None = None  # the epoch started and not yet ended
        self.history: dict[str, list[float]] = {mod: [] for mod in self.modalities}
        self.windows: list[list[bool]] = []  # the window test's result used in each epoch
        self.trace_sum = torch.zeros(m, dtype=torch.float64, device=self.device)
        self.steps_in_epoch = 0
        self.step = 0  # gradient passes so far (seeds the GE noise)
        # per-step decision (device tensors, recomputed by every loss())
        self._scores: Tensor | None = None
        self._metrics: dict[str, Tensor] = {}
        self._window = torch.zeros(m, dtype=torch.bool, device=self.device)

    # ----- events ----------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        if self.epoch == epoch:
            return  # already started (resumed mid-epoch): keep its anchors and sums
        if self.epoch is not None:
            raise ValueError(f"epoch {epoch} started before epoch {self.epoch} ended")
        if epoch != len(self.windows):
            raise ValueError(
                f"epoch {epoch} started, but the regulator has {len(self.windows)} finished "
                "epochs: epochs run in order from 0 (load the regulator's state to resume)"
            )
        self.epoch = epoch
        self.windows.append(self._window_test(epoch))
        self._window = torch.tensor(self.windows[-1], dtype=torch.bool, device=self.device)
        self.trace_sum.zero_()
        self.steps_in_epoch = 0
        if self.needs_anchor:
            for view in self.views:
                view.snapshot_anchor()

    def loss(self, output: ModelOutput, labels: Tensor) -> Tensor:
        """The training loss; also scores the modalities on the global batch and decides."""
        if self.epoch is None:
            raise ValueError("loss() before on_epoch_start()")
        joint = F.cross_entropy(output.logits, labels)
        uni = Fn.unimodal_logits(output.features, self.head)  # m -> (B, C)
        kind = self.cfg.resolved_score
        sums = Fn.score_sums(uni, labels, kind).double()  # (M,)
        count = torch.full((1,), float(labels.shape[0]), dtype=torch.float64, device=sums.device)
        packed = all_reduce_sum_(torch.cat([sums, count]), self.group)  # the global batch
        scores = Fn.scores_from_sums(packed[:-1], packed[-1], kind).float()
        self._scores = scores
        return self._objective(output, labels, uni, scores, joint)

    def _objective(
        self,
        output: ModelOutput,
        labels: Tensor,
        uni: dict[str, Tensor],
        scores: Tensor,
        joint: Tensor,
    ) -> Tensor:
        """Decide from `scores` and return the loss: the joint CE, plus the unimodal CEs with
        ``unimodal_loss``. Methods that change the loss (PMR, G-Blending, MMPareto) override it."""
        self._decide(scores)
        if self.cfg.unimodal_loss:
            joint = joint + sum(F.cross_entropy(z, labels) for z in uni.values())
        return joint

    def allowed(self) -> Tensor:
        """(M,) bool: where the schedule lets the method modulate, given this epoch's window."""
        window = self._window
        return schedule_mask(self.cfg.resolved_schedule, window)

    def on_gradients(self) -> None:
        """The fused pass over every view, after backward and before the optimizer step."""
        if self._scores is None:
            raise ValueError("on_gradients() before loss(): no decision for this step")
        update = self._update()
        for view in self.views:
            stats = regulate_(view, update, self.cfg.impl)  # (M,) fp32, on device
            self.trace_sum += stats.to(self.trace_sum.device, torch.float64)
        self.steps_in_epoch += 1
        self.step += 1
        self._scores = None  # one pass per decision

    def on_eval_batch(self, output: ModelOutput, labels: Tensor) -> None:
        """One batch of the trainer's end-of-epoch evaluation (no gradients); G-Blending reads
        its losses, the other methods ignore it."""

    def on_epoch_end(self, epoch: int) -> dict[str, Any]:
        """Close the epoch: traces reduced across ranks (one host sync); its epoch metrics."""
        if self.epoch != epoch:
            raise ValueError(f"on_epoch_end({epoch}) but the running epoch is {self.epoch}")
        total = self.trace_sum.clone()
        if self.partial:
            all_reduce_sum_(total, self.group)  # each rank summed its own partition
        sums = total.tolist()  # note: host sync, once per epoch
        trace = Fn.official_trace if self.stat == "official" else Fn.paper_trace
        for mod, s in zip(self.modalities, sums, strict=True):
            self.history[mod].append(trace(s, self.steps_in_epoch))
        self.epoch = None
        return self.epoch_metrics()

    # ----- metrics ---------------------------------------------------------------------------
    def step_metrics(self) -> dict[str, Tensor]:
        """The last decision, as 0-dim device tensors (``score.m``, ``gap.m``, ``alpha.m``,
        ``regulated.m``; OGM-GE adds ``coeff.m``): the caller syncs them when it logs."""
        return dict(self._metrics)

    def epoch_metrics(self) -> dict[str, Any]:
        """The last finished epoch's ``trace.m`` and ``window_open.m`` (the test's result used
        during that epoch); empty before the first epoch ends."""
        done = len(self.history[self.modalities[0]])
        if done == 0:
            return {}
        out: dict[str, Any] = {}
        for i, mod in enumerate(self.modalities):
            out[f"trace.{mod}"] = self.history[mod][done - 1]
            out[f"window_open.{mod}"] = self.windows[done - 1][i]
        return out

    def _record(self, scores: Tensor, gaps: Tensor, alpha: Tensor, regulated: Tensor) -> None:
        for i, mod in enumerate(self.modalities):
            self._metrics[f"score.{mod}"] = scores[i]
            self._metrics[f"gap.{mod}"] = gaps[i]
            self._metrics[f"alpha.{mod}"] = alpha[i]
            self._metrics[f"regulated.{mod}"] = regulated[i].float()

    # ----- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "variant": self.cfg.resolved_variant,
            "modalities": list(self.modalities),
            "epoch": self.epoch,
            "history": {m: list(h) for m, h in self.history.items()},
            "windows": [list(w) for w in self.windows],
            "trace_sum": self.trace_sum.clone(),
            "steps_in_epoch": self.steps_in_epoch,
            "step": self.step,
            "anchors": [view.anchor_state() for view in self.views],
            "method": self._method_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, mine in (
            ("name", self.name),
            ("variant", self.cfg.resolved_variant),
            ("modalities", list(self.modalities)),
        ):
            if state.get(key) != mine:
                raise ValueError(f"regulator state has {key}={state.get(key)!r}, expected {mine!r}")
        if len(state["anchors"]) != len(self.views):
            raise ValueError(
                f"regulator state has anchors of {len(state['anchors'])} gradient views, "
                f"this regulator has {len(self.views)}"
            )
        self.epoch = state["epoch"]
        self.history = {m: [float(x) for x in h] for m, h in state["history"].items()}
        self.windows = [[bool(x) for x in w] for w in state["windows"]]
        self.trace_sum = state["trace_sum"].to(self.device, torch.float64).clone()
        self.steps_in_epoch = int(state["steps_in_epoch"])
        self.step = int(state["step"])
        for view, anchors in zip(self.views, state["anchors"], strict=True):
            view.load_anchor_state(anchors)
        if self.windows:
            self._window = torch.tensor(self.windows[-1], dtype=torch.bool, device=self.device)
        self._load_method_state(state.get("method", {}))
        self._scores = None
        self._metrics = {}

    def _method_state(self) -> dict[str, Any]:
        """The method's own state (prototypes, running scores, weights), cloned."""
        return {}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        """Restore what `_method_state` returned."""

    # ----- what subclasses define ----------------------------------------------------------
    def _window_test(self, epoch: int) -> list[bool]:
        """The variant's window test at the start of `epoch` (recorded by every regulator, used
        by InfoReg): paper, Eq. 11 on each modality's own trace; official, one test on the first
        modality's trace (the code's audio) for all."""
        k = self.cfg.resolved_threshold
        if self.stat == "official":
            lead = self.history[self.modalities[0]]
            is_open = Fn.official_window_open(lead, epoch, k, self.cfg.official_span)
            return [is_open] * len(self.modalities)
        return [Fn.window_open(self.history[m], epoch, k) for m in self.modalities]

    def _decide(self, scores: Tensor) -> None:
        raise NotImplementedError

    def _update(self) -> GradientUpdate:
        raise NotImplementedError
