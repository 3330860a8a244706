"""Provenance: the protocol commit found in a real git repository, and each run's first start
checked against it (ancestry and time), with runs lacking provenance.json listed unverified."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from studies.provenance import (
    Protocol,
    check,
    check_runs,
    git_is_ancestor,
    protocol_commit,
    provenance_lines,
)

PROTO = Protocol(commit="p" * 40, time=datetime(2026, 12, 3, 5, 0, tzinfo=UTC))


def descends(ancestor: str, commit: str) -> bool:
    return commit.startswith("good")


def start(when: str, commit: str = "good1", dirty: list[str] | None = None) -> dict[str, object]:
    return {"starts": [{"started": when, "commit": commit, "dirty": dirty or []}]}


def test_check_a_run() -> None:
    ok = check("ogm/seed0", start("2026-12-03T06:00:00Z"), PROTO, descends)
    assert ok.verified and ok.commit == "good1" and ok.started == "2026-12-03T06:00:00Z"
    early = check("ogm/seed1", start("2026-12-03T04:59:59Z"), PROTO, descends)
    assert not early.verified and "before the protocol commit" in early.status
    other = check("ogm/seed2", start("2026-12-03T06:00:00Z", "bad1"), PROTO, descends)
    assert "does not descend from the protocol commit" in other.status
    missing = check("ogm/seed3", None, PROTO, descends)
    assert missing.status == "unverified (no provenance.json)"
    dirty = check("ogm/seed4", start("2026-12-03T06:00:00Z", dirty=["studies/x.py"]), PROTO,
                  descends)  # fmt: skip
    assert dirty.verified and dirty.dirty == ("studies/x.py",)
    # only the first start counts (a resumed run keeps its first start)
    resumed = {
        "starts": [
            *start("2026-12-03T04:00:00Z")["starts"],  # type: ignore[list-item]
            *start("2026-12-03T07:00:00Z")["starts"],
        ]
    }  # type: ignore[list-item]
    assert not check("x/seed0", resumed, PROTO, descends).verified


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_protocol_commit_and_runs_in_a_real_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "before")
    before = git(repo, "rev-parse", "HEAD")
    (repo / "docs" / "study-protocol.md").write_text("protocol")
    git(repo, "add", "docs")
    git(repo, "commit", "-q", "-m", "protocol")
    proto_commit = git(repo, "rev-parse", "HEAD")
    (repo / "a.txt").write_text("b")
    git(repo, "commit", "-q", "-am", "after")
    (repo / "docs" / "study-protocol.md").write_text("protocol, amended")
    git(repo, "commit", "-q", "-am", "amend the protocol")
    after = git(repo, "rev-parse", "HEAD")

    proto = protocol_commit(repo)
    assert proto is not None and proto.commit == proto_commit
    assert [(h, subject) for h, _, subject in proto.changes] == [
        (after[: len(proto.changes[0][0])], "amend the protocol")
    ]
    assert protocol_commit(tmp_path) is None  # not a repository
    is_ancestor = git_is_ancestor(repo)
    assert is_ancestor(proto_commit, after) and is_ancestor(proto_commit, proto_commit)
    assert not is_ancestor(proto_commit, before)

    later = (proto.time + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    runs = {name: tmp_path / "runs" / name for name in ("ogm/seed0", "ogm/seed1", "pmr/seed0")}
    for folder in runs.values():
        folder.mkdir(parents=True)
    (runs["ogm/seed0"] / "provenance.json").write_text(json.dumps(start(later, after)))
    (runs["ogm/seed1"] / "provenance.json").write_text(json.dumps(start(later, before)))
    checked = check_runs(runs, proto, is_ancestor)
    assert [p.verified for p in checked] == [True, False, False]
    text = "\n".join(provenance_lines(proto, checked))
    assert f"`{proto_commit}`" in text and "**1 of 3 regulated runs**" in text
    assert "- `ogm/seed1`: its commit" in text
    assert "- `pmr/seed0`: unverified (no provenance.json)" in text
    assert "Later commits to the protocol (its section 6 says what each changed and why)" in text
    assert "(amend the protocol, before the first regulated run)." in text
    assert "not verified" in provenance_lines(None, [])[0]
