"""Greedy's per-modality square sums (main and bypass parameters, gradients and weights): the
fused path on every gradient layout against the plain PyTorch reference."""

from __future__ import annotations

import pytest
import torch

from inforeg.groups import ModalityGroups, Segment
from inforeg.kernels import FlatGradients, ParamGradients, square_sums, square_sums_reference
from tests.inforeg.tiny import tiny_batch, tiny_model


def backward(seed: int = 0) -> tuple[torch.nn.Module, ModalityGroups]:
    model = tiny_model(fusion="mmtm", seed=seed)
    groups = ModalityGroups.from_model(model)
    batch = tiny_batch(model, 4, seed=seed)
    torch.nn.functional.cross_entropy(model(batch).logits, batch["label"]).backward()
    return model, groups


def test_reference_by_hand_on_constant_weights_and_gradients() -> None:
    model, groups = backward()
    values = {"audio": (1.0, 0.5), "video": (2.0, 0.25)}  # (w, g) per encoder
    with torch.no_grad():
        for modality, enc in model.encoders.items():
            for p in enc.parameters():
                p.fill_(values[modality][0])
                assert p.grad is not None
                p.grad.fill_(values[modality][1])
        for p in model.bypass.parameters():
            p.fill_(3.0)
            assert p.grad is not None
            p.grad.fill_(0.1)
    n = {m: sum(p.numel() for p in enc.parameters()) for m, enc in model.encoders.items()}
    shared = sum(b.numel for b in groups.bypass if len(b.modalities) == 2)
    own = [sum(b.numel for b in groups.bypass if b.modalities == (i,)) for i in (0, 1)]
    byp = [shared + own[0], shared + own[1]]
    grads = [0.25 * n["audio"], 0.0625 * n["video"], 0.01 * byp[0], 0.01 * byp[1]]
    weights = [1.0 * n["audio"], 4.0 * n["video"], 9.0 * byp[0], 9.0 * byp[1]]
    expected = torch.tensor([grads, weights], dtype=torch.float64)
    # the bypass values are not exact in fp32 (0.1): stated tolerance 1e-5 relative
    torch.testing.assert_close(square_sums_reference(groups), expected, rtol=1e-5, atol=0)
    fused = square_sums(ParamGradients(groups, contiguous=True))
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("contiguous", [True, False])
def test_param_gradients_equal_the_reference(contiguous: bool) -> None:
    _, groups = backward(seed=1)
    reference = square_sums_reference(groups)
    view = ParamGradients(groups, contiguous=contiguous)
    # fp32 norms squared in float64, against float64 sums: stated tolerance 1e-5 relative
    torch.testing.assert_close(square_sums(view), reference, rtol=1e-5, atol=0)
    torch.testing.assert_close(square_sums(view), reference, rtol=1e-5, atol=0)  # cached split


def test_two_partitions_of_a_flat_buffer_add_up_to_the_reference() -> None:
    """ZeRO 1/2's layout: the whole model (head included) in one flat buffer, cut between two
    ranks inside a parameter; each rank's partial sums add up to the whole."""
    model, groups = backward(seed=2)
    params = list(model.parameters())
    weight = torch.cat([p.detach().reshape(-1) for p in params])
    grad = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
    cut = weight.numel() // 2 + 3
    total = torch.zeros(2, 4, dtype=torch.float64)
    for lo, hi in ((0, cut), (cut, weight.numel())):
        main: list[Segment] = []
        bypass: list[Segment] = []
        start = 0
        for p in params:
            a, b = max(start, lo), min(start + p.numel(), hi)
            if a < b:
                where = {"start": a - lo, "length": b - a, "offset": a - start}
                seg = groups.segment(p, **where)
                if seg is not None:
                    main.append(seg)
                extra = groups.bypass_segment(p, **where)
                if extra is not None:
                    bypass.append(extra)
            start += p.numel()
        view = FlatGradients(
            grad[lo:hi].clone(), weight[lo:hi].clone(), main, groups, bypass_segments=bypass
        )
        total += square_sums(view)
    torch.testing.assert_close(total, square_sums_reference(groups), rtol=1e-5, atol=0)


def test_overlapping_bypass_and_encoder_segments_are_refused() -> None:
    _, groups = backward()
    buf = torch.zeros(100)
    with pytest.raises(ValueError, match="overlaps"):
        FlatGradients(
            buf, buf.clone(), [Segment(start=0, length=10, param=0)], groups,
            bypass_segments=[Segment(start=5, length=4, param=0)],
        )  # fmt: skip
