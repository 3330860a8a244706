"""What a study's run folder says about its run, beyond the trainer's own files: whether its
recorded configuration is still the study's (`with_added_defaults`), and from which code the
study started it (`record_provenance`, ``provenance.json``)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import MISSING, Field, asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from launch.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def with_added_defaults(found: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded configuration with the fields the trainer gained since it was written
    filled in at their defaults (a section key the file lacks and its dataclass has): a field
    added later does not make a finished run foreign. Whoever adds a field keeps the old
    behaviour at its default, or changes the study's configs, which then differ."""
    out = dict(found)
    for section, cls in get_type_hints(TrainConfig).items():
        if not (is_dataclass(cls) and isinstance(out.get(section), dict)):
            continue
        defaults = {f.name: field_default(f) for f in fields(cls)}
        defaults = {k: v for k, v in defaults.items() if v is not MISSING}
        added = {k: v for k, v in defaults.items() if k not in out[section]}
        out[section] = {**out[section], **json.loads(json.dumps(added, default=asdict_or_str))}
    return out


def field_default(f: Field[Any]) -> Any:
    """The field's default (from its factory if it has one); MISSING when it has none."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def asdict_or_str(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


def code_state(root: Path = ROOT) -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it ({} outside git)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD").strip()
    if not commit:
        return {}
    dirty = [line[3:] for line in git("status", "--porcelain", "-uno").splitlines()]
    return {"commit": commit, "dirty": dirty}


def record_provenance(run_dir: Path) -> None:
    """Append to RUN/provenance.json when (UTC) and from which commit this invocation started
    the run: the report checks each regulated run against the protocol's commit."""
    path = run_dir / "provenance.json"
    starts = json.loads(path.read_text())["starts"] if path.is_file() else []
    starts.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **code_state()})
    path.write_text(json.dumps({"starts": starts}, indent=1) + "\n")
