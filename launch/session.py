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

import torch

from inforeg.groups import ModalityGroups
from inforeg.model import build_model
from inforeg.regulators import Regulator, build_regulator
from launch import checkpoint
from launch.config import TrainConfig, config_to_dict, load_config
from launch.data import Data, build_data, check_dataset
from launch.distributed import DistInfo, close, cpu_threads_per_rank, init_distributed
from launch.flops import ModelFlops, peak_tflops, training_flops
from launch.loop import NonFiniteLoss, Trainer
from launch.records import read_run
from launch.report import table, time_split, write_report
from launch.typed import ConfigError
from launch.zero import ZeroGradients, build_optimizer, compute_dtype, deepspeed_config


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def count_flops(cfg: TrainConfig, data: Data) -> ModelFlops | None:
    """The model's training FLOPs per sample on the data's shapes (None if an op of the model
    cannot be counted on the meta device; the run goes on without MFU)."""
    try:
        return training_flops(
            cfg.model,
            data.input_spec,
            len(data.info.classes),
            cfg.data.frames,
            cfg.data.size,
            data.info.audio_feature_shape,
        )
    except (RuntimeError, NotImplementedError) as e:
        print(f"train: FLOPs not counted ({type(e).__name__}: {e})", file=sys.stderr)
        return None


def describe_throughput(
    flops: ModelFlops | None, peak: float | None, device: torch.device, dtype: torch.dtype
) -> str:
    counted = "FLOPs not counted" if flops is None else f"model {flops.describe()}"
    if peak is None:
        return f"{counted}; no peak known for {device} (set run.peak_tflops for MFU)"
    return f"{counted}; MFU against {peak:g} TFLOP/s ({str(dtype).removeprefix('torch.')})"


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
            run = read_run(self.out_dir / "metrics.jsonl")
            print(table(run))
            print(time_split(run))
            for name, path in paths.items():
                print(f"{name}: {path}")
        close()
        return code


def build_session(
    config_path: str, overrides: Sequence[str], ds_paths: Sequence[str], resume: str
) -> Session:
    cfg = load_config(config_path, overrides)
    ds_config = deepspeed_config(ds_paths, cfg.data.batch_size)
    dataset = check_dataset(cfg.data, cfg.model)  # dataset.json, read once per rank
    if resume not in ("none", "auto"):
        raise ConfigError(f"--resume must be none or auto, got {resume!r}")
    previous = checkpoint.find_latest(Path(cfg.run.out_dir) / "checkpoints")
    if resume == "none" and previous is not None:
        raise ConfigError(
            f"run.out_dir={cfg.run.out_dir} holds a checkpoint ({previous}) of an earlier run: "
            "continue it with --resume auto, or choose another run.out_dir"
        )

    import deepspeed

    # DeepSpeed's ZeRO all-gather calls a torch API that torch deprecates; once per step it warns.
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
    dist_info = init_distributed()
    torch.set_num_threads(cpu_threads_per_rank(dist_info.local_world_size, cfg.run.threads))
    seed_everything(cfg.run.seed)  # the same initial weights on every rank
    data = build_data(cfg.data, dataset, dist_info, cfg.run.seed)
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
    gradients = ZeroGradients.of(engine, model, groups)
    views, whole = gradients.views, gradients.model  # the encoders' and every gradient
    regulator: Regulator = build_regulator(
        cfg.regulator, groups, views, model.head, encoders=model.encoders, model_gradients=whole
    )
    flops = count_flops(cfg, data)
    peak = peak_tflops(dist_info.device, dtype, cfg.run.peak_tflops)
    trainer = Trainer(
        cfg, engine, model, regulator, gradients, data, dist_info, out_dir, flops, peak
    )
    tag = previous if resume == "auto" else None
    if dist_info.is_main:
        where = f"resuming from {tag}" if tag else "from scratch"
        unused = [m for m in data.info.modalities if m not in groups.modalities]
        skipped = f" (the data's {', '.join(unused)} not modelled)" if unused else ""
        modelled = ", ".join(groups.modalities)
        method = f"{cfg.regulator.name} ({cfg.regulator.resolved_variant})"
        print(
            f"train: {method} on {modelled}{skipped} "
            f"with {cfg.data.pipeline}, {dist_info.world_size} rank(s), ZeRO stage "
            f"{engine.zero_optimization_stage()}, {where}; out {out_dir}",
            flush=True,
        )
        print(f"train: {describe_throughput(flops, peak, dist_info.device, dtype)}", flush=True)
        (out_dir / "flops.json").write_text(
            json.dumps(
                {
                    "flops_per_sample": None if flops is None else flops.total,
                    "by_module": None if flops is None else flops.by_module,
                    "peak_tflops": peak,
                    "dtype": str(dtype).removeprefix("torch."),
                    "device": str(dist_info.device),
                },
                indent=2,
            )
            + "\n"
        )
    return Session(cfg=cfg, dist=dist_info, trainer=trainer, resume_tag=tag, out_dir=out_dir)
