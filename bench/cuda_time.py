"""Device-side timing for the GPU check: CUDA events, never the host's clock around async work.

`device_ms` times one call at a time with `triton.testing.do_bench` (CUDA events around each
call, the L2 cache flushed in between, the median kept), so the figure is the kernel's device
time over one large call, not launch overhead. `EventSpans` accumulates the device time of
marked spans inside a loop (a training step, the regulator's share of it) with one sync at the
end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def device_ms(fn: Callable[[], Any], *, warmup_ms: int = 25, rep_ms: int = 200) -> float:
    """Median device time of one call of `fn` in milliseconds (CUDA only)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def host_us_per_call(fn: Callable[[], Any], calls: int = 50) -> float:
    """Host time to issue one call, in microseconds, measured back to back without a sync inside
    (what a training loop pays on the CPU per call; the device may still be busy after)."""
    import time

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    issued = time.perf_counter() - t0
    torch.cuda.synchronize()
    return issued / calls * 1e6


class EventSpans:
    """Device time of named spans, summed over a loop; read once at the end (one sync)."""

    def __init__(self) -> None:
        self._pairs: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {}
        self._open: dict[str, torch.cuda.Event] = {}

    def start(self, name: str) -> None:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        self._open[name] = ev

    def stop(self, name: str) -> None:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        self._pairs.setdefault(name, []).append((self._open.pop(name), ev))

    def total_ms(self) -> dict[str, float]:
        """{name: summed ms}; synchronises once."""
        torch.cuda.synchronize()
        return {k: sum(a.elapsed_time(b) for a, b in v) for k, v in self._pairs.items()}

    def count(self, name: str) -> int:
        return len(self._pairs.get(name, []))


class HostSpans:
    """`EventSpans` for a CPU run (the tests): the host's clock, the work being synchronous."""

    def __init__(self) -> None:
        self._sums: dict[str, list[float]] = {}
        self._open: dict[str, float] = {}

    def start(self, name: str) -> None:
        import time

        self._open[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        import time

        self._sums.setdefault(name, []).append(time.perf_counter() - self._open.pop(name))

    def total_ms(self) -> dict[str, float]:
        return {k: sum(v) * 1e3 for k, v in self._sums.items()}

    def count(self, name: str) -> int:
        return len(self._sums.get(name, []))


def spans_for(device: torch.device) -> EventSpans | HostSpans:
    return EventSpans() if device.type == "cuda" else HostSpans()
