"""Where a step's time goes: phase timings for every step record, and torch.profiler traces.

`PhaseClock` partitions the time between step records into the phases of `PHASES`: each
`mark(phase)` closes the interval since the previous mark and charges it to `phase`, so the
phases add up to the window's time exactly (``other`` takes what no phase claims: the loop's
bookkeeping, logging). On a GPU the marks are CUDA events on the current stream, read back only
when a record is written (that record's one host sync), so timing adds no sync to a step; the
fractions are then of the GPU timeline, and ``data_wait`` is the time the GPU waited for the
host's next batch. On a CPU the marks are plain ``perf_counter`` readings.

`Tracer` writes a `torch.profiler` trace (CPU and, where present, CUDA activities, shapes
recorded, stacks off unless asked) for ``run.profile.steps`` steps from
``run.profile.start_step`` on the ranks of ``run.profile.ranks``, under ``OUT/profile/``, in the
format TensorBoard's profiler plugin and Perfetto read; while it records, each phase is also a
named range (``step.forward``, ``step.regulator``, ``loader.wait`` ...).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

PHASES = ("data_wait", "forward", "backward", "regulator", "optimizer", "other")
RANGE_NAMES = {
    "data_wait": "loader.wait",
    "forward": "step.forward",
    "backward": "step.backward",
    "regulator": "step.regulator",
    "optimizer": "step.optimizer",
}


class PhaseClock:
    """Phase timings of the steps since the last `reset`, as fractions of that window."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)  # CPU: accumulated as the marks come
        self._intervals: list[tuple[str, Any, Any]] = []  # CUDA: (phase, start, end) events
        self._last: Any = self._now()

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def mark(self, phase: str) -> None:
        """Charge the time since the previous mark to `phase`."""
        now = self._now()
        if self.cuda:
            self._intervals.append((phase, self._last, now))
        else:
            self.seconds[phase] += now - self._last
        self._last = now

    def fractions(self) -> dict[str, float]:
        """Each phase's share of the window (they add up to 1); reads the CUDA events back,
        which waits for the window's last event (call it where the host syncs anyway)."""
        if self.cuda and self._intervals:
            self._intervals[-1][2].synchronize()  # note: host sync, once per step record
            for phase, start, end in self._intervals:
                self.seconds[phase] += start.elapsed_time(end) / 1e3
            self._intervals = []
        total = sum(self.seconds.values())
        if total <= 0:
            return dict.fromkeys(PHASES, 0.0)
        return {phase: s / total for phase, s in self.seconds.items()}

    @contextlib.contextmanager
    def phase(self, name: str, tracing: bool, label: str | None = None) -> Iterator[None]:
        """Run the block as phase `name`: marked at its end, and a profiler range named `label`
        (default: the phase's range name) while a trace is being recorded."""
        if tracing:
            with torch.profiler.record_function(label or RANGE_NAMES[name]):
                yield
        else:
            yield
        self.mark(name)


class Tracer:
    """A torch.profiler trace of steps ``[start_step, start_step + steps)`` on chosen ranks."""

    def __init__(self, out_dir: Path, start_step: int, steps: int, rank: int, with_stack: bool):
        self.start, self.stop = start_step, start_step + steps
        self.out_dir = out_dir / "profile"
        self.rank = rank
        self.with_stack = with_stack
        self._profiler: Any = None

    @property
    def active(self) -> bool:
        return self._profiler is not None

    def before_step(self, step: int) -> None:
        """Start recording when `step` (the next optimizer step's number) is the first one."""
        if self._profiler is None and self.start <= step < self.stop:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            handler = torch.profiler.tensorboard_trace_handler(
                str(self.out_dir), worker_name=f"rank{self.rank}"
            )
            self._profiler = torch.profiler.profile(
                activities=activities,
                record_shapes=True,
                with_stack=self.with_stack,
                on_trace_ready=handler,
            )
            self._profiler.start()

    def after_step(self, step: int) -> None:
        """Stop and write the trace after the last step of the window (`step` just ended)."""
        if self._profiler is not None:
            self._profiler.step()
            if step + 1 >= self.stop:
                self.close()

    def close(self) -> None:
        if self._profiler is not None:
            self._profiler.stop()  # the handler writes OUT/profile/rank<r>.<time>.pt.trace.json
            self._profiler = None
