"""The trainer's data: loaders for the configured pipeline, and what the model needs to know.

Checks before anything is built: the dataset folder exists and holds the pipeline's format and the
splits asked for, and every modality the model encodes is in the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inforeg.model import InputSpec, ModelConfig
from launch.config import DataConfig
from launch.distributed import DistInfo
from launch.typed import ConfigError
from pipelines import PIPELINE_FORMAT, Loader
from preprocess.schema import DatasetInfo, load_dataset_info


@dataclass(frozen=True)
class Dataset:
    """A checked dataset folder: its dataset.json (read once per rank) and the split evaluated."""

    info: DatasetInfo
    eval_split: str


@dataclass(frozen=True)
class Data:
    info: DatasetInfo
    train: Loader
    eval: Loader
    eval_split: str
    input_spec: InputSpec


def check_dataset(cfg: DataConfig, model: ModelConfig) -> Dataset:
    """The dataset's description and the split to evaluate; ConfigError naming key or path."""
    root = Path(cfg.dir)
    if not root.is_dir():
        raise ConfigError(f"data.dir: {root} does not exist (run `inforeg-preprocess build` first)")
    try:
        info = load_dataset_info(root)
    except ValueError as e:
        raise ConfigError(f"data.dir: {e}") from e
    wanted_format = PIPELINE_FORMAT[cfg.pipeline]
    if wanted_format not in info.options.formats:
        raise ConfigError(
            f"data.pipeline={cfg.pipeline} reads the '{wanted_format}' format, but {root} holds "
            f"{list(info.options.formats)} (rebuild with --formats including {wanted_format})"
        )
    missing = [m for m in model.encoders if m not in info.modalities]
    if missing:
        raise ConfigError(
            f"model.encoders: {missing} not in the dataset {root} (it has {list(info.modalities)})"
        )
    if cfg.train_split not in info.splits or info.splits[cfg.train_split].samples == 0:
        raise ConfigError(f"data.train_split: {root} has no samples in '{cfg.train_split}'")
    eval_split = cfg.eval_split or next(
        (s for s in ("val", "test") if s in info.splits and info.splits[s].samples > 0), ""
    )
    if not eval_split or eval_split not in info.splits:
        raise ConfigError(f"data.eval_split: {root} has no '{cfg.eval_split or 'val/test'}' split")
    return Dataset(info, eval_split)


def input_spec(info: DatasetInfo) -> InputSpec:
    return InputSpec(
        channels={"audio": 1, "video": 3},
        vocab_size=info.vocab_size or 0,
        text_len=info.options.text_len if "text" in info.modalities else 0,
    )


def build_data(cfg: DataConfig, dataset: Dataset, dist: DistInfo, seed: int) -> Data:
    from pipelines import build_loader

    def loader(split: str, train: bool) -> Loader:
        spec = cfg.loader_spec(split, train, seed, dist.rank, dist.world_size, dist.device)
        return build_loader(spec, dataset.info)  # dataset.json as read by check_dataset

    try:
        train = loader(cfg.train_split, True)
        evaluation = loader(dataset.eval_split, False)
    except ValueError as e:  # e.g. a batch larger than the split, a world larger than the split
        raise ConfigError(f"data (pipeline {cfg.pipeline}, {cfg.dir}): {e}") from e
    info = dataset.info
    return Data(info, train, evaluation, dataset.eval_split, input_spec(info))
