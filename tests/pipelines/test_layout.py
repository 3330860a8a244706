"""The package's shape: small modules with one job (no file over 450 lines, no function over 80),
and the registry as the one list of pipeline names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pipelines
from pipelines import PIPELINE_FORMAT, PIPELINES, LoaderSpec

PACKAGE = Path(pipelines.__file__).parent


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_files_and_functions_are_small(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") <= 450, f"{path.name}: {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 80, f"{path.name}: {node.name} is {length} lines"


def test_the_registry_names_every_pipeline_once() -> None:
    assert sorted(PIPELINE_FORMAT) == sorted(PIPELINES) == ["dali", "ffcv", "reference"]
    assert {name: e.format for name, e in PIPELINES.items()} == PIPELINE_FORMAT
    for name, entry in PIPELINES.items():
        module, _, cls = entry.loader.partition(":")
        assert (PACKAGE / f"{module.split('.')[-1]}.py").is_file(), name
        assert f"class {cls}(" in (PACKAGE / f"{module.split('.')[-1]}.py").read_text()
    with pytest.raises(ValueError, match=r"'nope' is unknown; choose from \['dali', 'ffcv'"):
        LoaderSpec(pipeline="nope", data_dir=Path("/nonexistent"))
