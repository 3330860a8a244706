"""GPU check: the regulator's Triton pass on two ResNet-18 encoders (22.3 M parameters).

`check_pass`: the Triton pass (``flat`` on CUDA) equals the eager reference for InfoReg's pull,
OGM's conv-only scale and a statistic-only pass, in fp32 and bf16; GE noise has the asked std
and the official statistic is exactly the sum over the gradients the kernel wrote (no noise
from lanes past a parameter's end); the one-launch moments equal the per-tensor ones.

`check_bandwidth`: device time of one call (CUDA events, L2 flushed: `bench.cuda_time`) against
a device-to-device copy of the same buffer, as effective bandwidth = the bytes the update must
move / time; the goal is >= 70 % of the copy's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.cuda_time import device_ms, host_us_per_call
from inforeg.groups import ModalityGroups
from inforeg.kernels import GradientUpdate, ParamGradients, regulate_
from inforeg.kernels.flat import moments_flat
from inforeg.kernels.triton import regulate_flat_triton
from inforeg.model import EncoderConfig, InputSpec, ModelConfig, MultimodalModel, build_model

GOAL = 0.70  # of a device-to-device copy's bandwidth
# The statistic is ~5,500 fp32 block sums per modality added by fp32 atomics in arbitrary order:
# a random walk of roundings, ~sqrt(5500) * 2^-24 = 4e-6 relative, rarely past 1e-5; a block
# missed or counted twice is >= 1/5500 = 1.8e-4 off, so 1e-4 still catches one.
STAT_RTOL = 1e-4
PASS, FAIL = "PASS", "FAIL"


def resnet18_pair(
    device: torch.device | str, dtype: torch.dtype = torch.float32
) -> MultimodalModel:
    """The paper's audio-video model: two ResNet-18 encoders and one linear head."""
    enc = {"audio": EncoderConfig(kind="resnet18"), "video": EncoderConfig(kind="resnet18")}
    model = build_model(ModelConfig(encoders=enc), InputSpec(), 6)
    return model.to(device=device, dtype=dtype)


def prepared(
    device: torch.device | str, dtype: torch.dtype, seed: int = 0
) -> tuple[ModalityGroups, ParamGradients]:
    """Random gradients (N(0, 1)) in a contiguous view, the anchor taken, then the weights moved
    (N(0, 0.01^2)): the same values for the same seed and dtype."""
    torch.manual_seed(seed)
    model = resnet18_pair(device, dtype)
    groups = ModalityGroups.from_model(model)
    view = ParamGradients(groups, contiguous=True)
    fset = view.flat_set()
    assert fset is not None
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    n = fset.grad.numel()
    with torch.no_grad():
        fset.grad.copy_(torch.randn(n, generator=gen, device=device))
        view.snapshot_anchor()
        fset.weight.add_(torch.randn(n, generator=gen, device=device), alpha=0.01)
    return groups, view


def _updates(device: torch.device) -> dict[str, GradientUpdate]:
    t = lambda *v: torch.tensor(v, device=device)  # noqa: E731
    return {
        "pull": GradientUpdate(alpha=t(1.3, 0.0), stat="paper"),
        "pull-both": GradientUpdate(alpha=t(0.7, 1.9), stat="official"),
        "ogm-scale": GradientUpdate(scale=t(0.25, 1.0), scale_conv_only=True, stat="paper"),
        "stat-only": GradientUpdate(stat="paper"),
    }


def _grad(view: ParamGradients) -> Tensor:
    fset = view.flat_set()
    assert fset is not None
    return fset.grad


def compare_deterministic(device: torch.device) -> tuple[bool, str]:
    """Triton vs reference on the deterministic updates, fp32 and bf16."""
    ok, worst_g, worst_s = True, 0.0, 0.0
    for dtype in (torch.float32, torch.bfloat16):
        # fp32: fused multiply-add rounding; bf16: one bf16 ulp after the same fp32 result
        rtol = 0.0 if dtype == torch.float32 else 2**-7
        for name, update in _updates(device).items():
            _, ref = prepared(device, dtype)
            _, tri = prepared(device, dtype)
            want = regulate_(ref, update, "reference")
            got = regulate_(tri, update, "flat")
            g_ref, g_tri = _grad(ref).float(), _grad(tri).float()
            diff = (g_tri - g_ref).abs()
            ok &= bool((diff <= 1e-6 + rtol * g_ref.abs()).all())
            worst_g = max(worst_g, diff.max().item())
            s_err = ((got - want).abs() / want.abs().clamp_min(1e-30)).max().item()
            ok &= s_err <= STAT_RTOL
            worst_s = max(worst_s, s_err)
            if not ok:
                return False, f"{dtype}/{name}: max |g diff| {diff.max():.2e}, stat rel {s_err:.1e}"
    return ok, f"max |g diff| {worst_g:.1e}, statistic rel err {worst_s:.1e}"


def check_noise(device: torch.device) -> tuple[bool, str]:
    """GE noise std on a large conv weight, and the official statistic over what was written."""
    groups, view = prepared(device, torch.float32)
    before = _grad(view).clone()
    conv = groups.table("conv_weight", device)
    std = torch.where(conv, 0.5, 0.25).float()  # every parameter noised: all block tails too
    update = GradientUpdate(noise_std=std, noise_seed=5, stat="official")
    stat = regulate_(view, update, "flat")
    after = _grad(view)
    fset = view.flat_set()
    assert fset is not None
    weights = groups.table("stat_official", device).double()
    want = torch.zeros(groups.num_modalities, dtype=torch.float64, device=device)
    big = max((s for s in fset.segments if groups.params[s.param].is_conv_weight),
              key=lambda s: s.length)  # fmt: skip
    for seg in fset.segments:
        g = after[seg.start : seg.start + seg.length].double()
        want[groups.params[seg.param].modality_index] += weights[seg.param] * torch.dot(g, g)
    noise = (after - before)[big.start : big.start + big.length]
    sd, mean = noise.std().item(), noise.mean().item()
    s_err = ((stat.double() - want).abs() / want).max().item()
    ok = abs(sd - 0.5) < 0.005 and abs(mean) < 0.005 and s_err < STAT_RTOL
    return ok, f"GE noise std {sd:.4f} (asked 0.5), official stat vs written g rel err {s_err:.1e}"


def check_moments(device: torch.device) -> tuple[bool, str]:
    """The one-launch moments against float64 sums of each parameter's gradient."""
    groups, view = prepared(device, torch.float32)
    fset = view.flat_set()
    assert fset is not None
    got = moments_flat(fset, groups)  # one Triton launch on CUDA
    want = torch.zeros_like(got)
    for seg in fset.segments:
        g = fset.grad[seg.start : seg.start + seg.length].double()
        want[seg.param, 0] += g.sum()
        want[seg.param, 1] += torch.dot(g, g)
    scale = want[:, 1].sqrt()  # |sum g| is judged against sqrt(sum g^2)
    e_sum = ((got[:, 0] - want[:, 0]).abs() / scale.clamp_min(1e-30)).max().item()
    e_sq = ((got[:, 1] - want[:, 1]).abs() / want[:, 1].clamp_min(1e-30)).max().item()
    # fp32 sums within a block of 2048, fp64 across blocks: ~1e-7
    return e_sum < 1e-5 and e_sq < 1e-5, f"moments rel err {max(e_sum, e_sq):.1e}"


def check_pass() -> tuple[str, str]:
    device = torch.device("cuda")
    parts = [compare_deterministic(device), check_noise(device), check_moments(device)]
    ok = all(p[0] for p in parts)
    return (PASS if ok else FAIL), "; ".join(p[1] for p in parts) + " (fp32 and bf16 grads)"


def check_bandwidth() -> tuple[str, str]:
    device = torch.device("cuda")
    groups, view = prepared(device, torch.float32)
    fset = view.flat_set()
    assert fset is not None
    n = fset.grad.numel()
    sizes = [sum(p.numel for p in groups.params if p.modality == m) for m in groups.modalities]
    src, dst = torch.randn(n, device=device), torch.empty(n, device=device)
    copy_ms = device_ms(lambda: dst.copy_(src))
    copy_gbps = 8 * n / copy_ms / 1e6  # read + write, 4 bytes each
    t = lambda *v: torch.tensor(v, device=device)  # noqa: E731
    cases = {  # name: (update, bytes it must move)
        "pull both": (GradientUpdate(alpha=t(1.2, 1.2), stat="paper"), 16 * n),
        "pull one": (GradientUpdate(alpha=t(1.2, 0.0), stat="paper"), 16 * sizes[0] + 4 * sizes[1]),
        "stat only": (GradientUpdate(stat="paper"), 4 * n),
    }
    figures, shares = [], {}
    for name, (update, moved) in cases.items():

        def call(u: GradientUpdate = update) -> Tensor:
            return regulate_flat_triton(fset, u, groups)

        ms = device_ms(call)
        shares[name] = moved / ms / 1e6 / copy_gbps
        figures.append(f"{name} {ms * 1e3:.0f} us = {shares[name]:.0%}")
    host_us = host_us_per_call(lambda: regulate_(view, cases["pull both"][0], "flat"))
    ok = shares["pull both"] >= GOAL
    return (PASS if ok else FAIL), (
        f"{n / 1e6:.1f} M params; copy {copy_gbps:,.0f} GB/s; Triton "
        + ", ".join(figures)
        + f" of the copy's bandwidth (goal {GOAL:.0%} for pull both); host {host_us:.0f} us/call"
    )
