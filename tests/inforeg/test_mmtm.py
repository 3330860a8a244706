"""``model.fusion: mmtm``: two image trunks run stage by stage with MMTM modules between them
(Greedy's mid-fusion), against the late-fusion model and the functional maths."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from inforeg.functional.greedy import GreedyState, cut_gate, mmtm_gates
from inforeg.groups import ModalityGroups
from inforeg.mmtm import MMTM, squeeze_map
from inforeg.model import EncoderConfig, InputSpec, ModelConfig, build_model
from tests.inforeg.tiny import NUM_CLASSES, SPEC, tiny_batch, tiny_model


def test_forward_shapes_and_modules_outside_the_encoders() -> None:
    model = tiny_model(fusion="mmtm")
    out = model(tiny_batch(model, 5, seed=0))
    assert out.logits.shape == (5, NUM_CLASSES)
    assert {m: f.shape for m, f in out.features.items()} == {"audio": (5, 8), "video": (5, 8)}
    assert list(model.bypass) == ["stage2", "stage3", "stage4"]  # after ResNet layers 2-4
    widths = [(8, 8), (16, 16), (32, 32)]  # cnn width 4: stages of 4, 8, 16, 32 channels
    assert [m.channels for m in model.bypass.values()] == widths
    for name, _ in model.encoders.named_parameters():
        assert "squeeze" not in name and "excite" not in name
    state = model.state_dict()
    assert "bypass.stage2.running_gate_1" in state and "bypass.stage2.forwards" in state
    assert "bypass.stage2.cut" not in state  # the regulator's decision, not a weight


def test_same_encoders_and_head_as_the_late_fusion_model_for_a_seed() -> None:
    late, mid = tiny_model(seed=3), tiny_model(seed=3, fusion="mmtm")
    for (name, p), (name2, q) in zip(late.named_parameters(), mid.named_parameters(), strict=False):
        assert name == name2 and torch.equal(p, q)  # bypass comes after encoders and head


def test_gates_are_the_functional_mmtm_of_the_stage_maps_and_rescale_them() -> None:
    torch.manual_seed(0)
    mmtm = MMTM((3, 5), ratio=4)
    maps = [torch.randn(4, 3, 6, 6), torch.randn(4, 5, 2, 7)]
    squeezed = [squeeze_map(f, 4) for f in maps]
    gates = mmtm(squeezed)
    w = mmtm.squeeze
    expected = mmtm_gates(maps, (w.weight, w.bias), [(x.weight, x.bias) for x in mmtm.excite])
    for g, e in zip(gates, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    assert int(mmtm.forwards) == 1
    for i, g in enumerate(gates):  # the first forward's average is its batch mean, per branch
        torch.testing.assert_close(mmtm.running_gates()[i], g.detach().mean(0))


def test_video_squeeze_is_the_clip_mean_over_frames_and_the_gate_covers_every_frame() -> None:
    model = tiny_model(fusion="mmtm")
    batch = tiny_batch(model, 3, seed=1)  # video (3, 2 frames, 3, 16, 16)
    seen: list[list[torch.Tensor]] = []
    model.bypass["stage2"].register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    video = model.encoders["video"]
    fmap = video.run_stage(1, video.run_stage(0, video.fold(batch["video"])))  # (6, 8, 4, 4)
    model(batch)
    clip_mean = rearrange(fmap, "(b k) c h w -> b c (k h w)", k=2).mean(-1)
    torch.testing.assert_close(seen[0][1], clip_mean)


def test_cut_replaces_the_cared_gate_by_its_running_average_in_training_only() -> None:
    torch.manual_seed(0)
    mmtm = MMTM((3, 4))
    first = [torch.randn(5, 3), torch.randn(5, 4)]
    mmtm(first)
    mmtm.cut.copy_(torch.tensor([False, True]))
    second = [torch.randn(5, 3), torch.randn(5, 4)]
    plain = mmtm.eval()(second)  # eval: never cut (and the average moves on)
    mmtm.train()
    gates = mmtm(second)
    averages = mmtm.running_gates()
    torch.testing.assert_close(gates[0], plain[0])
    torch.testing.assert_close(gates[1], averages[1].expand(5, 4))
    state = GreedyState(
        torch.ones(2, 2, dtype=torch.float64), torch.tensor(True), torch.tensor(1), torch.tensor(0)
    )
    torch.testing.assert_close(gates[1], cut_gate(plain[1], averages[1], 1, state))
    assert int(mmtm.forwards) == 3


def test_a_cut_gate_lets_no_gradient_reach_the_cared_branch_from_the_other() -> None:
    model = tiny_model(fusion="mmtm")
    for m in model.bypass.values():
        m.cut.copy_(torch.tensor([True, False]))  # audio cared for: video's flow into it cut
    model(tiny_batch(model, 4, seed=2)).logits.sum().backward()
    for m in model.bypass.values():
        assert torch.count_nonzero(m.excite[0].weight.grad) == 0
        assert torch.count_nonzero(m.excite[1].weight.grad) > 0


def test_resnet18_encoders_run_stage_wise_too() -> None:
    enc = {m: EncoderConfig(kind="resnet18", width=4) for m in ("audio", "video")}
    model = build_model(ModelConfig(encoders=enc, fusion="mmtm"), SPEC, NUM_CLASSES)
    assert [m.channels for m in model.bypass.values()] == [(8, 8), (16, 16), (32, 32)]
    out = model(tiny_batch(model, 2, seed=0))
    assert out.logits.shape == (2, NUM_CLASSES)


def test_bypass_parameters_grouped_per_modality_or_shared() -> None:
    groups = ModalityGroups.from_model(tiny_model(fusion="mmtm"))
    by_name = {b.name: b.modalities for b in groups.bypass}
    assert by_name["stage3.squeeze.weight"] == (0, 1)  # shared: counts for both
    assert by_name["stage3.excite.0.bias"] == (0,) and by_name["stage4.excite.1.weight"] == (1,)
    assert len(groups.bypass) == 3 * 6
    assert all("bypass" not in p.name for p in groups.params)  # no fused pass touches them


@pytest.mark.parametrize(
    ("encoders", "message"),
    [
        ({"audio": "cnn"}, "exactly two encoders"),
        ({"audio": "cnn", "video": "cnn", "text": "mlp"}, "exactly two encoders"),
        ({"audio": "cnn", "text": "mlp"}, r"model\.encoders\.text\.kind is 'mlp'"),
    ],
)
def test_mmtm_refuses_models_it_cannot_couple(encoders: dict[str, str], message: str) -> None:
    cfg = {m: EncoderConfig(kind=k, dim=8) for m, k in encoders.items()}
    with pytest.raises(ValueError, match=rf"model\.fusion: mmtm .*{message}|{message}"):
        ModelConfig(encoders=cfg, fusion="mmtm")


def test_a_model_with_mmtm_trains_under_joint_with_its_gates_never_cut() -> None:
    spec = InputSpec(channels={"audio": 1, "video": 3})
    enc = {m: EncoderConfig(kind="cnn", width=4, dim=8) for m in ("audio", "video")}
    model = build_model(ModelConfig(encoders=enc, fusion="mmtm"), spec, NUM_CLASSES)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        batch = tiny_batch(model, 4, seed=step)
        loss = torch.nn.functional.cross_entropy(model(batch).logits, batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not m.cut.any() and int(m.forwards) == 3 for m in model.bypass.values())
