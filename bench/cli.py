"""`inforeg-bench`: benchmarks that print figures (never timed tests).

Each subcommand lives in the package it measures, as a module exposing
``add_arguments(parser)`` and ``run(args) -> int``; this file only lists and dispatches them, and
imports a subcommand's module only when it is run. A bad argument or input (ValueError, OSError)
exits 2 with its message; data failing while it is read (`pipelines.LoaderError`) propagates.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "loader": ("pipelines.bench", "a loader's samples/s, latency, CPU use and decode bound"),
    "regulator": (
        "bench.regulator",
        "the fused regulator pass vs a memory copy and the official code",
    ),
    "train": ("bench.train", "training samples/s and the loader's share, per pipeline"),
    "methods": ("bench.methods", "each balancing method's step time over joint training's"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inforeg-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:  # import only the module that runs
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, OSError) as e:  # a bad argument, a missing or unbuilt dataset
        print(f"inforeg-bench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
