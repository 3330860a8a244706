"""The fused update as one Triton kernel on a flat buffer (CUDA; CPU under TRITON_INTERPRET=1).

One launch does the whole pass: each program takes one block of at most BLOCK elements of one
parameter (a block table built once per view), loads g (and w, anchor only where its modality's
alpha is non-zero), applies scale, pull and noise in fp32 registers, stores g, and adds its
block's weighted sum of g^2 into its modality's slot with one atomic add. The float atomics make
the statistic's last bits depend on block order (run to run on GPU); the gradient update itself
is deterministic. Noise is Philox (``tl.randn``) keyed by the pass seed and the element's index.

Triton has no CPU backend: tests run this kernel on CPU tensors in a subprocess that sets
``TRITON_INTERPRET=1`` before importing triton (the variable must never be set behind a user's
back, so this module does not touch it).
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
    mask = idx < n
    offs = start + idx
    x = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    s = 0.0
    if STAT == 1:
        s = tl.sum(x * x, axis=0)
    if HAS_SCALE:
        k = tl.load(SCALE + m)
        if CONV_ONLY:
            k = tl.where(tl.load(P_CONV + p) != 0, k, 1.0)
        x = x * k
    if HAS_ALPHA:
        a = tl.load(ALPHA + m)
        if a != 0.0:  # an unregulated modality's w and anchor are never read
            w = tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
            anchor = tl.load(A + offs, mask=mask, other=0.0)
            x = x + a * (w - anchor)
    if HAS_NOISE:
        sd = tl.load(STD + p)
        x = x + sd * tl.randn(seed, offs.to(tl.int32))
    if STAT == 2:
        s = tl.sum(x * x, axis=0)
    tl.store(G + offs, x.to(G.dtype.element_ty), mask=mask)
    if STAT != 0:
        tl.atomic_add(STATS + m, s * tl.load(P_STAT + p))


@dataclass(frozen=True)
class BlockPlan:
    start: Tensor  # (nblocks,) int64
    length: Tensor  # (nblocks,) int32
    param: Tensor  # (nblocks,) int32


def block_plan(segments: tuple[Segment, ...], device: torch.device, block: int) -> BlockPlan:
    starts: list[int] = []
    lengths: list[int] = []
    params: list[int] = []
    for seg in segments:
        for off in range(0, seg.length, block):
            starts.append(seg.start + off)
            lengths.append(min(block, seg.length - off))
            params.append(seg.param)
    return BlockPlan(
        torch.tensor(starts, dtype=torch.int64, device=device),
        torch.tensor(lengths, dtype=torch.int32, device=device),
        torch.tensor(params, dtype=torch.int32, device=device),
    )


def regulate_flat_triton(
    fset: FlatSet, update: GradientUpdate, groups: ModalityGroups, *, block: int = BLOCK
) -> Tensor:
    """Apply `update` to the covered segments of `fset` in one launch; returns (M,) fp32."""
    if update.alpha is not None and fset.anchor is None:
        raise ValueError("the update pulls toward anchors, but none was snapshotted")
    device = fset.grad.device
    if fset.grad.numel() >= 2**31:
        raise ValueError("the Triton kernel's noise offsets are int32: buffers must be < 2^31")
    key = f"triton_plan:{block}:{device}"
    if key not in fset.cache:
        fset.cache[key] = block_plan(fset.segments, device, block)
    plan: BlockPlan = fset.cache[key]
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
