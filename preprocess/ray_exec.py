"""The `ray` executor: the per-sample stage as Ray tasks, on an existing cluster or a local one.

Ray is an optional extra (`pip install 'inforeg-trainer[ray]'`); it is imported only here, when
`--executor ray` is chosen. Rows go out in small chunks (a few per CPU of the cluster, at most
`MAX_CHUNK` rows each), each chunk one task with `max_retries`: when a worker (or its node) dies,
Ray runs the chunk again elsewhere, and since a row's record appears only complete and a finished
row is kept, a retried chunk redoes only its unfinished rows and nothing is lost or duplicated.
The driver collects the chunks as they finish and moves the progress bar.

On a multi-node cluster every node must see the manifest's media and the output folder at the
same paths (a shared file system) and have this package installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, TypeVar

from tqdm import tqdm

from preprocess.errors import BuildError

T = TypeVar("T")
R = TypeVar("R")

RAY_VERSION = "2.60.0"
INSTALL_HINT = (
    "--executor ray needs Ray, an optional extra: pip install 'inforeg-trainer[ray]' "
    f"(from a clone: pip install -e '.[ray]'; or pip install 'ray=={RAY_VERSION}')"
)
MAX_RETRIES = 3
"""Times a chunk is run again after its worker died (Ray's default, stated)."""
MAX_CHUNK = 8
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20
"""A local cluster's object store: the tasks return small summaries, not media."""


def require_ray() -> ModuleType:
    """The `ray` module, or BuildError (exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BuildError(INSTALL_HINT) from None
    return ray


@contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[ModuleType]:
    """Connected Ray: an existing connection is used as it is; else `address` (or Ray's own
    RAY_ADDRESS variable) is joined, or a local cluster of `workers` CPUs started; what is opened
    here is shut down on leaving."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(
            num_cpus=workers,
            include_dashboard=False,
            logging_level=logging.ERROR,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        )
    try:
        yield ray
    finally:
        ray.shutdown()


def chunk_size(rows: int, cpus: int) -> int:
    """Rows per task: about four tasks per CPU (balance, fine-grained retries), at most
    MAX_CHUNK rows (progress, and little work redone after a lost worker)."""
    return max(1, min(MAX_CHUNK, -(-rows // (4 * max(1, cpus)))))


def _run_chunk(fn: Callable[[Sequence[T]], R], chunk: Sequence[T]) -> R:
    return fn(chunk)


def ray_map(
    fn: Callable[[Sequence[T]], R],
    items: Sequence[T],
    bar: tqdm,
    address: str | None,
    workers: int,
) -> Iterator[R]:
    """`fn` over chunks of `items` as Ray tasks, results as they complete (in any order)."""
    with ray_session(address, workers) as ray:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        size = chunk_size(len(items), cpus)
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_run_chunk)
        fn_ref = ray.put(fn)
        pending: dict[Any, int] = {}
        for start in range(0, len(items), size):
            chunk = list(items[start : start + size])
            pending[task.remote(fn_ref, chunk)] = len(chunk)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                result = ray.get(ref)
                bar.update(pending.pop(ref))
                yield result
