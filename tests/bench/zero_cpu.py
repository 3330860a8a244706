"""The ZeRO-2 check's path on CPU: gloo on one rank, a tiny model, bf16 (or fp32 with --fp32).

Started by test_gpu_zero.py in a subprocess (torch.distributed's state stays out of the test
process). Prints the report's line; exits 1 when the step is not proved regulated."""

from __future__ import annotations

import sys

import torch

from bench.gpu_train import StepConfig
from bench.gpu_zero import one_rank_env, run_zero2
from tests.inforeg.tiny import NUM_CLASSES, tiny_model


def main() -> int:
    one_rank_env("cpu")
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    cfg = StepConfig(batch=8, frames=2, size=16, audio=(16, 16), classes=NUM_CLASSES, warmup=2,
                     steps=3, in_memory=2)  # fmt: skip
    bf16 = "--fp32" not in sys.argv
    report = run_zero2(tiny_model(), cfg, torch.device("cpu"), bf16=bf16)
    torch.distributed.destroy_process_group()
    print(("PROVED " if report.proved else "NOT PROVED ") + report.line(cfg.batch))
    return 0 if report.proved else 1


if __name__ == "__main__":
    sys.exit(main())
