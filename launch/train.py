"""Train a multimodal model with a regulator (joint, OGM-GE, InfoReg, InfoReg*) under DeepSpeed.

    deepspeed [launcher args] launch/train.py --config configs/NAME.yaml \\
        --deepspeed_config deepspeed_configs/zero2.json[,deepspeed_configs/bf16.json] \\
        [--resume auto] [dotted.key=value ...]

The same script runs under ``torchrun`` and as a single process (``python launch/train.py``).
Exit codes: 0 done, 2 bad configuration (nothing was trained), 3 non-finite loss (the last good
checkpoint is kept).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from launch.typed import ConfigError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (configs/*.yaml)")
    p.add_argument(
        "--deepspeed_config",
        action="append",
        default=[],
        help="DeepSpeed JSON fragment(s), merged in order; repeat the flag or use commas\n"
        "(e.g. deepspeed_configs/zero2.json,deepspeed_configs/bf16.json); default zero0.json",
    )
    p.add_argument("--resume", default="none", help="none | auto (latest complete checkpoint)")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the YAML config")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from launch.session import build_session

    try:
        fragments = [f for arg in args.deepspeed_config for f in arg.split(",") if f]
        fragments = fragments or ["deepspeed_configs/zero0.json"]
        session = build_session(args.config, args.overrides, fragments, args.resume)
    except ConfigError as e:
        print(f"train: configuration error: {e}", file=sys.stderr)
        return 2
    return session.run()


if __name__ == "__main__":
    sys.exit(main())
