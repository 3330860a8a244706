"""Train a study's runs as subprocesses, a few at a time, and record what each invocation of
the runner did (its runs' wall times, failures and the machine's load) in ``OUT/study.json``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studies.run_folder import record_provenance

if TYPE_CHECKING:  # studies.runner imports this module; annotations only
    from studies.runner import RunSpec


@dataclass
class Session:
    """What one invocation did: its record in OUT/study.json, rewritten after every run."""

    parallel: int = 1
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    trained: dict[str, float] = field(default_factory=dict)
    """run name -> its wall seconds."""
    failed: dict[str, int] = field(default_factory=dict)
    """run name -> exit code."""
    skipped: list[str] = field(default_factory=list)
    load_samples: list[float] = field(default_factory=list)
    """1-minute load average, sampled every 30 s while runs trained."""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["wall_s"] = self.finished - self.started
        out["cpu_count"] = os.cpu_count()
        out["platform"] = platform.platform()
        if self.load_samples:
            out["load_mean"] = sum(self.load_samples) / len(self.load_samples)
            out["load_max"] = max(self.load_samples)
        return out


def run_all(
    specs: Sequence[RunSpec],
    parallel: int,
    session: Session,
    log: Callable[[str], None] = print,
    python: str = sys.executable,
    on_run_end: Callable[[], object] = lambda: None,
) -> None:
    """Train `specs` as subprocesses, `parallel` at a time; output to each run's train.log.
    `on_run_end` is called after each run ends (the runner records the session there, so a
    runner killed later still leaves the time of the runs it finished)."""
    pending = list(specs)
    running: dict[str, tuple[RunSpec, subprocess.Popen[bytes], float, Any]] = {}
    last_sample = 0.0
    try:
        while pending or running:
            while pending and len(running) < parallel:
                spec = pending.pop(0)
                spec.out_dir.mkdir(parents=True, exist_ok=True)
                record_provenance(spec.out_dir)
                out = (spec.out_dir / "train.log").open("ab")
                proc = subprocess.Popen(spec.command(python), stdout=out, stderr=subprocess.STDOUT)
                running[spec.name] = (spec, proc, time.perf_counter(), out)
                log(f"study: started {spec.name} (pid {proc.pid})")
            time.sleep(1.0)
            if time.perf_counter() - last_sample >= 30.0:
                session.load_samples.append(os.getloadavg()[0])
                last_sample = time.perf_counter()
            for name in list(running):
                spec, proc, t0, out = running[name]
                code = proc.poll()
                if code is None:
                    continue
                out.close()
                del running[name]
                wall = time.perf_counter() - t0
                if code == 0:
                    session.trained[name] = wall
                    log(f"study: finished {name} in {wall / 60:.1f} min")
                else:
                    session.failed[name] = code
                    log(f"study: {name} FAILED (exit {code}); see {spec.out_dir / 'train.log'}")
                on_run_end()
    finally:
        # Interrupted (Ctrl-C, an error): stop our own children; their checkpoints stay, so
        # the next invocation resumes them.
        for _, proc, _, out in running.values():
            proc.terminate()
            proc.wait()
            out.close()


def record_session(out: Path, session: Session) -> list[dict[str, Any]]:
    """Write `session` into OUT/study.json, replacing its earlier record (same start) if any;
    its wall time runs to now unless `session.finished` is already set."""
    path = out / "study.json"
    sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
    sessions = [s for s in sessions if s["started"] != session.started]
    if not session.finished:
        session = replace(session, finished=time.time())
    sessions.append(session.to_json())
    path.write_text(json.dumps({"sessions": sessions}, indent=1) + "\n")
    return list(sessions)
