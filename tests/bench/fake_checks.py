"""Check functions for the orchestrator's tests (run in child processes by bench.gpu_check)."""

from __future__ import annotations

import sys
import time


def passes() -> tuple[str, str]:
    return "PASS", "42 things/s"


def raises() -> tuple[str, str]:
    raise RuntimeError("the device fell over")


def hangs() -> tuple[str, str]:
    time.sleep(60)
    return "PASS", "never"


def passes_then_dies() -> tuple[str, str]:
    print('GPU-CHECK-RESULT {"status": "PASS", "figure": "fine"}', flush=True)
    sys.exit(3)
