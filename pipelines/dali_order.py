"""The order DALI's file readers give one shard for one epoch, as a pure function (no DALI).

The DALI loader keeps one pipeline for the whole run and feeds it by sample index, so the order
must be known before the graph sees a sample. Until it did, a reader built per epoch
(`fn.readers.webdataset(shard_id, num_shards, random_shuffle, initial_fill, seed)`) decided it;
`reader_order` reproduces what such a reader returns in its first epoch, sample for sample, so the
loader's order is unchanged. What DALI does (`dali/operators/reader/loader/loader.h`, DALI 2.4;
transcribed, not copied):

- samples are read sequentially from the shard's first one, into a ring buffer of `initial_fill`
  slots (1 without shuffling), filled before the first sample is returned;
- each returned sample is drawn from the buffered samples of the current epoch by
  `std::uniform_int_distribution<int>(0, buffered - 1)` on `std::default_random_engine` (libstdc++:
  `minstd_rand0`) seeded through `std::seed_seq{seed}`, and swapped out for the next sample read.

`tests/pipelines/test_dali_order.py` checks it against DALI's reader for shuffled, local-buffer and
sequential reads, several seeds and shard layouts.
"""

from __future__ import annotations

import numpy as np

_M32 = 0xFFFFFFFF
_MINSTD_A, _MINSTD_M = 16807, 2147483647  # minstd_rand0: x <- 16807 x mod (2^31 - 1)


def seed_seq(seed: int, n: int = 4) -> list[int]:
    """`std::seed_seq{seed}.generate` of `n` 32-bit words ([rand.util.seedseq])."""
    v = [seed & _M32]
    s, out = len(v), [0x8B8B8B8B] * n
    t = 11 if n >= 623 else 7 if n >= 68 else 5 if n >= 39 else 3 if n >= 7 else (n - 1) // 2
    p, q, m = (n - t) // 2, (n - t) // 2 + t, max(s + 1, n)

    def mix(x: int) -> int:
        return x ^ (x >> 27)

    for k in range(m):
        r1 = (1664525 * mix(out[k % n] ^ out[(k + p) % n] ^ out[(k - 1) % n])) & _M32
        r2 = (r1 + (s if k == 0 else (k % n + v[k - 1] if k <= s else k % n))) & _M32
        out[(k + p) % n] = (out[(k + p) % n] + r1) & _M32
        out[(k + q) % n] = (out[(k + q) % n] + r2) & _M32
        out[k % n] = r2
    for k in range(m, m + n):
        r3 = (1566083941 * mix((out[k % n] + out[(k + p) % n] + out[(k - 1) % n]) & _M32)) & _M32
        r4 = (r3 - k % n) & _M32
        out[(k + p) % n] ^= r3
        out[(k + q) % n] ^= r4
        out[k % n] = r4
    return out


class Minstd:
    """libstdc++'s `minstd_rand0` seeded from a `seed_seq`, and its `uniform_int_distribution`."""

    def __init__(self, seed: int):
        x = seed_seq(seed)[3] % _MINSTD_M  # k = 1 word for a 31-bit modulus: the 4th
        self.x = x if x else 1

    def below(self, span: int) -> int:
        """A uniform int in [0, span] (libstdc++'s two-division rejection for a 31-bit engine)."""
        rng_range = _MINSTD_M - 2  # max() - min() = (m - 1) - 1
        scaling = rng_range // (span + 1)
        past = (span + 1) * scaling
        while True:
            self.x = self.x * _MINSTD_A % _MINSTD_M
            r = self.x - 1
            if r < past:
                return r // scaling


def reader_order(part: int, *, shuffle: bool, initial_fill: int, seed: int) -> np.ndarray:
    """int64 (part,): positions within the shard (0 = its first stored sample) in the order a
    fresh DALI reader returns them in its first epoch."""
    if part < 1:
        raise ValueError(f"a reader's shard needs a sample, got {part}")
    if not shuffle:
        return np.arange(part, dtype=np.int64)
    fill = int(initial_fill)
    if fill < 1:
        raise ValueError(f"initial_fill must be >= 1, got {fill}")
    rng = Minstd(seed)
    ring = list(range(fill))  # ring[p % fill] = position read at p (past `part`: the next epoch's)
    out = np.empty(part, dtype=np.int64)
    for i in range(part):
        buffered = min(part, fill + i) - i  # this epoch's samples in the buffer
        j = (i + rng.below(buffered - 1)) % fill
        here = i % fill
        ring[j], ring[here] = ring[here], ring[j]
        out[i] = ring[here]
        ring[here] = fill + i  # the next sample read takes the returned one's slot
    return out
