"""Did every regulated run start after the protocol was fixed? (docs/study-protocol.md)

The protocol commit is the commit that added ``docs/study-protocol.md``. The study runner writes
``RUN/provenance.json`` (``{"starts": [{"started": UTC ISO time, "commit", "dirty"}]}``) each time
it starts a run; a run is verified when its **first** start came from a commit that has the
protocol commit as an ancestor and is later than the protocol commit's time. `check` is pure (git
is asked through a callable); `protocol_commit` and `git_is_ancestor` are the thin git wrappers.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

PROTOCOL = "docs/study-protocol.md"


@dataclass(frozen=True, kw_only=True)
class Protocol:
    commit: str
    time: datetime
    """The commit's committer time (timezone-aware)."""
    changes: tuple[tuple[str, str, str], ...] = ()
    """Later commits to the protocol file, oldest first: (short hash, ISO time, subject); the
    protocol's section 6 says what each changed and why."""


@dataclass(frozen=True, kw_only=True)
class RunProvenance:
    run: str
    """method/seedN."""
    started: str = ""
    """The first start's UTC time as recorded ("" when unknown)."""
    commit: str = ""
    status: str
    """verified, unverified (no provenance.json), or a sentence saying what failed."""
    dirty: tuple[str, ...] = ()
    """Tracked files that differed from `commit` when it started (a note, not a failure: the
    protocol fixes the order of commits, and the report lists them)."""

    @property
    def verified(self) -> bool:
        return self.status == "verified"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def protocol_commit(root: Path, path: str = PROTOCOL) -> Protocol | None:
    """The commit that added `path`, its time and the later commits to it (None outside git or
    when never added)."""
    done = _git(root, "log", "--diff-filter=A", "--format=%H %cI", "--", path)
    lines = done.stdout.split() if done.returncode == 0 else []
    if len(lines) < 2:
        return None
    # several adds (deleted and re-added): the first one fixed the protocol
    commit, when = lines[-2], lines[-1]
    later = _git(
        root, "log", "--reverse", "--format=%h%x09%cI%x09%s", f"{commit}..HEAD", "--", path
    )
    changes = tuple(
        (h, t, subject)
        for h, t, subject in (line.split("\t", 2) for line in later.stdout.splitlines() if line)
    )
    return Protocol(commit=commit, time=datetime.fromisoformat(when), changes=changes)


def git_is_ancestor(root: Path) -> Callable[[str, str], bool]:
    """(ancestor, commit) -> whether `ancestor` is an ancestor of (or is) `commit` in `root`."""

    def is_ancestor(ancestor: str, commit: str) -> bool:
        return _git(root, "merge-base", "--is-ancestor", ancestor, commit).returncode == 0

    return is_ancestor


def parse_time(text: str) -> datetime:
    """'2026-12-03T06:40:00Z' -> an aware datetime (ValueError naming the text otherwise)."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError(f"provenance.json: start time {text!r} is not an ISO time") from e


def check(
    run: str,
    record: Mapping[str, Any] | None,
    protocol: Protocol,
    is_ancestor: Callable[[str, str], bool],
) -> RunProvenance:
    """One run's provenance (`record`: its provenance.json, None when absent)."""
    starts = (record or {}).get("starts") or []
    if not starts:
        return RunProvenance(run=run, status="unverified (no provenance.json)")
    first = starts[0]
    started, commit = str(first.get("started", "")), str(first.get("commit", ""))
    problems = []
    if not commit:
        problems.append("its first start recorded no commit")
    elif not is_ancestor(protocol.commit, commit):
        problems.append(f"its commit {commit[:10]} does not descend from the protocol commit")
    if not started:
        problems.append("its first start recorded no time")
    elif parse_time(started) <= protocol.time:
        problems.append(f"it started at {started}, before the protocol commit")
    status = "; ".join(problems) if problems else "verified"
    dirty = tuple(str(f) for f in first.get("dirty") or ())
    return RunProvenance(run=run, started=started, commit=commit, status=status, dirty=dirty)


def check_runs(
    run_dirs: Mapping[str, Path], protocol: Protocol, is_ancestor: Callable[[str, str], bool]
) -> list[RunProvenance]:
    """`run_dirs`: method/seedN -> its folder; each folder's provenance.json checked."""
    out = []
    for name, folder in run_dirs.items():
        path = folder / "provenance.json"
        record = json.loads(path.read_text()) if path.is_file() else None
        out.append(check(name, record, protocol, is_ancestor))
    return out


def provenance_lines(protocol: Protocol | None, checked: Sequence[RunProvenance]) -> list[str]:
    """The report's provenance paragraph."""
    if protocol is None:
        return [f"**Provenance.** No commit adds `{PROTOCOL}` in this checkout: not verified.", ""]
    ok = [p for p in checked if p.verified]
    starts = sorted(p.started for p in checked if p.started)
    lines = [
        f"**Provenance.** The protocol was fixed by commit `{protocol.commit}` "
        f"({protocol.time.isoformat()}). **{len(ok)} of {len(checked)} regulated runs** "
        "(every method but joint training, Joint* and the encoders alone) started after it, from "
        "a commit that descends from it"
        + (f"; the earliest started {starts[0]}" if starts else "")
        + ".",
        "",
    ]
    for p in checked:
        if not p.verified:
            lines.append(f"- `{p.run}`: {p.status}")
    if len(ok) < len(checked):
        lines.append("")
    if protocol.changes:

        def when(t: str) -> str:
            if not starts:
                return ""
            before = parse_time(t) < parse_time(starts[0])
            return ", before the first regulated run" if before else ", **after** it started"

        lines += [
            "Later commits to the protocol (its section 6 says what each changed and why): "
            + "; ".join(f"`{h}` {t} ({subject}{when(t)})" for h, t, subject in protocol.changes)
            + ".",
            "",
        ]
    dirty: dict[tuple[str, ...], list[str]] = {}
    for p in checked:
        if p.dirty:
            dirty.setdefault(p.dirty, []).append(p.run)
    for files, runs in dirty.items():
        lines += [
            f"{len(runs)} run(s) started with tracked files changed from their commit "
            f"({', '.join(f'`{f}`' for f in files)}): {', '.join(runs)}.",
            "",
        ]
    return lines
