"""The fused update as one Triton kernel on a flat buffer (CUDA; CPU under TRITON_INTERPRET=1).

One launch does the whole pass: each program takes one block of at most BLOCK elements of one
parameter (a block table built once per view), loads g (and w, anchor only where its modality's
alpha is non-zero), applies scale, pull and noise in fp32 registers, stores g only where the
update changes something (a modality with alpha = 0, scale 1 and no noise is only read, for the
statistic), and adds its block's weighted sum of g^2 into its modality's slot with one atomic
add. The float atomics make the statistic's last bits depend on block order (run to run on GPU);
the gradient update itself is deterministic. Noise is Philox (``tl.randn``) keyed by the pass
seed and the element's index.

Blocks are cut at multiples of BLOCK of the buffer, so every full block starts BLOCK-aligned:
the kernel loads and stores it without a mask through offsets the compiler can prove aligned
and contiguous (128-bit vector accesses); only a parameter's first and last blocks are masked.
Masked-off lanes never get noise, so the "official" statistic (summed after the update) counts
real elements only.

`moments_flat_triton` is the GE noise's per-parameter (sum g, sum g^2) as one launch over the
same block table (fp32 block sums added into fp64 slots), instead of a few torch reductions per
segment.

Triton has no CPU backend: tests run these kernels on CPU tensors in a subprocess that sets
``TRITON_INTERPRET=1`` before importing triton (the variable must never be set behind a user's
back, so this module does not touch it). The language features used (``tl.randn``,
``tl.atomic_add`` on fp32 and fp64, ``tl.where``, scalar ``if``) are in Triton 3.x, the one that
ships with torch 2.11 (3.6) and the pinned one; tests/inforeg/kernels/test_triton_api.py checks
them and that the full-block path compiles to vector loads for sm_90.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from inforeg.groups import ModalityGroups, Segment
from inforeg.kernels.update import GradientUpdate
from inforeg.kernels.views import FlatSet

BLOCK = 2048
NUM_WARPS = 4
STAT_CODES = {None: 0, "paper": 1, "official": 2}


@triton.jit
def _update_block(
    G, W, A, offs, mask, m, p,
    P_CONV, P_STAT, SCALE, ALPHA, STD, STATS, seed,
    HAS_SCALE: tl.constexpr, CONV_ONLY: tl.constexpr, HAS_ALPHA: tl.constexpr,
    HAS_NOISE: tl.constexpr, STAT: tl.constexpr, FULL: tl.constexpr,
):  # fmt: skip
    # FULL: every lane is in bounds (no mask: vector accesses); else lanes past `mask` are off
    if FULL:
        x = tl.load(G + offs).to(tl.float32)
    else:
        x = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    s = 0.0
    if STAT == 1:
        s = tl.sum(x * x, axis=0)
    if HAS_SCALE or HAS_ALPHA or HAS_NOISE:  # else a statistic-only pass: g is never stored
        changed = m < 0  # a False scalar; True once a coefficient of this block changes g
        if HAS_SCALE:
            k = tl.load(SCALE + m)
            if CONV_ONLY:
                k = tl.where(tl.load(P_CONV + p) != 0, k, 1.0)
            changed = changed | (k != 1.0)
        if HAS_ALPHA:
            a = tl.load(ALPHA + m)
            changed = changed | (a != 0.0)
        if HAS_NOISE:
            sd = tl.load(STD + p)
            changed = changed | (sd != 0.0)
        if changed:  # else g is left as it is: read for the statistic only, never stored
            if HAS_SCALE:
                x = x * k
            if HAS_ALPHA:  # noqa: SIM102  (compile-time test, then a run-time one)
                if a != 0.0:  # an unregulated modality's w and anchor are never read
                    if FULL:
                        w = tl.load(W + offs).to(tl.float32)
                        anchor = tl.load(A + offs)
                    else:
                        w = tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
                        anchor = tl.load(A + offs, mask=mask, other=0.0)
                    x = x + a * (w - anchor)
            if HAS_NOISE:
                z = sd * tl.randn(seed, offs.to(tl.int32))
                if not FULL:
                    z = tl.where(mask, z, 0.0)  # lanes past the block get none (they are summed)
                x = x + z
            if FULL:
                tl.store(G + offs, x.to(G.dtype.element_ty))
            else:
                tl.store(G + offs, x.to(G.dtype.element_ty), mask=mask)
    if STAT == 2:
        s = tl.sum(x * x, axis=0)
    if STAT != 0:
        tl.atomic_add(STATS + m, s * tl.load(P_STAT + p))


@triton.jit
def _regulate_kernel(
    G, W, A,  # flat grad (fp32/bf16/fp16), weight, anchor (fp32)
    BLK_START, BLK_LEN, BLK_PARAM,  # (nblocks,) int64, int32, int32
    P_MOD, P_CONV, P_STAT,  # (P,) int32 modality, int32 conv-weight flag, fp32 statistic weight
    SCALE, ALPHA, STD, STATS,  # (M,), (M,), (P,) fp32 coefficients; (M,) fp32 output
    seed,
    HAS_SCALE: tl.constexpr, CONV_ONLY: tl.constexpr, HAS_ALPHA: tl.constexpr,
    HAS_NOISE: tl.constexpr, STAT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    start = tl.load(BLK_START + pid)
    n = tl.load(BLK_LEN + pid)
    p = tl.load(BLK_PARAM + pid)
    m = tl.load(P_MOD + p)
    idx = tl.arange(0, BLOCK)
    if n == BLOCK:
        # a full block starts at a multiple of BLOCK (block_plan): written so the compiler sees it
        offs = (start // BLOCK) * BLOCK + idx
        _update_block(
            G, W, A, offs, idx < n, m, p, P_CONV, P_STAT, SCALE, ALPHA, STD, STATS, seed,
            HAS_SCALE, CONV_ONLY, HAS_ALPHA, HAS_NOISE, STAT, True,
        )  # fmt: skip
    else:
        _update_block(
            G, W, A, start + idx, idx < n, m, p, P_CONV, P_STAT, SCALE, ALPHA, STD, STATS, seed,
            HAS_SCALE, CONV_ONLY, HAS_ALPHA, HAS_NOISE, STAT, False,
        )  # fmt: skip


@triton.jit
def _moments_kernel(G, BLK_START, BLK_LEN, BLK_PARAM, OUT, BLOCK: tl.constexpr):
    # OUT: (P, 2) fp64, row-major: [p, 0] += sum g, [p, 1] += sum g^2 (fp32 within a block)
    pid = tl.program_id(0)
    start = tl.load(BLK_START + pid)
    n = tl.load(BLK_LEN + pid)
    p = tl.load(BLK_PARAM + pid)
    idx = tl.arange(0, BLOCK)
    if n == BLOCK:
        x = tl.load(G + (start // BLOCK) * BLOCK + idx).to(tl.float32)
    else:
        x = tl.load(G + start + idx, mask=idx < n, other=0.0).to(tl.float32)
    tl.atomic_add(OUT + 2 * p, tl.sum(x, axis=0).to(tl.float64))
    tl.atomic_add(OUT + 2 * p + 1, tl.sum(x * x, axis=0).to(tl.float64))


@dataclass(frozen=True)
class BlockPlan:
    start: Tensor  # (nblocks,) int64
    length: Tensor  # (nblocks,) int32
    param: Tensor  # (nblocks,) int32


def block_bounds(segments: tuple[Segment, ...], block: int) -> list[tuple[int, int, int]]:
    """(start, length, param) of each block: segments cut at the buffer's multiples of `block`,
    so a block of `block` elements always starts at such a multiple (a vector-aligned offset)."""
    out = []
    for seg in segments:
        pos, end = seg.start, seg.start + seg.length
        while pos < end:
            nxt = min(end, (pos // block + 1) * block)
            out.append((pos, nxt - pos, seg.param))
            pos = nxt
    return out


def block_plan(segments: tuple[Segment, ...], device: torch.device, block: int) -> BlockPlan:
    bounds = block_bounds(segments, block)
    return BlockPlan(
        torch.tensor([b[0] for b in bounds], dtype=torch.int64, device=device),
        torch.tensor([b[1] for b in bounds], dtype=torch.int32, device=device),
        torch.tensor([b[2] for b in bounds], dtype=torch.int32, device=device),
    )


def _cached_plan(fset: FlatSet, block: int) -> BlockPlan:
    device = fset.grad.device
    if fset.grad.numel() >= 2**31:
        raise ValueError("the Triton kernel's noise offsets are int32: buffers must be < 2^31")
    key = f"triton_plan:{block}:{device}"
    if key not in fset.cache:
        fset.cache[key] = block_plan(fset.segments, device, block)
    return fset.cache[key]


def regulate_flat_triton(
    fset: FlatSet, update: GradientUpdate, groups: ModalityGroups, *, block: int = BLOCK
) -> Tensor:
    """Apply `update` to the covered segments of `fset` in one launch; returns (M,) fp32."""
    if update.alpha is not None and fset.anchor is None:
        raise ValueError("the update pulls toward anchors, but none was snapshotted")
    device = fset.grad.device
    plan = _cached_plan(fset, block)
    stats = torch.zeros(groups.num_modalities, dtype=torch.float32, device=device)
    nblocks = plan.start.numel()
    if nblocks == 0:
        return stats

    def f32(t: Tensor | None) -> Tensor:
        return stats if t is None else t.to(device=device, dtype=torch.float32).contiguous()

    tables_key = f"triton_tables:{device}"
    if tables_key not in fset.cache:
        fset.cache[tables_key] = (
            groups.table("modality", device).to(torch.int32),
            groups.table("conv_weight", device).to(torch.int32),
        )
    modality, conv = fset.cache[tables_key]
    stat_table = groups.table(f"stat_{update.stat or 'paper'}", device)
    _regulate_kernel[(nblocks,)](
        fset.grad,
        fset.weight,
        fset.anchor if fset.anchor is not None else fset.weight,
        plan.start,
        plan.length,
        plan.param,
        modality,
        conv,
        stat_table,
        f32(update.scale),
        f32(update.alpha),
        f32(update.noise_std),
        stats,
        update.noise_seed,
        HAS_SCALE=update.scale is not None,
        CONV_ONLY=update.scale_conv_only,
        HAS_ALPHA=update.alpha is not None,
        HAS_NOISE=update.noise_std is not None,
        STAT=STAT_CODES[update.stat],
        BLOCK=block,
        num_warps=NUM_WARPS,
    )
    return stats


def moments_flat_triton(fset: FlatSet, groups: ModalityGroups, *, block: int = BLOCK) -> Tensor:
    """(P, 2) float64 per-parameter (sum g, sum g^2) over the covered segments, one launch."""
    plan = _cached_plan(fset, block)
    out = torch.zeros(len(groups.params), 2, dtype=torch.float64, device=fset.grad.device)
    nblocks = plan.start.numel()
    if nblocks:
        _moments_kernel[(nblocks,)](
            fset.grad, plan.start, plan.length, plan.param, out, BLOCK=block, num_warps=NUM_WARPS
        )
    return out
