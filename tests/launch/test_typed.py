from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from launch.typed import (
    ConfigError,
    apply_overrides,
    from_mapping,
    read_json,
    read_yaml,
    to_mapping,
)


@dataclass(frozen=True, kw_only=True)
class Inner:
    kind: Literal["a", "b"] = "a"
    size: int = 1

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str
    rate: float = 0.5
    flag: bool = False
    limit: int | None = None
    parts: Mapping[str, Inner] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


def test_round_trip_and_conversions() -> None:
    data = {"name": "x", "rate": 1, "parts": {"p": {"kind": "b", "size": 3}}, "tags": ["t"]}
    cfg = from_mapping(Outer, data)
    assert cfg == Outer(name="x", rate=1.0, parts={"p": Inner(kind="b", size=3)}, tags=("t",))
    assert from_mapping(Outer, to_mapping(cfg)) == cfg
    assert from_mapping(Outer, {"name": "x", "rate": "1e-3"}).rate == 1e-3  # YAML 1.1 string


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "speed": 1}, "unknown key(s): speed"),
        ({"name": "x", "parts": {"p": {"colour": 1}}}, "unknown key(s): parts.p.colour"),
        ({"name": "x", "flag": "yes"}, "flag: expected true/false"),
        ({"name": "x", "limit": 2.5}, "limit: expected an integer"),
        ({"name": "x", "rate": "fast"}, "rate: expected a number"),
        ({"name": "x", "parts": {"p": {"kind": "c"}}}, "parts.p.kind: must be one of"),
        ({"name": "x", "parts": {"p": {"size": 0}}}, "parts.p: size must be >= 1"),
        ({"rate": 1.0}, "missing key(s): name"),
        ({"name": "x", "tags": "t"}, "tags: expected a list"),
    ],
)
def test_errors_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(Outer, data)
    assert message in str(err.value)


def test_overrides_parse_yaml_values_and_create_sections() -> None:
    base = {"name": "x", "parts": {"p": {"size": 2}}}
    out = apply_overrides(base, ["rate=0.25", "flag=true", "parts.p.kind=b", "limit=null"])
    assert out == {
        "name": "x",
        "rate": 0.25,
        "flag": True,
        "limit": None,
        "parts": {"p": {"size": 2, "kind": "b"}},
    }
    assert base == {"name": "x", "parts": {"p": {"size": 2}}}
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        apply_overrides(base, ["rate"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides(base, ["name.first=1"])


def test_readers_reject_duplicate_keys(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("name: x\nrate: 1\nname: y\n")
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        read_yaml(y)
    j = tmp_path / "c.json"
    j.write_text('{"a": {"b": 1, "b": 2}}')
    with pytest.raises(ConfigError, match="duplicate key"):
        read_json(j)
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
