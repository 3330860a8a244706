"""Shared test configuration: `gpu`-marked tests skip where no CUDA device is present; FFCV's one
known-harmless error at the end of a session is dropped (see tests/pipelines/conftest.py)."""

from __future__ import annotations

import contextlib
import gc
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch

SHARED_DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not keywords: a folder named gpu
            item.add_marker(skip_gpu)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a test's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _numba_finalizer_key_error(unraisable: Any) -> bool:
    tb = unraisable.exc_traceback
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code if tb is not None else None
    return (
        unraisable.exc_type is KeyError
        and where is not None
        and where.co_name == "finalizer"
        and where.co_filename.endswith("numba/core/dispatcher.py")
    )


@contextlib.contextmanager
def numba_finalizer_errors_dropped() -> Iterator[None]:
    """FFCV's memory managers mutate numba's shared array types (`t.mutable = False`), so when a
    loader's compiled functions are freed, numba's finalizer raises KeyError (harmless: a trainer's
    loaders live as long as the process). Inside, exactly that error is dropped, any other passed
    on; on leaving, unreachable loaders are freed while the filter still holds."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _numba_finalizer_key_error(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
        gc.collect()
    finally:
        sys.unraisablehook = previous


@pytest.fixture(autouse=True)
def _free_loaders() -> Iterator[None]:
    """Each test's FFCV loaders are freed before the next test, their harmless error dropped."""
    with numba_finalizer_errors_dropped():
        yield


def pytest_unconfigure(config: pytest.Config) -> None:
    """Loaders that lived to the session's end are freed here, with that one error dropped."""
    with numba_finalizer_errors_dropped():
        pass
