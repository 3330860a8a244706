"""MMPareto's pair pass over a view (`inforeg.kernels.pairs`) against the functional reference
on whole gradients, for a contiguous view and for two flat partitions cut inside a parameter."""

from __future__ import annotations

import torch

from inforeg.functional.mmpareto import (
    mmpareto_reference,
    modality_dots,
    param_factors,
    pareto_weights,
)
from inforeg.groups import ModalityGroups
from inforeg.kernels import FlatGradients, ParamGradients
from inforeg.kernels.pairs import (
    flat_grad,
    flatten_params,
    pair_dots,
    param_offsets,
    pareto_combine_,
)
from tests.inforeg.tiny import tiny_model


def setup():
    model = tiny_model(seed=0)
    groups = ModalityGroups.from_model(model)
    params = groups.parameters()
    gen = torch.Generator().manual_seed(0)
    g = [torch.randn(p.shape, generator=gen) for p in params]
    u = [torch.randn(p.shape, generator=gen) * 0.5 - gi for p, gi in zip(params, g, strict=True)]
    return groups, params, g, u


def reference(groups, params, g, u):
    flat_g, flat_u = flatten_params(g, groups), flatten_params(u, groups)
    ids = torch.cat([torch.full((p.numel(),), i) for i, p in enumerate(params)])
    modality = groups.table("modality", "cpu")
    return mmpareto_reference(flat_g - flat_u, flat_u, ids, modality, 2, gamma=1.5)


def combine_all(groups, second, flats):
    num = len(groups.params)
    dots = sum(pair_dots(grad, plan, second, num) for grad, plan, _ in flats)
    modality = groups.table("modality", "cpu")
    weights = pareto_weights(modality_dots(dots, modality, 2))
    per_param = weights.index_select(0, modality)
    factors = param_factors(dots, per_param, 1.5)
    keep = torch.zeros(num, dtype=torch.bool)
    for grad, plan, back in flats:
        pareto_combine_(grad, plan, second, factors, per_param, keep, back)
    return weights


def test_contiguous_and_separate_tensor_views_equal_the_reference():
    groups, params, g, u = setup()
    expected, weights = reference(groups, params, g, u)
    second = flatten_params(u, groups)
    for contiguous in (True, False):
        for p, gi in zip(params, g, strict=True):
            p.grad = gi.clone()
        view = ParamGradients(groups, contiguous=contiguous)
        got_w = combine_all(groups, second, [flat_grad(view)])
        torch.testing.assert_close(torch.cat([p.grad.flatten() for p in params]), expected)
        torch.testing.assert_close(got_w, weights)


def test_two_partitions_cut_inside_a_parameter_equal_the_reference():
    groups, params, g, u = setup()
    expected, _ = reference(groups, params, g, u)
    second = flatten_params(u, groups)
    total = param_offsets(groups)[-1]
    cut = total // 2 + 3  # inside some parameter
    full = flatten_params(g, groups)
    views = []
    for lo, hi in ((0, cut), (cut, total)):
        segments = []
        for p, a, b in zip(params, param_offsets(groups), param_offsets(groups)[1:], strict=False):
            s, e = max(a, lo), min(b, hi)
            if s < e:
                segments.append(groups.segment(p, start=s - lo, length=e - s, offset=s - a))
        grad = full[lo:hi].clone()
        views.append(FlatGradients(grad, torch.zeros(hi - lo), segments, groups))
    combine_all(groups, second, [flat_grad(v) for v in views])
    got = torch.cat([v.grad for v in views])
    torch.testing.assert_close(got, expected)
