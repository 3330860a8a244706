import pytest
import torch
from torch import nn

from inforeg.groups import ModalityGroups, Segment
from tests.inforeg.tiny import tiny_model


def test_groups_follow_the_encoders_not_the_names():
    model = tiny_model(modalities=3)
    groups = ModalityGroups.from_model(model)
    assert groups.modalities == ("audio", "video", "text")
    for m in groups.modalities:
        assert {id(p) for p in groups.parameters(m)} == {
            id(p) for p in model.encoders[m].parameters()
        }
    assert groups.index_of(model.head.weight) is None  # the head belongs to no modality
    kinds = {info.name: info.kind for info in groups.params}
    assert kinds["audio.trunk.0.weight"] == "conv_weight"
    assert kinds["audio.trunk.1.weight"] == "other"  # batch norm
    assert kinds["audio.proj.weight"] == "linear_weight"
    assert kinds["text.embed.weight"] == "other"
    assert [i.index for i in groups.params] == list(range(len(groups.params)))
    assert groups.table("numel", "cpu").sum().item() == sum(
        p.numel() for e in model.encoders.values() for p in e.parameters()
    )


def test_frozen_parameters_are_left_out_and_shared_ones_rejected():
    model = tiny_model()
    model.encoders["audio"].trunk[0].weight.requires_grad_(False)
    groups = ModalityGroups.from_model(model)
    assert groups.index_of(model.encoders["audio"].trunk[0].weight) is None
    shared = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="shared with encoder 'a'"):
        ModalityGroups({"a": shared, "b": nn.Sequential(shared)})
    with pytest.raises(ValueError, match="no trainable parameters"):
        ModalityGroups({"a": nn.Linear(2, 2), "b": nn.ReLU()})
    with pytest.raises(ValueError, match="encoders"):
        ModalityGroups.from_model(nn.Linear(2, 2))


def test_segments_are_checked_against_their_parameter():
    model = tiny_model()
    groups = ModalityGroups.from_model(model)
    w = model.encoders["video"].trunk[0].weight
    seg = groups.segment(w, start=100, length=10, offset=5)
    assert seg == Segment(start=100, length=10, param=groups.index_of(w), offset=5)
    assert groups.segment(model.head.bias, start=0, length=3) is None
    with pytest.raises(ValueError, match="runs past the end"):
        groups.segment(w, start=0, length=w.numel(), offset=1)
    with pytest.raises(ValueError, match="length >= 1"):
        Segment(start=0, length=0, param=0)
    total = sum(s.length for s in groups.contiguous_segments())
    assert total == sum(p.numel() for p in groups.parameters())
    assert torch.equal(groups.table("modality", "cpu")[:2], torch.tensor([0, 0]))
