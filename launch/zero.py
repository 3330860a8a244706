"""The ZeRO side of a step: the engine's configuration, the optimizer, the gradients DeepSpeed
steps (as the regulator's views) and the pre-step hook where the regulator runs.

The regulator's fused pass runs in a pre-step hook on the optimizer that DeepSpeed finally calls:
after gradients are averaged across ranks, unscaled and (if configured) clipped, and before the
update, so momentum and weight decay act on the regulated gradient as on any other.

- ZeRO stage 0, fp32 only: that optimizer is ours; the gradients are the parameters' ``.grad``
  (every rank holds the full averaged gradient). bf16 and fp16 are refused at stage 0
  (`launch.precision`): DeepSpeed's unfused mixed-precision optimizer copies the ``.grad`` into
  fp32 masters before the hook runs, so the hook's edit would never reach the update.
- ZeRO stages 1 and 2: DeepSpeed's base optimizer steps flat fp32 master
  partitions, one per parameter group, each rank its own. Each parameter's DeepSpeed
  high-precision mapping (``_hp_mapping``) says which slice of this rank's partition it owns; those
  slices become the segments of the flat gradient view. The per-modality statistics are partial
  sums there, which the regulator all-reduces.

Regulation therefore comes AFTER gradient clipping when ``gradient_clipping`` is set (the shipped
configs do not clip, as the paper).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from inforeg.groups import ModalityGroups
from inforeg.kernels import (
    FlatGradients,
    GradientView,
    HeadFragment,
    ModelGradients,
    ParamGradients,
)
from launch.config import OptimConfig
from launch.precision import check_precision
from launch.typed import ConfigError, read_json


def merge(base: dict[str, Any], extra: dict[str, Any], where: str) -> dict[str, Any]:
    """Deep-merge two DeepSpeed config fragments; a key set to different values is an error."""
    out = dict(base)
    for key, value in extra.items():
        if key in out and isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge(out[key], value, f"{where}.{key}" if where else key)
        elif key in out and out[key] != value:
            name = f"{where}.{key}" if where else key
            raise ConfigError(
                f"DeepSpeed config fragments disagree on {name}: {out[key]} vs {value}"
            )
        else:
            out[key] = value
    return out


def deepspeed_config(paths: Sequence[str], micro_batch: int) -> dict[str, Any]:
    """The engine's config: the fragments merged, plus what the trainer owns.

    The trainer owns the batch size (``data.batch_size``), gradient accumulation (1), the optimizer
    and the schedule (both in the YAML config); a fragment that sets them differently is rejected.
    """
    if not paths:
        raise ConfigError(
            "--deepspeed_config: give at least one file (e.g. deepspeed_configs/zero0.json)"
        )
    cfg: dict[str, Any] = {}
    for path in paths:
        cfg = merge(cfg, read_json(path), "")
    for owned in ("optimizer", "scheduler"):
        if owned in cfg:
            raise ConfigError(f"DeepSpeed config sets '{owned}': the trainer's YAML config owns it")
    owned_values = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    for key, value in owned_values.items():
        if key in cfg and cfg[key] != value:
            raise ConfigError(f"DeepSpeed config sets {key}={cfg[key]}; the trainer needs {value}")
        cfg[key] = value
    cfg.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world
    stage = int(cfg.get("zero_optimization", {}).get("stage", 0))
    if stage not in (0, 1, 2):
        raise ConfigError(f"zero_optimization.stage must be 0, 1 or 2, got {stage}")
    check_precision(cfg, stage)
    return cfg


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """One parameter group over the whole model (as the official code)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def compute_dtype(engine: Any) -> torch.dtype:
    """The dtype DeepSpeed computes in: bf16, fp16 or fp32, from its configuration."""
    if engine.bfloat16_enabled():
        return torch.bfloat16
    return torch.float16 if engine.fp16_enabled() else torch.float32


def base_optimizer(engine: Any) -> torch.optim.Optimizer:
    """The torch optimizer DeepSpeed finally steps."""
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else opt


@dataclass
class ZeroGradients:
    """The gradients DeepSpeed steps, as the regulator's views (the one owner of this mapping).

    ZeRO 0 fp32: one `ParamGradients` over the encoders' ``.grad`` (full on every rank).
    ZeRO 1/2: one `FlatGradients` per flat fp32 master partition of this rank, its segments read
    from each parameter's ``_hp_mapping``; DeepSpeed sets the partition's ``.grad`` right before
    each step, so `bind` points the views at this step's buffers.
    `model`: every gradient the optimizer steps (the views' plus the head's and the rest's) and
    the head weight's place in them, for model-wide operations (AGM's clip).
    """

    views: list[GradientView]
    flat_by_id: dict[int, FlatGradients] = field(default_factory=dict)
    """id(flat partition parameter) -> its view; empty at ZeRO 0."""
    model: ModelGradients | None = None

    @staticmethod
    def of(engine: Any, model: nn.Module, groups: ModalityGroups) -> ZeroGradients:
        params = list(model.parameters())
        head = model.head
        if not isinstance(head, nn.Linear):
            raise ValueError("the model's head must be an nn.Linear")
        if not any(getattr(p, "_hp_mapping", None) is not None for p in params):
            # ZeRO 0 fp32: DeepSpeed's engine.zero_grad sets every .grad to None after a step,
            # so the next backward would allocate new tensors and the contiguous view would copy
            # them back into its buffer every step; zeroing in place keeps each .grad a view of
            # the buffer (the same numbers: backward adds into zeros).
            optimizer = base_optimizer(engine)
            engine.zero_grad = functools.partial(optimizer.zero_grad, set_to_none=False)
            view = ParamGradients.from_groups(groups, contiguous=True)
            whole = ModelGradients.of_model(view, model, head.weight)
            return ZeroGradients([view], model=whole)
        partitions = [p for g in base_optimizer(engine).param_groups for p in g["params"]]
        if len(partitions) != 1:
            raise ConfigError("the regulator expects one optimizer parameter group")
        by_id: dict[int, FlatGradients] = {}
        for flat in partitions:
            segments, bypass = [], []  # encoder parameters; cross-modal modules' (Greedy)
            for p in params:
                mapping = getattr(p, "_hp_mapping", None)
                if mapping is None:
                    continue
                where = {
                    "start": int(mapping.hp_fragment_address.start),
                    "length": int(mapping.hp_fragment_address.numel),
                    "offset": int(mapping.lp_fragment_address.start),
                }
                segment = groups.segment(p, **where)
                if segment is not None:
                    segments.append(segment)
                else:
                    extra = groups.bypass_segment(p, **where)
                    if extra is not None:
                        bypass.append(extra)
            # until the first bind, the view holds an unused placeholder of the same size
            placeholder = torch.empty_like(flat)
            by_id[id(flat)] = FlatGradients(
                placeholder, flat, segments, groups, bypass_segments=bypass
            )
        views: list[GradientView] = list(by_id.values())
        mapping = getattr(head.weight, "_hp_mapping", None)  # None: another rank's partition
        fragments = []
        if mapping is not None:
            fragments.append(
                HeadFragment(
                    view=0,
                    start=int(mapping.hp_fragment_address.start),
                    length=int(mapping.hp_fragment_address.numel),
                    offset=int(mapping.lp_fragment_address.start),
                )
            )
        shape = (int(head.weight.shape[0]), int(head.weight.shape[1]))
        whole = ModelGradients.over_flat(views, shape, fragments)
        return ZeroGradients(views, by_id, whole)

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        """Point the flat views at the gradients DeepSpeed set for this step (ZeRO 1/2)."""
        if not self.flat_by_id:
            return  # ZeRO 0: the views read the parameters' .grad
        for group in optimizer.param_groups:
            for flat in group["params"]:
                view = self.flat_by_id.get(id(flat))
                if view is not None and flat.grad is not None:
                    view.bind(flat.grad)


def add_pre_step_hook(engine: Any, hook: Callable[[torch.optim.Optimizer], None]) -> Any:
    """Run `hook(optimizer)` right before each step of the optimizer DeepSpeed finally calls."""
    base = base_optimizer(engine)

    def pre_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():  # pre-hooks run outside the step's no-grad context
            hook(opt)

    return base.register_step_pre_hook(pre_step)
