"""Loaders over preprocessed shards (FFCV, DALI); a plain-PyTorch reference; one batch contract.

`build_loader(LoaderSpec(...))` is the one way to get a loader: it imports only the chosen
pipeline's module (DALI and FFCV are heavy imports), and every loader honours `contract.Loader`.
`PIPELINES` (`pipelines.registry`) is the one list of pipeline names, with each one's loader class
and stored format. Building or iterating a loader never changes the process's torch thread count
(importing FFCV sets it to 1, which would halve a CPU trainer's compute).
"""

from __future__ import annotations

import torch

from pipelines.registry import PIPELINE_FORMAT, PIPELINES, PipelineEntry, pipeline_entry
from pipelines.spec import Loader, LoaderError, LoaderSpec
from preprocess.schema import DatasetInfo, load_dataset_info


def build_loader(spec: LoaderSpec, info: DatasetInfo | None = None) -> Loader:
    """The loader `spec.pipeline` names, built from `spec` (ValueError for an unknown name).

    `info`: the dataset's description (`dataset.json`) when the caller has read it already (read
    once per rank, passed down); None reads it from `spec.data_dir`.
    """
    entry = pipeline_entry(spec.pipeline)
    if info is None:
        info = load_dataset_info(spec.data_dir)
    threads = torch.get_num_threads()
    try:
        loader: Loader = entry.loader_class()(spec, info)
    finally:
        torch.set_num_threads(threads)  # the trainer's to set, whatever a library's import does
    return loader


__all__ = [
    "PIPELINES",
    "PIPELINE_FORMAT",
    "Loader",
    "LoaderError",
    "LoaderSpec",
    "PipelineEntry",
    "build_loader",
]
