"""Counter-based randomness: uniforms that are a pure function of (seed, epoch, stream, index).

No stateful RNG anywhere in the loaders: every draw (the epoch's order, each sample's frames,
crops and flips) is a hash of its coordinates, so every loader draws the same ones and a resumed
epoch is bit-identical.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
# Independent streams of draws per (seed, epoch, index).
STREAM_ORDER, STREAM_FRAMES, STREAM_CROP, STREAM_FLIP = 1, 2, 3, 4


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (wrapping): a bijection whose outputs look independent.

    Plain arithmetic only, so the same code compiles with numba (`numba.njit(splitmix64)`) on
    uint64 scalars; numpy arrays wrap silently on overflow.
    """
    z = x + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def counter_hash(seed: int, epoch: int, stream: int, index: np.ndarray) -> np.ndarray:
    """uint64 hash of (seed, epoch, stream, index), elementwise over `index` (any shape)."""
    with np.errstate(over="ignore"):
        key = np.full(1, seed, dtype=np.uint64)
        key = splitmix64(splitmix64(splitmix64(key) + np.uint64(epoch)) + np.uint64(stream))
        return splitmix64(key + np.asarray(index, dtype=np.uint64))


def uniforms(seed: int, epoch: int, stream: int, index: np.ndarray, draws: int) -> np.ndarray:
    """float64 (*index.shape, draws) in [0, 1): the `draws` uniforms of each index in a stream."""
    with np.errstate(over="ignore"):
        base = counter_hash(seed, epoch, stream, index)[..., None]
        counter = np.arange(1, draws + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
        bits = splitmix64(base ^ counter)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
