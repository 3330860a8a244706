"""The layout's rules, checked on the source: import directions, no import cycles, small files.

Rules (docs/ARCHITECTURE.md): `inforeg` is the library and imports none of the other packages;
`preprocess` imports none; `pipelines` only `preprocess` (the shared field schema); `launch` (the
trainer) never imports `studies` or `bench`; nothing imports `bench`, and only `bench` and the
command shims import `studies`. Imports are read from the syntax tree, at module level and inside
functions, except under ``if TYPE_CHECKING:`` (annotations only, never executed).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("inforeg", "pipelines", "preprocess", "launch", "studies", "bench")
MAY_IMPORT = {
    "inforeg": set(),
    "preprocess": set(),
    "pipelines": {"preprocess"},
    "launch": {"inforeg", "pipelines", "preprocess"},
    "studies": {"inforeg", "pipelines", "preprocess", "launch"},
    "bench": {"inforeg", "pipelines", "preprocess", "launch", "studies"},
}
SHIMS = {"launch.compare", "launch.audit"}
"""The former command names (`python -m launch.compare`, `launch.audit`), kept as shims that
forward to `studies`; the trainer never imports them."""
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that runs, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def imports_of(name: str) -> set[str]:
    """The project modules `name` imports at run time."""
    path = SOURCES[name]
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{a.name}" for a in node.names]
            targets = [c if c in SOURCES else base for c in candidates]
        else:
            continue
        out |= {t for t in targets if t.split(".")[0] in PACKAGES and t in SOURCES}
    out.discard(name)
    return out


GRAPH = {name: imports_of(name) for name in SOURCES}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package: str) -> None:
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.split(".")[0] == package and name not in SHIMS
        for target in sorted(targets)
        if target.split(".")[0] not in {package, *MAY_IMPORT[package]}
    ]
    assert wrong == []


def test_no_import_cycles() -> None:
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_files_and_functions_are_small() -> None:
    big = []
    for path in SOURCES.values():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_FILE_LINES:
            big.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length}")
    assert big == []


def test_the_checker_sees_imports() -> None:
    """The graph is not empty by accident: known edges are found."""
    assert "launch.zero" in GRAPH["launch.loop"]
    assert "inforeg.regulators.registry" in GRAPH["inforeg.regulators"]
    assert "studies.compare" in GRAPH["launch.compare"]
