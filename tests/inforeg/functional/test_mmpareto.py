"""inforeg.functional.mmpareto against values worked by hand from GeWu-Lab/MMPareto_ICML2024
@ a339db3 (code/MMPareto.py, code/min_norm_solvers.py), and against a per-tensor transcription."""

import math

import torch

from inforeg.functional import mmpareto


def d64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_weights_no_conflict_interior_and_the_corner_cases():
    # MMPareto.py 165-174: cos > 0 -> (0.5, 0.5). min_norm_solvers.py 17-30 with a = g_mm.g_mm,
    # b = g_mm.g_u, c = g_u.g_u: (a, b, c) = (4, -1, 1): k = (1 + 1) / (4 + 1 + 2) = 2 / 7;
    # (0, 0, 1): b >= a -> 0.999; (1, 0, 0): b >= c -> 0.001
    dots = d64(4, 2, 1, 4, -1, 1, 0, 0, 1, 1, 0, 0).reshape(4, 3)
    k = mmpareto.pareto_weights(dots)
    torch.testing.assert_close(k[:, 0], d64(0.5, 2 / 7, 0.999, 0.001))
    torch.testing.assert_close(k.sum(1), d64(1, 1, 1, 1))


def _example():
    # params 0, 1 belong to encoder 0, param 2 to encoder 1; two elements each
    g_mm = d64(1, 0, 0, 2, 1, 1)
    g_u = d64(-1, 1, 1, 0, 1, 0)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    modality = torch.tensor([0, 0, 1])
    return g_mm, g_u, ids, modality


def test_whole_rule_worked_by_hand():
    # encoder 0: param 0 (a, b, c) = (1, -1, 2), param 1 = (4, 0, 1) -> (5, -1, 3): conflict,
    # k_mm = (3 + 1) / (5 + 3 + 2) = 0.4, k_u = 0.6 (MMPareto.py 168-169).
    # lines 190-197, param 0: new = 2 (0.4 (1, 0) + 0.6 (-1, 1)) = (-0.4, 1.2), ||new|| = 1.2649111,
    # ||g_mm + g_u|| = ||(0, 1)|| = 1: r = 0.7905694 <= 1 -> 1.5 new = (-0.6, 1.8)
    # param 1: new = 2 (0.4 (0, 2) + 0.6 (1, 0)) = (1.2, 1.6), ||new|| = 2, ||(1, 2)|| = 2.2360680:
    # r = 1.1180340 > 1 -> 1.5 * 1.1180340 * (1.2, 1.6) = (2.0124612, 2.6832816)
    # encoder 1: b = 1 > 0 -> (0.5, 0.5): new = g_mm + g_u = (2, 1), r = 1 -> 1.5 new = (3, 1.5)
    g_mm, g_u, ids, modality = _example()
    out, k = mmpareto.mmpareto_reference(g_mm, g_u, ids, modality, 2, gamma=1.5)
    torch.testing.assert_close(k, d64(0.4, 0.6, 0.5, 0.5).reshape(2, 2))
    torch.testing.assert_close(out, d64(-0.6, 1.8, 2.0124612, 2.6832816, 3.0, 1.5))


def test_reference_equals_a_per_tensor_transcription_of_the_code():
    gen = torch.Generator().manual_seed(0)
    sizes = [3, 5, 4, 2, 6]
    modality = torch.tensor([0, 0, 1, 1, 1])
    ids = torch.repeat_interleave(torch.arange(5), torch.tensor(sizes))
    g_mm = torch.randn(sum(sizes), generator=gen, dtype=torch.float64)
    g_u = -0.8 * g_mm + 0.3 * torch.randn(sum(sizes), generator=gen, dtype=torch.float64)
    out, _ = mmpareto.mmpareto_reference(g_mm, g_u, ids, modality, 2, gamma=1.5)
    for m in range(2):
        sel = modality[ids] == m
        a, u = g_mm[sel], g_u[sel]
        if torch.dot(a, u) > 0:  # the code's cosine > 0 (line 165)
            k0 = 0.5
        else:  # _min_norm_element_from2 on the whole encoder
            aa, au, uu = torch.dot(a, a), torch.dot(a, u), torch.dot(u, u)
            k0 = 0.999 if au >= aa else 0.001 if au >= uu else float((uu - au) / (aa + uu - 2 * au))
        for p in range(5):
            if modality[p] != m:
                continue
            el = ids == p
            new = 2 * k0 * g_mm[el] + 2 * (1 - k0) * g_u[el]  # lines 191-197, per tensor
            diff = torch.norm(g_mm[el] + g_u[el]) / torch.norm(new)
            want = diff * new * 1.5 if diff > 1 else new * 1.5
            torch.testing.assert_close(out[el], want)


def test_rank_partitions_add_up_to_the_whole():
    g_mm, g_u, ids, _ = _example()
    whole = mmpareto.param_dots(g_mm, g_u, ids, 3)
    parts = mmpareto.param_dots(g_mm[:3], g_u[:3], ids[:3], 3) + mmpareto.param_dots(
        g_mm[3:], g_u[3:], ids[3:], 3
    )
    torch.testing.assert_close(parts, whole)


def test_zero_gradients_stay_zero_and_finite():
    # both gradients 0: b >= a -> 0.999; the combination is 0, kept 0 (the code's inf * 0 = NaN)
    z = torch.zeros(4, dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 1])
    out, k = mmpareto.mmpareto_reference(z, z, ids, torch.tensor([0, 0]), 1)
    torch.testing.assert_close(out, z)
    assert math.isclose(k[0, 0].item(), 0.999)


def test_combine_keeps_the_gradient_dtype():
    g = torch.tensor([1.0, -2.0], dtype=torch.bfloat16)
    out = mmpareto.combine(g, g, torch.tensor(1.5), torch.tensor(0.25), torch.tensor(0.75))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch.tensor([3.0, -6.0]))
