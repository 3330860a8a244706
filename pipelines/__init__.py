"""Loaders over preprocessed shards (FFCV, DALI); a plain-PyTorch reference; one batch contract.

`build_loader(LoaderSpec(...))` is the one way to get a loader: it imports only the chosen
pipeline's module (DALI and FFCV are heavy imports), and every loader honours `contract.Loader`.
Building or iterating a loader never changes the process's torch thread count (importing FFCV
sets it to 1, which would halve a CPU trainer's compute).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from pipelines.contract import Loader, LoaderError, LoaderSpec

# pipeline name -> "module:function" taking a LoaderSpec and returning a Loader.
PIPELINES: dict[str, str] = {
    "dali": "pipelines.dali:build",
    "ffcv": "pipelines.ffcv:build",
    "reference": "pipelines.reference:build",
}

# pipeline name -> the dataset format it reads (`inforeg-preprocess build --formats`).
PIPELINE_FORMAT: dict[str, str] = {"ffcv": "ffcv", "dali": "dali", "reference": "frames"}


def build_loader(spec: LoaderSpec) -> Loader:
    """The loader `spec.pipeline` names, built from `spec` (ValueError for an unknown name)."""
    target = PIPELINES.get(spec.pipeline)
    if target is None:
        raise ValueError(f"pipeline {spec.pipeline!r} is unknown; choose from {sorted(PIPELINES)}")
    module_name, _, function = target.partition(":")
    threads = torch.get_num_threads()
    try:
        builder: Any = getattr(importlib.import_module(module_name), function)
        loader: Loader = builder(spec)
    finally:
        torch.set_num_threads(threads)  # the trainer's to set, whatever a library's import does
    return loader


__all__ = ["PIPELINES", "PIPELINE_FORMAT", "Loader", "LoaderError", "LoaderSpec", "build_loader"]
