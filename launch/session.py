"""Build a training session (config -> process group -> data -> model -> engine -> regulator),
run it, and close it. `launch/train.py` is only argument parsing around this.

Everything that can be checked without training is checked first (config keys and types, the
DeepSpeed fragments, the dataset folder and its formats), so a bad run stops before it starts.
"""

from __future__ import annotations

import json
import random
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inforeg.groups import ModalityGroups
from inforeg.kernels import FlatGradients, GradientView, ParamGradients
from inforeg.model import MultimodalModel, build_model
from inforeg.regulators import Regulator, build_regulator
from launch import checkpoint
from launch.config import TrainConfig, config_to_dict, load_config
from launch.data import build_data, check_dataset
from launch.distributed import DistInfo, close, cpu_threads_per_rank, init_distributed
from launch.engine import (
    add_pre_step_hook,
    base_optimizer,
    build_optimizer,
    compute_dtype,
    deepspeed_config,
    flat_partitions,
)
from launch.logs import read_records
from launch.loop import NonFiniteLoss, Trainer
from launch.report import table, write_report
from launch.typed import ConfigError

# DeepSpeed's ZeRO all-gather calls a torch API that torch deprecates; once per step it warns.
warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def gradient_views(
    engine: Any, model: MultimodalModel, groups: ModalityGroups
) -> tuple[list[GradientView], dict[int, FlatGradients]]:
    """The regulator's views of the gradients DeepSpeed steps, and flat views by partition id."""
    partitions = flat_partitions(engine, model)
    if partitions is None:  # ZeRO 0, fp32: the parameters' own .grad, full on every rank
        return [ParamGradients.from_groups(groups, contiguous=True)], {}
    if len(partitions) != 1:
        raise ConfigError("the regulator expects one optimizer parameter group")
    by_id: dict[int, FlatGradients] = {}
    params = list(model.parameters())
    for part in partitions:
        segments = []
        for p in params:
            mapping = getattr(p, "_hp_mapping", None)
            if mapping is None or groups.index_of(p) is None:
                continue
            seg = groups.segment(
                p,
                start=int(mapping.hp_fragment_address.start),
                length=int(mapping.hp_fragment_address.numel),
                offset=int(mapping.lp_fragment_address.start),
            )
            if seg is not None:
                segments.append(seg)
        # DeepSpeed sets the partition's .grad right before each step; until the pre-step hook
        # binds it, the view holds an unused placeholder of the same size.
        placeholder = torch.empty_like(part.weight)
        by_id[id(part.weight)] = FlatGradients(placeholder, part.weight, segments, groups)
    return list(by_id.values()), by_id


@dataclass
class Session:
    cfg: TrainConfig
    dist: DistInfo
    trainer: Trainer
    resume_tag: str | None
    out_dir: Path

    def run(self) -> int:
        code = 0
        try:
            self.trainer.fit(self.resume_tag)
        except NonFiniteLoss as e:
            print(f"train: {e}", file=sys.stderr)
            code = 3
        if self.dist.is_main and (self.out_dir / "metrics.jsonl").is_file():
            extra = {"config": config_to_dict(self.cfg), "exit_code": code}
            paths = write_report(self.out_dir, extra)
            print(table(read_records(self.out_dir / "metrics.jsonl")))
            for name, path in paths.items():
                print(f"{name}: {path}")
        close()
        return code


def build_session(
    config_path: str, overrides: Sequence[str], ds_paths: Sequence[str], resume: str
) -> Session:
    cfg = load_config(config_path, overrides)
    ds_config = deepspeed_config(ds_paths, cfg.data.batch_size)
    check_dataset(cfg.data, cfg.model)
    if resume not in ("none", "auto"):
        raise ConfigError(f"--resume must be none or auto, got {resume!r}")
    previous = checkpoint.find_latest(Path(cfg.run.out_dir) / "checkpoints")
    if resume == "none" and previous is not None:
        raise ConfigError(
            f"run.out_dir={cfg.run.out_dir} holds a checkpoint ({previous}) of an earlier run: "
            "continue it with --resume auto, or choose another run.out_dir"
        )

    import deepspeed

    dist_info = init_distributed()
    torch.set_num_threads(cpu_threads_per_rank(dist_info.local_world_size, cfg.run.threads))
    seed_everything(cfg.run.seed)  # the same initial weights on every rank
    data = build_data(cfg.data, cfg.model, dist_info, cfg.run.seed)
    out_dir = Path(cfg.run.out_dir)
    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
        (out_dir / "deepspeed.json").write_text(json.dumps(ds_config, indent=2) + "\n")
    model = build_model(cfg.model, data.input_spec, len(data.info.classes)).to(dist_info.device)
    optimizer = build_optimizer(model, cfg.optim)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)

    dtype = compute_dtype(engine)
    if dtype != torch.float32:
        # DeepSpeed casts parameters only; BatchNorm needs its running statistics in the same
        # dtype as its input and weights (on CPU at least), so the buffers follow.
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.data = buffer.data.to(dtype)
    groups = ModalityGroups.from_model(model)
    views, flat_by_id = gradient_views(engine, model, groups)
    regulator: Regulator = build_regulator(cfg.regulator, groups, views, model.head)

    def before_step(opt: torch.optim.Optimizer) -> None:
        if flat_by_id:  # ZeRO 1/2: each rank's few flat partitions; ZeRO 0 views the .grad
            for group in opt.param_groups:
                for flat in group["params"]:
                    view = flat_by_id.get(id(flat))
                    if view is not None and flat.grad is not None:
                        view.bind(flat.grad)
        regulator.on_gradients()

    assert base_optimizer(engine) is not None
    add_pre_step_hook(engine, before_step)
    trainer = Trainer(cfg, engine, model, regulator, data, dist_info, out_dir)
    tag = previous if resume == "auto" else None
    if dist_info.is_main:
        where = f"resuming from {tag}" if tag else "from scratch"
        unused = [m for m in data.info.modalities if m not in groups.modalities]
        skipped = f" (the data's {', '.join(unused)} not modelled)" if unused else ""
        modelled = ", ".join(groups.modalities)
        print(
            f"train: {cfg.regulator.name} ({cfg.regulator.variant}) on {modelled}{skipped} "
            f"with {cfg.data.pipeline}, {dist_info.world_size} rank(s), ZeRO stage "
            f"{engine.zero_optimization_stage()}, {where}; out {out_dir}",
            flush=True,
        )
    return Session(cfg=cfg, dist=dist_info, trainer=trainer, resume_tag=tag, out_dir=out_dir)
