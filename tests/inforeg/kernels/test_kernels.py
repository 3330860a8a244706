"""Every implementation of the fused pass equals the eager reference, in both layouts."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch

from inforeg.groups import ModalityGroups
from inforeg.kernels import (
    FlatGradients,
    GradientUpdate,
    GradientView,
    ParamGradients,
    param_moments,
    regulate_,
)
from inforeg.model import MultimodalModel
from tests.inforeg.tiny import tiny_batch, tiny_model

LAYOUTS = ("params", "contiguous", "flat", "split")
IMPLS = ("reference", "foreach", "flat")


@dataclass
class Setup:
    """A tiny model's gradients in one layout, anchors taken, weights then moved."""

    model: MultimodalModel
    groups: ModalityGroups
    views: list[GradientView]
    layout: str
    flat_grad: torch.Tensor | None = None
    offsets: list[int] | None = None

    def grads(self) -> list[torch.Tensor]:
        """Every model parameter's gradient (head included), flattened fp32."""
        if self.flat_grad is None:
            return [p.grad.float().flatten() for p in self.model.parameters()]
        assert self.offsets is not None
        return [self.flat_grad[a:b].float() for a, b in itertools.pairwise(self.offsets)]

    def run(self, update: GradientUpdate, impl: str) -> torch.Tensor:
        return sum(regulate_(v, update, impl) for v in self.views)  # type: ignore[return-value]


def make(layout: str, *, modalities: int = 2, dtype: torch.dtype = torch.float32) -> Setup:
    model = tiny_model(modalities)
    if layout in ("params", "contiguous"):
        model.to(dtype)  # a bf16 model: bf16 weights and gradients, fp32 anchors
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    moves = [torch.randn(p.shape, generator=gen) * 0.01 for p in params]
    groups = ModalityGroups.from_model(model)
    if layout in ("params", "contiguous"):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.to(dtype)
        view = ParamGradients(groups, contiguous=layout == "contiguous")
        view.snapshot_anchor()
        with torch.no_grad():
            for p, d in zip(params, moves, strict=True):
                p.add_(d.to(dtype))
        return Setup(model, groups, [view], layout)
    # layout (b): the whole model (head included) as one flat fp32 buffer, like a DeepSpeed
    # partition; "split" cuts it into two partitions in the middle of a parameter
    offsets = [0]
    for p in params:
        offsets.append(offsets[-1] + p.numel())
    weight = torch.cat([p.detach().flatten() for p in params]).float()
    grad = torch.cat([g.flatten() for g in grads]).to(dtype)
    cuts = [0, offsets[-1]] if layout == "flat" else [0, offsets[5] + 3, offsets[-1]]
    views: list[GradientView] = []
    for lo, hi in itertools.pairwise(cuts):
        segments = []
        for p, a, b in zip(params, offsets, offsets[1:], strict=False):
            s, e = max(a, lo), min(b, hi)
            if s < e:
                seg = groups.segment(p, start=s - lo, length=e - s, offset=s - a)
                if seg is not None:
                    segments.append(seg)
        views.append(FlatGradients(grad[lo:hi], weight[lo:hi], segments, groups))
    for v in views:
        v.snapshot_anchor()
    weight += torch.cat([d.flatten() for d in moves])
    return Setup(model, groups, views, layout, grad, offsets)


UPDATES = {
    "stat": lambda m, p: GradientUpdate(stat="paper"),
    "pull": lambda m, p: GradientUpdate(alpha=torch.tensor([0.7, 1.3, 2.0][:m]), stat="paper"),
    "pull_one": lambda m, p: GradientUpdate(alpha=torch.tensor([1.5, 0.0, 0.0][:m]), stat=None),
    "scale": lambda m, p: GradientUpdate(scale=torch.tensor([0.5, 2.0, 1.5][:m]), stat="official"),
    "ogm": lambda m, p: GradientUpdate(
        scale=torch.tensor([0.25, 1.0, 1.0][:m]), scale_conv_only=True, stat="paper"
    ),
    "all": lambda m, p: GradientUpdate(
        scale=torch.tensor([0.5, 0.9, 1.1][:m]),
        alpha=torch.tensor([1.2, 0.4, 0.0][:m]),
        stat="official",
    ),
}


@pytest.mark.parametrize("modalities", [2, 3])
@pytest.mark.parametrize("update_name", list(UPDATES))
def test_every_impl_and_layout_equals_the_reference(update_name, modalities):
    oracle = make("params", modalities=modalities)
    n_params = len(oracle.groups.params)
    build = UPDATES[update_name]
    expected_stats = oracle.run(build(modalities, n_params), "reference")
    expected = oracle.grads()
    original = make("params", modalities=modalities).grads()
    for layout in LAYOUTS:
        for impl in IMPLS:
            if impl == "flat" and layout == "params":
                continue
            s = make(layout, modalities=modalities)
            stats = s.run(build(modalities, n_params), impl)
            got = s.grads()
            for i, (g, e) in enumerate(zip(got, expected, strict=True)):
                # fp32 results agree to rounding (different op fusion); 1e-6 absolute
                torch.testing.assert_close(g, e, rtol=0, atol=1e-6, msg=f"{layout}/{impl} #{i}")
            # the head's gradients are never touched
            for g, o in zip(got[-2:], original[-2:], strict=True):
                assert torch.equal(g, o)
            # sums of g^2 in a different order: fp32 summation differences only
            torch.testing.assert_close(stats, expected_stats, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bf16_gradient_with_fp32_anchor(layout):
    update = GradientUpdate(
        scale=torch.tensor([0.5, 1.5]), alpha=torch.tensor([1.3, 0.6]), stat="paper"
    )
    results = {}
    for impl in IMPLS:
        if impl == "flat" and layout == "params":
            continue
        s = make(layout, dtype=torch.bfloat16)
        stats = s.run(update, impl)
        grads = s.grads()
        assert s.views[0].tensor_set().grads[0].dtype == torch.bfloat16
        results[impl] = (stats, grads)
    ref_stats, ref_grads = results["reference"]
    for impl, (stats, grads) in results.items():
        for g, e in zip(grads, ref_grads, strict=True):
            # fp32 arithmetic rounded once to bf16; an fp32 rounding difference can flip that
            # rounding: at most one bf16 ulp apart (<= 2^-7 relative)
            torch.testing.assert_close(g, e, rtol=2**-7, atol=1e-6, msg=impl)
        torch.testing.assert_close(stats, ref_stats, rtol=1e-6, atol=1e-6)
    # and the bf16 result is the fp32 computation rounded: compare with an fp32 run of the same
    fp32 = make(layout)
    fp32.run(update, "reference")
    for g, e in zip(ref_grads, fp32.grads(), strict=True):
        # the bf16 run starts from bf16-rounded inputs: a few bf16 ulps of the inputs' size
        torch.testing.assert_close(g, e, rtol=2**-6, atol=2**-6)


COMBOS = [(lay, impl) for lay in LAYOUTS for impl in IMPLS if (lay, impl) != ("params", "flat")]


@pytest.mark.parametrize(("layout", "impl"), COMBOS)
def test_sgd_moves_each_parameter_by_the_regulated_gradient(layout, impl):
    s = make(layout)
    alpha = torch.tensor([0.7, 1.9])
    if s.flat_grad is None:
        params = s.groups.parameters()
    else:  # like DeepSpeed's base optimizer: the flat partition is the parameter
        params = []
        for v in s.views:
            assert isinstance(v, FlatGradients)
            params.append(torch.nn.Parameter(v.weight))
            params[-1].grad = v.grad
    tsets = [v.tensor_set() for v in s.views]
    g0 = [g.clone() for t in tsets for g in t.grads]
    w0 = [w.clone() for t in tsets for w in t.weights]
    anchors = [a.clone() for t in tsets for a in t.anchors]
    modality = [s.groups.params[i].modality_index for t in tsets for i in t.params]
    for v in s.views:
        regulate_(v, GradientUpdate(alpha=alpha, stat=None), impl)
    regulated = [g.clone() for v in s.views for g in v.tensor_set().grads]
    lr = 0.1
    torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0).step()
    after = [w for v in s.views for w in v.tensor_set().weights]
    for w1, g, w, a, m, r in zip(after, g0, w0, anchors, modality, regulated, strict=True):
        pull = g + alpha[m] * (w - a)
        # the gradient the optimizer sees is g + alpha (w - anchor) (fp32 rounding only) ...
        torch.testing.assert_close(r, pull, rtol=0, atol=1e-6)
        # ... SGD applies exactly it: w - lr * regulated, bit for bit ...
        assert torch.equal(w1, w.add(r, alpha=-lr))
        # ... so w moves by -lr (g + alpha (w - anchor)), up to two fp32 ulps of evaluation order
        torch.testing.assert_close(w1, w - lr * pull, rtol=2.4e-7, atol=1e-7)


def test_pull_needs_an_anchor_and_flat_needs_one_buffer():
    model = tiny_model()
    groups = ModalityGroups.from_model(model)
    view = ParamGradients(groups)
    update = GradientUpdate(alpha=torch.ones(2))
    with pytest.raises(ValueError, match="anchor"):
        regulate_(view, update, "reference")
    view.snapshot_anchor()
    with pytest.raises(ValueError, match="one buffer"):
        regulate_(view, update, "flat")
    with pytest.raises(ValueError, match="impl must be one of"):
        regulate_(view, update, "cuda")
    with pytest.raises(ValueError, match="alpha has 3 entries"):
        regulate_(view, GradientUpdate(alpha=torch.ones(3)), "reference")
    assert regulate_(view, update, "auto").shape == (2,)  # auto: foreach here


def test_flat_gradients_validate_their_segments():
    model = tiny_model()
    groups = ModalityGroups.from_model(model)
    w = model.encoders["audio"].trunk[0].weight
    seg = groups.segment(w, start=0, length=w.numel())
    assert seg is not None
    n = w.numel()
    FlatGradients(torch.zeros(n), torch.zeros(n), [seg], groups)
    with pytest.raises(ValueError, match="past the flat buffer"):
        FlatGradients(torch.zeros(n - 1), torch.zeros(n - 1), [seg], groups)
    with pytest.raises(ValueError, match="overlaps"):
        FlatGradients(torch.zeros(2 * n), torch.zeros(2 * n), [seg, seg], groups)
    with pytest.raises(ValueError, match="1-D float tensor"):
        FlatGradients(torch.zeros(n, dtype=torch.long), torch.zeros(n), [seg], groups)
    view = FlatGradients(torch.zeros(n), torch.zeros(n), [seg], groups)
    with pytest.raises(ValueError, match="1-D float tensor of"):
        view.bind(torch.zeros(n + 1))


def test_contiguous_view_survives_zero_grad_set_to_none():
    s = make("contiguous")
    (view,) = s.views
    params = s.groups.parameters()
    opt = torch.optim.SGD(params, lr=0.1)
    opt.zero_grad(set_to_none=True)
    for p in params:
        p.grad = torch.full_like(p, 2.0)  # what a backward would leave: fresh tensors
    stats = regulate_(view, GradientUpdate(stat="paper"), "flat")
    n = [sum(p.numel() for p in s.groups.parameters(m)) for m in s.groups.modalities]
    torch.testing.assert_close(stats, 4.0 * torch.tensor(n, dtype=torch.float32))
    fset = view.flat_set()
    assert fset is not None
    assert params[0].grad.data_ptr() == fset.grad.data_ptr()  # views of the buffer again


def test_contiguous_view_copies_nothing_when_gradients_are_zeroed_in_place():
    """What a trainer must do so that backward writes straight into the flat buffer (DeepSpeed's
    ZeRO-0 fp32 engine sets every .grad to None after its step: one copy per tensor per step)."""
    s = make("contiguous")
    (view,) = s.views
    model = s.model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = tiny_batch(model, 4, seed=3)
    n = len(s.groups.parameters())
    for set_to_none, copies in ((False, 0), (True, n)):
        before = view.grad_copies
        for _ in range(2):
            opt.zero_grad(set_to_none=set_to_none)
            torch.nn.functional.cross_entropy(model(batch).logits, batch["label"]).backward()
            regulate_(view, GradientUpdate(stat="paper"), "flat")
            opt.step()
        assert view.grad_copies - before == 2 * copies, set_to_none


def test_ge_noise_has_the_requested_std_and_only_where_asked():
    torch.manual_seed(0)
    for impl in IMPLS:
        s = make("contiguous")
        groups = s.groups
        before = [g.clone() for g in s.grads()]
        conv = groups.table("conv_weight", "cpu")
        big = max((i for i in range(len(groups.params)) if groups.params[i].is_conv_weight),
                  key=lambda i: groups.params[i].numel)  # fmt: skip
        std = torch.where(torch.arange(len(groups.params)) == big, 0.5, 0.0) * conv
        update = GradientUpdate(noise_std=std.float(), noise_seed=7, stat=None)
        s.run(update, impl)
        after = s.grads()
        for i, (a, b) in enumerate(zip(after, before, strict=True)):
            if i != big:
                assert torch.equal(a, b), f"{impl}: parameter {i} got noise"
        noise = after[big] - before[big]
        n = noise.numel()
        assert abs(noise.mean().item()) < 4 * 0.5 / math.sqrt(n)
        assert noise.std().item() == pytest.approx(0.5, rel=0.05)
        again = make("contiguous")
        again.run(update, impl)
        assert torch.equal(again.grads()[big] - before[big], noise)  # seeded: reproducible


def test_param_moments_are_per_parameter_and_split_safely():
    whole = make("flat")
    split = make("split")
    m_whole = sum(param_moments(v) for v in whole.views)
    m_split = sum(param_moments(v) for v in split.views)
    torch.testing.assert_close(m_split, m_whole)
    grads = whole.grads()
    infos = whole.groups.params
    params = list(whole.model.parameters())
    for info in infos[:3]:
        i = next(k for k, p in enumerate(params) if p is whole.groups.parameters()[info.index])
        assert m_whole[info.index, 0].item() == pytest.approx(grads[i].double().sum().item())
