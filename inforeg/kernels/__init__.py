"""Fused per-modality gradient passes: one memory-bound pass does InfoReg's pull toward the
anchor, OGM's scale, GE noise and the information statistic.

Implementations are chosen per call, never by a global switch:

- ``reference``: eager, one tensor at a time (the oracle);
- ``foreach``: ``torch._foreach_*`` multi-tensor ops (any device, either layout);
- ``flat``: one contiguous buffer; chunked in-cache torch ops on CPU, one Triton kernel on CUDA
  (needs `FlatGradients` or ``ParamGradients(contiguous=True)``);
- ``auto``: ``flat`` where the view has one buffer, else ``foreach``.
"""

from __future__ import annotations

from torch import Tensor

from inforeg.kernels.flat import DEFAULT_CHUNK, moments_flat, regulate_flat
from inforeg.kernels.foreach import regulate_foreach
from inforeg.kernels.reference import moments_reference, regulate_reference
from inforeg.kernels.squares import square_sums, square_sums_reference
from inforeg.kernels.update import STATS, GradientUpdate
from inforeg.kernels.views import (
    FlatGradients,
    FlatSet,
    GradientView,
    ParamGradients,
    SquareSet,
    TensorSet,
)
from inforeg.kernels.whole import (
    HeadFragment,
    ModelGradients,
    head_abs_max,
    model_sum_squares,
    scale_model_,
)

IMPLS = ("reference", "foreach", "flat")

__all__ = [
    "DEFAULT_CHUNK",
    "IMPLS",
    "STATS",
    "FlatGradients",
    "FlatSet",
    "GradientUpdate",
    "GradientView",
    "HeadFragment",
    "ModelGradients",
    "ParamGradients",
    "SquareSet",
    "TensorSet",
    "head_abs_max",
    "model_sum_squares",
    "param_moments",
    "regulate_",
    "resolve_impl",
    "scale_model_",
    "square_sums",
    "square_sums_reference",
]


def resolve_impl(view: GradientView, impl: str) -> str:
    """The implementation `impl` names for `view` (``auto``: flat if it has one buffer)."""
    if impl == "auto":
        return "flat" if view.has_flat else "foreach"
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {(*IMPLS, 'auto')}, got {impl!r}")
    return impl


def regulate_(
    view: GradientView, update: GradientUpdate, impl: str = "auto", *, chunk: int = DEFAULT_CHUNK
) -> Tensor:
    """Apply `update` to the gradients of `view` in place, in one pass.

    Returns the (M,) fp32 per-modality statistic of this call (`GradientUpdate.stat`), on the
    gradients' device; for a ``partial`` view it covers only this rank's part (all-reduce it).
    """
    update.check(view.groups)
    impl = resolve_impl(view, impl)
    if impl == "flat":
        fset = view.flat_set()
        if fset is None:
            raise ValueError(
                "impl 'flat' needs the gradients in one buffer: use FlatGradients or "
                "ParamGradients(groups, contiguous=True), or impl 'foreach'"
            )
        return regulate_flat(fset, update, view.groups, chunk=chunk)
    tset = view.tensor_set()
    if impl == "foreach":
        return regulate_foreach(tset, update, view.groups)
    return regulate_reference(tset, update, view.groups)


def param_moments(view: GradientView) -> Tensor:
    """(P, 2) float64 per-parameter (sum g, sum g^2) of this view's part of each gradient, for
    the GE noise's std (all-reduce it for a ``partial`` view)."""
    fset = view.flat_set()
    if fset is not None:
        return moments_flat(fset, view.groups)
    return moments_reference(view.tensor_set(), view.groups)
