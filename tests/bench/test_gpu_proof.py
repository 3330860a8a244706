"""The GPU check's training-step proof, run on CPU: it accepts a step whose optimizer took the
regulated gradients and rejects one whose edit never reached the optimizer (the ZeRO-0 + bf16
defect: the pass edited gradients after they had been copied)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.gpu_proof import Snapshot, prove
from bench.gpu_train import StepConfig, train_plain
from inforeg.groups import ModalityGroups
from inforeg.kernels import GradientUpdate, ParamGradients, regulate_
from tests.inforeg.tiny import NUM_CLASSES, tiny_batch, tiny_model

TINY = StepConfig(batch=8, frames=2, size=16, audio=(16, 16), classes=NUM_CLASSES, warmup=2,
                  steps=3, in_memory=2)  # fmt: skip


def test_a_cpu_training_step_is_proved_regulated() -> None:
    torch.manual_seed(0)
    report = train_plain(tiny_model(), TINY, torch.device("cpu"), torch.float32)
    assert report.proved, report.proof
    assert "bit-identical" in report.proof and report.samples_per_s > 0
    assert 0 < report.pass_ms < report.step_ms
    assert "loaders must sustain" in report.line(TINY.batch)


def _step(copy_before_pass: bool) -> tuple[bool, str]:
    """One SGD step; the pass edits the optimizer's gradients, or (the defect) a copy."""
    model = tiny_model()
    groups = ModalityGroups.from_model(model)
    view = ParamGradients(groups, contiguous=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batch = tiny_batch(model, 8, seed=1)
    view.snapshot_anchor()
    with torch.no_grad():  # the weights moved since the anchor, as mid-epoch
        for p in groups.parameters():
            p.add_(torch.randn_like(p), alpha=0.01)
    F.cross_entropy(model(batch).logits, batch["label"]).backward()
    fset = view.flat_set()
    assert fset is not None and fset.anchor is not None
    before, weight = fset.grad.clone(), fset.weight.clone()
    alpha = torch.tensor([1.4, 0.0])
    stepped = fset.grad.clone() if copy_before_pass else None
    regulate_(view, GradientUpdate(alpha=alpha, stat=None), "flat")
    after = fset.grad.clone()
    if stepped is not None:  # the optimizer steps the unregulated copy
        fset.grad.copy_(stepped)
    opt.step()
    params = groups.parameters()
    buf_new = torch.cat([opt.state[p]["momentum_buffer"].reshape(-1) for p in params])
    snap = Snapshot(before, after, weight, fset.anchor.clone(), None, buf_new)
    return prove(snap, fset.segments, groups, alpha, 0.9, 1e-4)


def test_the_proof_rejects_an_edit_the_optimizer_never_saw() -> None:
    ok, text = _step(copy_before_pass=False)
    assert ok, text
    ok, text = _step(copy_before_pass=True)
    assert not ok, text


def test_the_proof_rejects_a_pass_that_changed_nothing() -> None:
    model = tiny_model()
    groups = ModalityGroups.from_model(model)
    view = ParamGradients(groups, contiguous=True)
    view.snapshot_anchor()
    fset = view.flat_set()
    assert fset is not None and fset.anchor is not None
    g = torch.randn_like(fset.grad)
    w = fset.weight + 0.01
    snap = Snapshot(g, g.clone(), w, fset.anchor, None, g + 1e-4 * w)
    ok, text = prove(snap, fset.segments, groups, torch.tensor([1.0, 0.0]), 0.9, 1e-4)
    assert not ok and "0.0% of audio" in text
