"""The regulator registry: method name -> regulator class, the one list of method names.

`inforeg.regulators` registers the shipped methods; `RegulatorConfig` validates ``name`` against
this registry, and `build_regulator` builds from it. A new method is one module with its class
plus one `register` line (docs/ARCHITECTURE.md, "How to add a regulator").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from inforeg.regulators.base import Regulator

REGULATORS: dict[str, type[Regulator]] = {}
"""name -> class, in registration order."""

R = TypeVar("R", bound="type[Regulator]")


def register(cls: R) -> R:
    """Add a regulator class under its ``name``; a name taken by another class is an error."""
    name = cls.name
    if REGULATORS.get(name, cls) is not cls:
        raise ValueError(f"regulator name {name!r} is already registered ({REGULATORS[name]})")
    REGULATORS[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered name (for tests that register a method of their own)."""
    REGULATORS.pop(name, None)


def regulator_class(name: str) -> type[Regulator]:
    """The class registered as `name`; ValueError naming the field and the choices."""
    cls = REGULATORS.get(name)
    if cls is None:
        raise ValueError(f"regulator.name must be one of {tuple(REGULATORS)}, got {name!r}")
    return cls
