"""The pipelines, by name: the one list every other place derives from.

`PIPELINES` maps a `LoaderSpec.pipeline` / `data.pipeline` name to its loader class (named by
import path, so that reading the registry imports neither DALI nor FFCV) and the stored format it
reads (`inforeg-preprocess build --formats`). To add a pipeline: a module with a class taking
`(spec, info)` that honours `contract.Loader`, and one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class PipelineEntry:
    loader: str
    """`module:Class` of the loader, built as `Class(spec, info)`."""
    format: str
    """The dataset format it reads (a folder of the dataset, an option of `build --formats`)."""

    def loader_class(self) -> Any:
        """The loader class (imports its module: DALI and FFCV are heavy imports)."""
        module_name, _, name = self.loader.partition(":")
        return getattr(importlib.import_module(module_name), name)


PIPELINES: dict[str, PipelineEntry] = {
    "dali": PipelineEntry(loader="pipelines.dali:DaliLoader", format="dali"),
    "ffcv": PipelineEntry(loader="pipelines.ffcv:FFCVLoader", format="ffcv"),
    "reference": PipelineEntry(loader="pipelines.reference:ReferenceLoader", format="frames"),
}

PIPELINE_FORMAT: dict[str, str] = {name: entry.format for name, entry in PIPELINES.items()}
"""pipeline name -> the dataset format it reads (derived from `PIPELINES`)."""


def pipeline_entry(name: str) -> PipelineEntry:
    """The registry's entry for `name`; ValueError naming the choices for an unknown one."""
    entry = PIPELINES.get(name)
    if entry is None:
        raise ValueError(f"pipeline {name!r} is unknown; choose from {sorted(PIPELINES)}")
    return entry
