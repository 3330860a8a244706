"""Which compute precisions each ZeRO stage supports with the regulator.

The regulator edits the gradients DeepSpeed finally steps, in a pre-step hook on the torch
optimizer it wraps. At ZeRO stage 0 with bf16 or fp16, DeepSpeed wraps that optimizer in its
unfused mixed-precision optimizer: it copies the model's low-precision ``.grad`` into fp32 master
gradients and steps those. The hook would then edit the low-precision ``.grad`` after the copy,
and the update would be the unregulated one (silently: nothing fails). Stages 1 and 2 step flat
fp32 partitions whose slices the regulator edits directly, so mixed precision needs one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from launch.typed import ConfigError

MIXED = ("bf16", "fp16")


def check_precision(cfg: Mapping[str, Any], stage: int) -> None:
    """Raise `ConfigError` when the merged DeepSpeed config `cfg` enables bf16 or fp16 at ZeRO
    `stage` 0, naming the fix (a ZeRO stage 1 or 2 fragment)."""
    if stage != 0:
        return
    for name in MIXED:
        section = cfg.get(name, {})
        if isinstance(section, Mapping) and section.get("enabled"):
            raise ConfigError(
                f"{name} needs ZeRO stage 1 or 2 here (add deepspeed_configs/zero1.json or "
                f"zero2.json): at stage 0 DeepSpeed steps fp32 master copies of the gradients "
                f"taken before the regulator's pass, so {name} would train unregulated"
            )
