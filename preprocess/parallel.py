"""One way to run a function over many items in worker processes (spawned: no inherited state)."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_in_processes(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """`fn` over `items`, results in order: a spawn pool of `workers` processes, inline for one.
    `fn` must be importable (a module-level function) for the workers to find it."""
    if workers <= 1:
        return [fn(item) for item in items]
    with mp.get_context("spawn").Pool(min(workers, max(1, len(items)))) as pool:
        return pool.map(fn, items, chunksize=max(1, len(items) // (8 * workers)))
