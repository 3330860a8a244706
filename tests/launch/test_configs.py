"""Every shipped YAML and DeepSpeed JSON loads, strictly; bad configs name the key or file."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch.config import TrainConfig, load_config, lr_at
from launch.typed import ConfigError, read_json
from launch.zero import deepspeed_config

ROOT = Path(__file__).resolve().parents[2]
YAMLS = sorted((ROOT / "configs").rglob("*.yaml"))
JSONS = sorted((ROOT / "deepspeed_configs").glob("*.json"))


def test_there_are_shipped_configs() -> None:
    assert len(YAMLS) >= 2 and {p.name for p in JSONS} >= {
        "zero0.json",
        "zero1.json",
        "zero2.json",
        "fp32.json",
        "bf16.json",
        "fp16.json",
    }


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_yaml_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig) and cfg.run.epochs >= 1


@pytest.mark.parametrize("path", JSONS, ids=lambda p: p.name)
def test_every_shipped_deepspeed_json_loads_and_merges(path: Path) -> None:
    read_json(path)
    stage = "zero1.json" if path.name in ("fp16.json", "bf16.json") else "zero0.json"
    paths = (
        [str(path)]
        if path.name.startswith("zero")
        else [str(ROOT / "deepspeed_configs" / stage), str(path)]
    )
    cfg = deepspeed_config(paths, micro_batch=8)
    assert cfg["train_micro_batch_size_per_gpu"] == 8


def test_overrides_and_errors_name_the_key(tmp_path: Path) -> None:
    base = ROOT / "configs" / "synthetic.yaml"
    cfg = load_config(
        base, ["regulator.name=inforeg", "regulator.unimodal_loss=true", "run.epochs=3"]
    )
    assert cfg.regulator.name == "inforeg" and cfg.regulator.unimodal_loss and cfg.run.epochs == 3
    for override, message in [
        (["run.epoch=3"], "unknown key(s): run.epoch"),
        (["run.epochs=three"], "run.epochs: expected an integer"),
        (["regulator.name=magic"], "regulator.name must be one of"),
        (["data.pipeline=tfrecord"], "data.pipeline: must be one of"),
        (["model.encoders.audio.kind=vit"], "encoder kind must be one of"),
        (["optim.lr=-1"], "optim.lr must be > 0"),
        (["regulator.name=greedy"], "greedy needs model.fusion: mmtm"),
        (["regulator.name=agm", "model.fusion=mmtm"], "agm runs the encoders on their own"),
        (["model.fusion=mmtm", "model.encoders.text.kind=mlp"], "exactly two encoders"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(base, override)
        assert message in str(err.value) and str(base) in str(err.value)
    greedy = load_config(base, ["regulator.name=greedy", "model.fusion=mmtm"])
    assert greedy.model.fusion == "mmtm" and greedy.regulator.greedy_window == 5
    dup = tmp_path / "dup.yaml"
    dup.write_text("run: {epochs: 1}\nrun: {epochs: 2}\n")
    with pytest.raises(ConfigError, match="duplicate key 'run'"):
        load_config(dup)


def test_deepspeed_fragments_conflicts_are_errors(tmp_path: Path) -> None:
    zero2 = str(ROOT / "deepspeed_configs" / "zero2.json")
    zero1 = str(ROOT / "deepspeed_configs" / "zero1.json")
    with pytest.raises(ConfigError, match="disagree on zero_optimization.stage"):
        deepspeed_config([zero1, zero2], micro_batch=4)
    owned = tmp_path / "opt.json"
    owned.write_text('{"optimizer": {"type": "Adam"}}')
    with pytest.raises(ConfigError, match="'optimizer'"):
        deepspeed_config([zero2, str(owned)], micro_batch=4)
    batch = tmp_path / "batch.json"
    batch.write_text('{"train_micro_batch_size_per_gpu": 3}')
    with pytest.raises(ConfigError, match="train_micro_batch_size_per_gpu=3"):
        deepspeed_config([zero2, str(batch)], micro_batch=4)
    with pytest.raises(ConfigError, match="fp16 needs ZeRO stage 1 or 2"):
        deepspeed_config([str(ROOT / "deepspeed_configs" / "fp16.json")], micro_batch=4)


def test_official_step_schedule() -> None:
    cfg = load_config(ROOT / "configs" / "cremad_resnet18.yaml").optim
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.step_size, cfg.gamma) == (
        0.002,
        0.9,
        0.0001,
        30,
        0.1,
    )
    assert [lr_at(cfg, e, 100) for e in (0, 29, 30, 60)] == pytest.approx([2e-3, 2e-3, 2e-4, 2e-5])
