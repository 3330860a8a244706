"""The fused update on one flat buffer: the bandwidth-bound implementation.

The buffer is cut once into pieces of at most `chunk` elements (a plan cached per view) that
never straddle a modality, nor a parameter where the update needs per-parameter values. On CUDA
one Triton kernel does the whole pass (`inforeg.kernels.triton`). On CPU each piece runs a few
in-place torch ops while it is in cache (statistic, scale, ``w - anchor`` into a scratch chunk,
multiply-add, statistic), so memory traffic is the minimum: read g, w and anchor once, write g
once. There is no per-parameter Python work beyond the loop over pieces (about 90 for two
ResNet-18 encoders) and no host sync: on CPU the coefficients already live in host memory, and a
modality whose alpha is exactly 0 skips its reads of w and anchor (adding ``0 * (w - anchor)``
would leave g unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inforeg.groups import ModalityGroups, Segment
from inforeg.kernels.update import GradientUpdate, modality_sums, noise_generator
from inforeg.kernels.views import FlatSet

DEFAULT_CHUNK = 1 << 18
"""Elements per CPU piece: 1 MiB of fp32, so g, w, anchor and the scratch stay in a 2 MiB L2
per core; measured on the 2-core bench machine, 2^17..2^19 are equally fast (docs/regulator.md)."""


@dataclass(frozen=True)
class CpuPlan:
    sizes: list[int]  # split sizes covering the whole buffer, gaps included
    pieces: list[tuple[int, int, int, int]]  # (split index, param, modality, length) of covered
    params: Tensor  # (K,) long, ParamInfo.index per piece (-1 in a merged plan)
    modality: Tensor  # (K,) long, head-order modality index per piece
    max_len: int
    merged: bool  # pieces may span several parameters of one modality


def cpu_plan(
    segments: tuple[Segment, ...], numel: int, groups: ModalityGroups, chunk: int, merged: bool
) -> CpuPlan:
    """Cut the buffer into pieces of at most `chunk` elements that never straddle a parameter
    (or, `merged`, a modality: adjacent parameters of one modality form one run, so the many
    small batch-norm tensors do not each cost a round of op dispatches)."""
    runs: list[list[int]] = []  # [start, length, param, modality]
    for seg in segments:
        modality = groups.params[seg.param].modality_index
        last = runs[-1] if runs else None
        if merged and last and last[3] == modality and last[0] + last[1] == seg.start:
            last[1] += seg.length
        else:
            runs.append([seg.start, seg.length, -1 if merged else seg.param, modality])
    sizes: list[int] = []
    pieces: list[tuple[int, int, int, int]] = []
    pos = 0
    for start, length, param, modality in runs:
        if start > pos:
            sizes.append(start - pos)  # uncovered gap: never touched
        for off in range(0, length, chunk):
            n = min(chunk, length - off)
            pieces.append((len(sizes), param, modality, n))
            sizes.append(n)
        pos = start + length
    if numel > pos:
        sizes.append(numel - pos)
    return CpuPlan(
        sizes,
        pieces,
        torch.tensor([p for _, p, _, _ in pieces], dtype=torch.long),
        torch.tensor([m for _, _, m, _ in pieces], dtype=torch.long),
        max((n for *_, n in pieces), default=0),
        merged,
    )


def regulate_flat(
    fset: FlatSet, update: GradientUpdate, groups: ModalityGroups, *, chunk: int = DEFAULT_CHUNK
) -> Tensor:
    """Apply `update` to the covered segments of `fset` in place; returns the (M,) statistic."""
    if update.alpha is not None and fset.anchor is None:
        raise ValueError("the update pulls toward anchors, but none was snapshotted")
    if fset.grad.device.type == "cuda":
        from inforeg.kernels.triton import regulate_flat_triton

        return regulate_flat_triton(fset, update, groups)
    if fset.grad.device.type != "cpu":
        raise ValueError(f"flat runs on CPU or CUDA, got {fset.grad.device}; use foreach")
    return _regulate_cpu(fset, update, groups, chunk)


def _views(fset: FlatSet, name: str, tensor: Tensor, plan: CpuPlan) -> tuple[Tensor, ...]:
    # split_with_sizes is one call for all pieces; re-done only when the buffer or plan changes
    key = f"views:{name}"
    cached = fset.cache.get(key)
    if cached is None or cached[0] is not tensor or cached[1] is not plan:
        cached = (tensor, plan, tensor.split_with_sizes(plan.sizes))
        fset.cache[key] = cached
    return cached[2]


def _regulate_cpu(
    fset: FlatSet, update: GradientUpdate, groups: ModalityGroups, chunk: int
) -> Tensor:
    # per-parameter pieces only where the update needs a parameter's kind, std or numel
    merged = (
        not (update.scale is not None and update.scale_conv_only)
        and update.noise_std is None
        and update.stat != "official"
    )
    key = f"cpu_plan:{chunk}:{merged}"
    if key not in fset.cache:
        fset.cache[key] = cpu_plan(fset.segments, fset.grad.numel(), groups, chunk, merged)
    plan: CpuPlan = fset.cache[key]
    gv = _views(fset, "grad", fset.grad, plan)
    stats = torch.zeros(len(plan.pieces), dtype=torch.float32)
    out = stats.unbind()  # 0-dim views: torch.dot(..., out=) writes each piece's sum in place
    stat_before, stat_after = update.stat == "paper", update.stat == "official"
    upcast = fset.grad.dtype != torch.float32
    stage = torch.empty(plan.max_len) if upcast else None
    scratch = torch.empty(plan.max_len)

    scale = update.scale.unbind() if update.scale is not None else None
    conv = [p.is_conv_weight for p in groups.params]
    alpha = alpha_host = None
    if update.alpha is not None:
        assert fset.anchor is not None
        alpha, alpha_host = update.alpha.unbind(), update.alpha.tolist()  # host memory: no sync
        wv = _views(fset, "weight", fset.weight, plan)
        av = _views(fset, "anchor", fset.anchor, plan)
    std = std_host = gen = None
    if update.noise_std is not None:
        std, std_host = update.noise_std.unbind(), update.noise_std.tolist()
        gen = noise_generator(update.noise_seed, torch.device("cpu"))

    for k, (i, p, m, n) in enumerate(plan.pieces):
        g = gv[i]
        x = g
        if stage is not None:
            x = stage[:n]
            x.copy_(g)
        if stat_before:
            torch.dot(x, x, out=out[k])
        if scale is not None and (not update.scale_conv_only or conv[p]):
            x.mul_(scale[m])
        if alpha is not None and alpha_host is not None and alpha_host[m] != 0.0:
            d = scratch[:n]
            torch.sub(wv[i], av[i], out=d)
            x.addcmul_(d, alpha[m])
        if std is not None and std_host is not None and std_host[p] != 0.0:
            z = scratch[:n]
            torch.randn(n, generator=gen, out=z)
            x.addcmul_(z, std[p])
        if stat_after:
            torch.dot(x, x, out=out[k])
        if stage is not None:
            g.copy_(x)
    if plan.merged:  # paper statistic (weight 1) or none
        out_m = torch.zeros(groups.num_modalities, dtype=torch.float32)
        return out_m if update.stat is None else out_m.index_add_(0, plan.modality, stats)
    return modality_sums(stats, plan.params, groups, update.stat)


def moments_flat(fset: FlatSet, groups: ModalityGroups) -> Tensor:
    """(P, 2) float64 per-parameter (sum g, sum g^2) over the covered segments, for the GE
    noise's std (OGM-GE only): one Triton launch on CUDA, a pass per segment on CPU."""
    device = fset.grad.device
    if device.type == "cuda":
        from inforeg.kernels.triton import moments_flat_triton

        return moments_flat_triton(fset, groups)
    out = torch.zeros(len(groups.params), 2, dtype=torch.float64, device=device)
    for seg in fset.segments:
        x = fset.grad[seg.start : seg.start + seg.length].float()
        out[seg.param, 0] += x.sum().double()
        out[seg.param, 1] += torch.dot(x, x).double()
    return out
