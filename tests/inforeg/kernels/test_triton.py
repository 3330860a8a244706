"""The Triton kernel against the reference: on CPU through Triton's interpreter (a subprocess,
so TRITON_INTERPRET=1 never leaks into this process), on CUDA directly (gpu-marked)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inforeg.kernels import FlatGradients, param_moments, regulate_

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(300)
def test_triton_kernel_under_the_interpreter_matches_the_reference():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.inforeg.kernels.triton_interpret"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "match the reference" in proc.stdout
    assert "masked lanes noise-free" in proc.stdout and "moment cases match" in proc.stdout


@pytest.mark.gpu
def test_triton_kernel_on_cuda_matches_the_reference():
    from tests.inforeg.kernels.test_kernels import UPDATES, make

    for name, build in UPDATES.items():
        ref = make("split")
        tri = make("split")
        for v in tri.views:
            assert isinstance(v, FlatGradients)
            v.weight = v.weight.cuda()
            v.grad = v.grad.cuda()
            v.snapshot_anchor()
        for v, r in zip(tri.views, ref.views, strict=True):
            v.anchor = r.anchor.cuda()
        p = len(ref.groups.params)
        want = sum(regulate_(v, build(2, p), "reference") for v in ref.views)
        got = sum(regulate_(v, build(2, p), "flat") for v in tri.views)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5, msg=name)
        for v, r in zip(tri.views, ref.views, strict=True):
            torch.testing.assert_close(v.grad.cpu(), r.grad, rtol=0, atol=1e-6, msg=name)


@pytest.mark.gpu
def test_triton_moments_on_cuda_match_the_reference():
    from tests.inforeg.kernels.test_kernels import make

    for layout in ("flat", "split"):
        ref = make(layout)
        want = sum(param_moments(v) for v in ref.views)
        for v in ref.views:
            assert isinstance(v, FlatGradients)
            v.weight = v.weight.cuda()
            v.grad = v.grad.cuda()
        got = sum(param_moments(v) for v in ref.views)  # one Triton launch per view
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
