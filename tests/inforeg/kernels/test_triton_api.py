"""The Triton API the kernels rely on, and what the real compiler makes of them for sm_90.

Runs with whatever Triton is installed (the pinned one here; the 3.6 that ships with torch 2.11
was checked the same way by pointing PYTHONPATH at it). Compiling for a GPU target needs no GPU:
Triton's CUDA backend and its bundled ptxas run on the CPU, so the PTX can be read here.
"""

from __future__ import annotations

import inspect
import itertools
import re
from typing import Any

import pytest

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from inforeg.groups import Segment  # noqa: E402  (after the importorskip)
from inforeg.kernels.triton import (  # noqa: E402
    BLOCK,
    NUM_WARPS,
    _moments_kernel,
    _regulate_kernel,
    block_bounds,
)

REGULATE_SIG = {
    "G": "*fp32", "W": "*fp32", "A": "*fp32",
    "BLK_START": "*i64", "BLK_LEN": "*i32", "BLK_PARAM": "*i32",
    "P_MOD": "*i32", "P_CONV": "*i32", "P_STAT": "*fp32",
    "SCALE": "*fp32", "ALPHA": "*fp32", "STD": "*fp32", "STATS": "*fp32", "seed": "i32",
}  # fmt: skip
MOMENTS_SIG = {"G": "*fp32", "BLK_START": "*i64", "BLK_LEN": "*i32", "BLK_PARAM": "*i32",
               "OUT": "*fp64"}  # fmt: skip


def test_the_language_features_used_exist() -> None:
    for name in ("jit", "cdiv"):
        assert hasattr(triton, name), name
    for name in ("program_id", "arange", "load", "store", "where", "sum", "atomic_add", "randn",
                 "constexpr", "float32", "float64", "int32"):  # fmt: skip
        assert hasattr(tl, name), f"triton.language.{name}"
    # the GPU check times kernels with do_bench (CUDA events, L2 flushed between calls)
    params = inspect.signature(triton.testing.do_bench).parameters
    for name in ("fn", "warmup", "rep", "quantiles", "return_mode"):
        assert name in params, f"do_bench({name}=)"


def _ptx(kernel: Any, signature: dict[str, str], constants: dict[str, Any]) -> str:
    """The PTX of `kernel` for sm_90 with every pointer 16-byte aligned (as torch allocates)."""
    compiler = pytest.importorskip("triton.compiler")
    backend = pytest.importorskip("triton.backends.compiler")
    names = kernel.arg_names
    sig = {**signature, **dict.fromkeys(constants, "constexpr")}
    consts = {(names.index(k),): v for k, v in constants.items()}
    ptrs = [i for i, n in enumerate(names) if signature.get(n, "").startswith("*")]
    attrs = {(i,): [["tt.divisibility", 16]] for i in ptrs}
    src = compiler.ASTSource(kernel, sig, consts, attrs)
    try:
        compiled = triton.compile(
            src, target=backend.GPUTarget("cuda", 90, 32), options={"num_warps": NUM_WARPS}
        )
    except (RuntimeError, FileNotFoundError) as e:  # no CUDA backend / ptxas in this Triton
        pytest.skip(f"Triton cannot compile for sm_90 here: {e}")
    return compiled.asm["ptx"]


def _accesses(ptx: str) -> set[str]:
    return set(re.findall(r"(?:ld|st|atom|red)\.global[.\w]*", ptx))


def _flags(**kw: Any) -> dict[str, Any]:
    base = {"HAS_SCALE": False, "CONV_ONLY": False, "HAS_ALPHA": False, "HAS_NOISE": False,
            "STAT": 1, "BLOCK": BLOCK}  # fmt: skip
    return {**base, **kw}


def test_full_blocks_compile_to_vector_accesses() -> None:
    ptx = _ptx(_regulate_kernel, REGULATE_SIG, _flags(HAS_ALPHA=True))
    acc = _accesses(ptx)
    assert "ld.global.v4.b32" in acc, acc  # 128-bit loads of g, w, anchor on full blocks
    assert "st.global.v4.b32" in acc, acc
    noisy = _accesses(_ptx(_regulate_kernel, REGULATE_SIG, _flags(HAS_NOISE=True, STAT=2)))
    assert "ld.global.v4.b32" in noisy, noisy


def test_a_statistic_only_pass_never_stores_the_gradient() -> None:
    acc = _accesses(_ptx(_regulate_kernel, REGULATE_SIG, _flags()))
    assert not any(a.startswith("st.") for a in acc), acc  # only the statistic's atomic add
    assert any(a.startswith(("atom.", "red.")) and a.endswith(".f32") for a in acc), acc


def test_moments_compile_to_one_pass_with_fp64_atomics() -> None:
    acc = _accesses(_ptx(_moments_kernel, MOMENTS_SIG, {"BLOCK": BLOCK}))
    assert "ld.global.v4.b32" in acc, acc
    assert any(a.startswith(("atom.", "red.")) and a.endswith(".f64") for a in acc), acc


def test_blocks_never_straddle_a_parameter_and_full_blocks_are_aligned() -> None:
    segments = (
        Segment(start=0, length=5, param=0),
        Segment(start=5, length=300, param=1),
        Segment(start=400, length=128, param=2),
        Segment(start=700, length=64, param=3),
    )
    bounds = block_bounds(segments, 64)
    covered = [(s, s + n, p) for s, n, p in bounds]
    for seg in segments:  # each segment is tiled exactly by its own blocks, in order
        mine = [(a, b) for a, b, p in covered if p == seg.param]
        assert mine[0][0] == seg.start and mine[-1][1] == seg.start + seg.length
        assert all(b == c for (_, b), (c, _) in itertools.pairwise(mine))
    for s, n, _ in bounds:
        assert 0 < n <= 64
        assert s // 64 == (s + n - 1) // 64  # within one aligned window of the buffer
        if n == 64:
            assert s % 64 == 0
    assert (5, 59, 1) in bounds and (64, 64, 1) in bounds and (256, 49, 1) in bounds
