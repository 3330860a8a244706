"""bf16 and fp16 need ZeRO 1 or 2: at stage 0 the regulator's pass would not reach the update."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch.precision import check_precision
from launch.typed import ConfigError
from launch.zero import deepspeed_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "deepspeed_configs"


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_mixed_precision_at_stage_0_is_refused_naming_the_fix(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name} needs ZeRO stage 1 or 2 .*zero2\.json"):
        check_precision({name: {"enabled": True}}, 0)
    for stage in (1, 2):
        check_precision({name: {"enabled": True}}, stage)


def test_fp32_and_disabled_sections_pass_at_every_stage() -> None:
    for stage in (0, 1, 2):
        check_precision({}, stage)
        check_precision({"bf16": {"enabled": False}, "fp16": {"enabled": False}}, stage)


def test_the_merged_deepspeed_config_applies_the_rule() -> None:
    bf16 = str(CONFIGS / "bf16.json")
    with pytest.raises(ConfigError, match="bf16 needs ZeRO stage 1 or 2"):
        deepspeed_config([bf16], micro_batch=4)  # no zero fragment: stage 0
    with pytest.raises(ConfigError, match="bf16 needs ZeRO stage 1 or 2"):
        deepspeed_config([str(CONFIGS / "zero0.json"), bf16], micro_batch=4)
    for zero in ("zero1.json", "zero2.json"):
        cfg = deepspeed_config([str(CONFIGS / zero), bf16], micro_batch=4)
        assert cfg["bf16"]["enabled"] is True
