"""The epoch's sample order for a rank, as a pure function of (seed, epoch, rank)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipelines.rng import STREAM_ORDER, counter_hash
from pipelines.spec import ORDERS, LoaderSpec


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    keys = counter_hash(seed, epoch, STREAM_ORDER, np.arange(n))
    return np.argsort(keys, kind="stable").astype(np.int64)


def _quasi_random(seed: int, epoch: int, groups: np.ndarray, window: int) -> np.ndarray:
    """Groups (pages) in a random order; samples shuffled within windows of `window` groups, so a
    batch reads few pages while still mixing samples of several."""
    uniq, group_of = np.unique(groups, return_inverse=True)
    group_rank = np.empty(uniq.size, dtype=np.int64)
    group_rank[_permutation(seed + 1, epoch, uniq.size)] = np.arange(uniq.size)
    windows = group_rank[group_of] // window
    keys = counter_hash(seed, epoch, STREAM_ORDER, np.arange(groups.size))
    return np.lexsort((keys, windows)).astype(np.int64)


def epoch_order(
    *,
    n: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    batch_size: int,
    train: bool,
    order: str = "random",
    groups: np.ndarray | None = None,
    window: int = 8,
) -> np.ndarray:
    """int64 (samples of this rank,): the sample indices `rank` reads in `epoch`, in order.

    Train: the split's order for the epoch (`random`: a seeded permutation; `quasi_random`: see
    `_quasi_random`, `groups` = each sample's page or shard, None = one group per sample;
    `sequential`), cut to `n // (world_size * batch_size)` full batches per rank: every rank takes
    the same number of steps (DeepSpeed needs it), the < world_size * batch_size remainder is
    dropped (a different set each epoch unless sequential). Rank r reads the r-th contiguous part.
    Eval: 0..n-1 in order, split in `world_size` contiguous parts (sizes differ by at most one),
    every sample exactly once across ranks.
    """
    if n < 1:
        raise ValueError(f"the split has no samples (n={n})")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if not train:
        return np.array_split(np.arange(n, dtype=np.int64), world_size)[rank]
    if order == "random":
        perm = _permutation(seed, epoch, n)
    elif order == "sequential":
        perm = np.arange(n, dtype=np.int64)
    elif order == "quasi_random":
        g = np.arange(n) if groups is None else np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups must have one entry per sample ({n}), got shape {g.shape}")
        perm = _quasi_random(seed, epoch, g, window)
    else:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    steps = n // (world_size * batch_size)
    if steps == 0:
        raise ValueError(
            f"batch_size {batch_size} x world_size {world_size} exceeds the split's {n} samples: "
            "no full batch per rank"
        )
    per_rank = steps * batch_size
    return perm[rank * per_rank : (rank + 1) * per_rank]


def num_batches(samples: int, batch_size: int, train: bool) -> int:
    """Batches from `samples` indices: full ones only in train, the last may be short in eval."""
    return samples // batch_size if train else -(-samples // batch_size)


def batch_slices(order: np.ndarray, batch_size: int, start: int = 0) -> Iterator[np.ndarray]:
    """The batches of an epoch's order (int64 index arrays), from batch `start` on."""
    for b in range(start, -(-order.size // batch_size)):
        yield order[b * batch_size : (b + 1) * batch_size]


def spec_order(
    spec: LoaderSpec, n: int, epoch: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """`epoch_order` for a spec (what every loader calls)."""
    return epoch_order(
        n=n,
        seed=spec.seed,
        epoch=epoch,
        rank=spec.rank,
        world_size=spec.world_size,
        batch_size=spec.batch_size,
        train=spec.train,
        order=spec.traversal,
        groups=groups,
    )
