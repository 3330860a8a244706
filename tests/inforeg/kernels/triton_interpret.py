"""Run the Triton kernel on CPU tensors under TRITON_INTERPRET=1 and compare with the reference.

Started by test_triton.py in a subprocess whose environment sets TRITON_INTERPRET=1 before
triton is imported (the variable is never set in the test process itself). Exits non-zero with
a message on the first mismatch.
"""

from __future__ import annotations

import os
import sys

import torch

from inforeg.kernels import FlatGradients, GradientUpdate, param_moments, regulate_
from inforeg.kernels.triton import moments_flat_triton, regulate_flat_triton
from tests.inforeg.kernels.test_kernels import UPDATES, make


def triton_run(setup, update: GradientUpdate) -> torch.Tensor:
    total = torch.zeros(setup.groups.num_modalities)
    for v in setup.views:
        assert isinstance(v, FlatGradients)
        total += regulate_flat_triton(v.flat_set(), update, setup.groups, block=256)
    return total


def check_masked_lanes_get_no_noise() -> None:
    """GE noise with the official statistic (summed after the update) on parameters whose
    sizes are not multiples of the block: the statistic is the sum over the real elements of
    the noised gradients the kernel wrote, nothing from the lanes past a parameter's end."""
    s = make("flat")
    groups = s.groups
    sizes = [info.numel for info in groups.params]
    assert any(n % 256 for n in sizes), "the tiny model needs a size that is not a multiple"
    std = torch.where(groups.table("conv_weight", "cpu"), 0.5, 0.25).float()
    update = GradientUpdate(noise_std=std, noise_seed=11, stat="official")
    got = triton_run(s, update)
    (view,) = s.views
    weights = groups.table("stat_official", "cpu")
    want = torch.zeros(groups.num_modalities, dtype=torch.float64)
    for seg in view.flat_set().segments:
        g = view.grad[seg.start : seg.start + seg.length].double()
        m = groups.params[seg.param].modality_index
        want[m] += weights[seg.param].double() * torch.dot(g, g)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def check_moments() -> int:
    """The one-launch (sum g, sum g^2) per parameter against the per-tensor reference."""
    checked = 0
    for layout in ("flat", "split"):
        for dtype in (torch.float32, torch.bfloat16):
            s = make(layout, dtype=dtype)
            want = sum(param_moments(v) for v in s.views)
            got = sum(moments_flat_triton(v.flat_set(), s.groups, block=256) for v in s.views)
            # fp32 block sums added in fp64: summation order only
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            checked += 1
    return checked


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("TRITON_INTERPRET=1 must be set before this process starts")
        return 2
    checked = 0
    for layout in ("flat", "split"):
        for dtype in (torch.float32, torch.bfloat16):
            for name, build in UPDATES.items():
                ref = make(layout, dtype=dtype)
                tri = make(layout, dtype=dtype)
                p = len(ref.groups.params)
                want = sum(regulate_(v, build(2, p), "reference") for v in ref.views)
                got = triton_run(tri, build(2, p))
                # fp32: rounding only (fused multiply-add); bf16: one ulp after that rounding
                rtol = 0 if dtype == torch.float32 else 2**-7
                for i, (g, e) in enumerate(zip(tri.grads(), ref.grads(), strict=True)):
                    torch.testing.assert_close(
                        g, e, rtol=rtol, atol=1e-6, msg=f"{layout}/{dtype}/{name} tensor {i}"
                    )
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
                checked += 1
    # GE noise: Philox normals of the requested std on the targeted tensor only
    s = make("flat")
    before = [g.clone() for g in s.grads()]
    big = max(range(len(s.groups.params)), key=lambda i: s.groups.params[i].numel)
    std = torch.zeros(len(s.groups.params))
    std[big] = 0.5
    triton_run(s, GradientUpdate(noise_std=std, noise_seed=3, stat=None))
    params = list(s.model.parameters())
    target = s.groups.parameters()[big]
    for i, (a, b) in enumerate(zip(s.grads(), before, strict=True)):
        if params[i] is target:
            noise = a - b
            assert abs(noise.std().item() - 0.5) < 0.05, noise.std().item()
            assert abs(noise.mean().item()) < 0.05, noise.mean().item()
        else:
            assert torch.equal(a, b), f"tensor {i} got noise"
    check_masked_lanes_get_no_noise()
    moments = check_moments()
    print(
        f"triton interpreter: {checked} cases match the reference; GE noise ok; masked lanes "
        f"noise-free; {moments} moment cases match"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
