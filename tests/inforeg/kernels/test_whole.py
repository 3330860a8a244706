"""`ModelGradients` (every gradient of the model, for AGM's clip) against plain PyTorch: the
norm and scale of ``clip_grad_norm_`` on an ordinary model, over the parameters' ``.grad`` (ZeRO 0)
and over two ranks' flat partitions (ZeRO 1/2, emulated in one process, cut inside the head)."""

from __future__ import annotations

import copy

import pytest
import torch

from inforeg.functional.agm import clip_reference, clip_scale
from inforeg.groups import ModalityGroups
from inforeg.kernels import (
    FlatGradients,
    HeadFragment,
    ModelGradients,
    ParamGradients,
    head_abs_max,
    model_sum_squares,
    scale_model_,
)
from inforeg.model import MultimodalModel
from tests.inforeg.tiny import tiny_batch, tiny_model


def model_with_grads(seed: int = 0) -> MultimodalModel:
    model = tiny_model(seed=seed)
    data = tiny_batch(model, 6, seed=seed)
    torch.nn.functional.cross_entropy(model(data).logits, data["label"]).backward()
    return model


def twin(model: MultimodalModel) -> MultimodalModel:
    """A copy of the model with copies of its gradients (deepcopy leaves parameters' out)."""
    plain = copy.deepcopy(model)
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        q.grad = None if p.grad is None else p.grad.clone()
    return plain


def columns(model: MultimodalModel) -> torch.Tensor:
    dims = [int(enc.out_dim) for enc in model.encoders.values()]  # type: ignore[arg-type]
    return torch.repeat_interleave(torch.arange(len(dims)), torch.tensor(dims))


def expected_head_max(model: MultimodalModel) -> torch.Tensor:
    g = model.head.weight.grad
    assert g is not None
    parts = g.abs().split([int(enc.out_dim) for enc in model.encoders.values()], dim=1)
    return torch.stack([p.max() for p in parts])


@pytest.mark.parametrize("contiguous", [True, False])
def test_over_params_gives_clip_grad_norms_norm_and_scale(contiguous):
    model = model_with_grads()
    plain = twin(model)
    groups = ModalityGroups.from_model(model)
    view = ParamGradients(groups, contiguous=contiguous)
    whole = ModelGradients.of_model(view, model, model.head.weight)
    assert not whole.partial and len(whole.rest) == 2  # the head's weight and bias
    norm = model_sum_squares(whole.tensors()).sqrt()
    head = head_abs_max(whole, columns(model), 2)
    torch.testing.assert_close(head, expected_head_max(model), rtol=0, atol=0)
    # the reference fires at any threshold below the head's abs-max
    factor = clip_reference(plain.parameters(), plain.head.weight, 0.0, max_norm=0.01)
    total = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    torch.testing.assert_close(norm, total, rtol=1e-6, atol=0)
    scale = clip_scale(head.max(), norm, 0.0, 0.01)
    assert scale.item() == pytest.approx(factor, rel=1e-6) and factor < 1
    scale_model_(whole.tensors(), scale)
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0, msg=name)


def partitions(model: MultimodalModel, cut: int) -> list[tuple[ModelGradients, torch.Tensor]]:
    """Two ranks' flat fp32 partitions [0, cut) and [cut, N) of the whole model's gradients, the
    first padded to the second's size with zeros (as DeepSpeed pads), and their views."""
    params = list(model.parameters())
    groups = ModalityGroups.from_model(model)
    offsets = [0]
    for p in params:
        offsets.append(offsets[-1] + p.numel())
    total = offsets[-1]
    grad = torch.cat([p.grad.flatten() for p in params])  # type: ignore[union-attr]
    weight = torch.cat([p.detach().flatten() for p in params])
    size = max(cut, total - cut)
    head = next(i for i, p in enumerate(params) if p is model.head.weight)
    out = []
    for lo, hi in ((0, cut), (cut, total)):
        g, w = torch.zeros(size), torch.zeros(size)
        g[: hi - lo], w[: hi - lo] = grad[lo:hi], weight[lo:hi]
        segments = []
        for p, a, b in zip(params, offsets, offsets[1:], strict=False):
            s, e = max(a, lo), min(b, hi)
            seg = groups.segment(p, start=s - lo, length=e - s, offset=s - a) if s < e else None
            if seg is not None:
                segments.append(seg)
        view = FlatGradients(g, w, segments, groups)
        s, e = max(offsets[head], lo), min(offsets[head + 1], hi)
        frags = [HeadFragment(0, s - lo, e - s, s - offsets[head])] if s < e else []
        out.append((ModelGradients.over_flat([view], (3, 16), frags), g))
    return out


@pytest.mark.parametrize("where", ["inside_head", "before_head"])
def test_two_partitions_reduce_to_the_full_models_norm_head_max_and_scale(where):
    model = model_with_grads(seed=1)
    plain = twin(model)
    params = list(model.parameters())
    head = next(i for i, p in enumerate(params) if p is model.head.weight)
    head_start = sum(p.numel() for p in params[:head])
    cut = head_start + 17 if where == "inside_head" else head_start - 5
    ranks = partitions(model, cut)
    assert sum(len(w.fragments) for w, _ in ranks) == (2 if where == "inside_head" else 1)
    sumsq = sum(model_sum_squares(w.tensors()) for w, _ in ranks)  # the SUM all-reduce
    head = torch.stack([head_abs_max(w, columns(model), 2) for w, _ in ranks]).amax(0)  # MAX
    torch.testing.assert_close(head, expected_head_max(model), rtol=0, atol=0)
    factor = clip_reference(plain.parameters(), plain.head.weight, 0.0, max_norm=0.01)
    scale = clip_scale(head.max(), sumsq.sqrt(), 0.0, 0.01)
    assert scale.item() == pytest.approx(factor, rel=1e-6)
    for w, _ in ranks:
        scale_model_(w.tensors(), scale)
    (_, g0), (_, g1) = ranks
    clipped = torch.cat([g0[:cut], g1[: sum(p.numel() for p in params) - cut]])
    expected = torch.cat([p.grad.flatten() for p in plain.parameters()])  # type: ignore[union-attr]
    torch.testing.assert_close(clipped, expected, rtol=1e-6, atol=0)
    assert torch.equal(g0[cut:], torch.zeros_like(g0[cut:]))  # padding stays zero


def test_bad_descriptions_are_errors():
    model = model_with_grads()
    groups = ModalityGroups.from_model(model)
    view = ParamGradients(groups)
    with pytest.raises(ValueError, match="listed in rest"):
        ModelGradients.over_params(view, [model.head.bias], model.head.weight)
    with pytest.raises(ValueError, match="outside the encoders"):
        encoder = groups.parameters()[0]
        ModelGradients.over_params(view, [encoder, model.head.weight], model.head.weight)
    with pytest.raises(ValueError, match="FlatGradients"):
        ModelGradients.over_flat([view], (3, 16), [])
    flat = FlatGradients(torch.zeros(10), torch.zeros(10), [], groups)
    with pytest.raises(ValueError, match="outside the flat buffers"):
        ModelGradients.over_flat([flat], (3, 16), [HeadFragment(0, 5, 6)])
    with pytest.raises(ValueError, match="past the head weight"):
        ModelGradients.over_flat([flat], (2, 2), [HeadFragment(0, 0, 4, offset=1)])
    whole = ModelGradients.of_model(view, model, model.head.weight)
    with pytest.raises(ValueError, match="one entry per head input column"):
        head_abs_max(whole, torch.zeros(5, dtype=torch.long), 2)
