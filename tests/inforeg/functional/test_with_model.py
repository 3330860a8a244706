"""The functional cores on the project's real model structure (tiny CNN / bag encoders + one
shared head): the shortcuts the regulators will rely on, against the authors' way."""

import torch
import torch.nn.functional as F

from inforeg.functional import agm, mmpareto, unimodal_logits
from inforeg.groups import ModalityGroups
from tests.inforeg.tiny import tiny_batch, tiny_model


def _zero_input(batch: dict[str, torch.Tensor], m: str) -> torch.Tensor:
    return torch.zeros_like(batch[m][:1])  # one zeroed sample (ids 0 = padding for text)


def test_coalition_logits_equal_masked_eval_forwards():
    # AGM's masked forwards (CREMAD_net.py 59-66, 100-105: the masked input zeroed, eval mode)
    # against coalition_logits built from ONE eval pass and one-sample zero-input passes
    model = tiny_model(3, seed=1)
    batch = tiny_batch(model, 5, seed=2)
    for _ in range(2):  # give BatchNorm non-trivial running statistics
        model(batch)
    model.eval()
    names = list(model.modalities)
    with torch.no_grad():
        masked = []
        for s in range(2 ** len(names)):
            inputs = {
                m: batch[m] if s >> i & 1 else torch.zeros_like(batch[m])
                for i, m in enumerate(names)
            }
            masked.append(model(inputs).logits)
        want = torch.stack(masked)  # (8, B, C)
        feats = model(batch).features
        zero = {m: model.encoders[m](_zero_input(batch, m))[0] for m in names}
    got = agm.coalition_logits(
        [feats[m] for m in names], [zero[m] for m in names], model.head.weight, model.head.bias
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    mono = agm.mono_logits(got, agm.shapley_matrix(3))
    torch.testing.assert_close(mono.sum(0), want[-1], rtol=1e-5, atol=1e-5)


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def test_one_backward_plus_autograd_grad_gives_the_authors_two_gradients():
    # MMPareto.py 117-147 takes g_mm and g_u by three retained backward passes; ours: one
    # autograd.grad of sum_m L_m on the encoders, one backward of L_mm + sum_m L_m, and
    # g_mm = g_sum - g_u (another modality's unimodal loss never reaches encoder m)
    model = tiny_model(2, seed=3)
    groups = ModalityGroups.from_model(model)
    params = groups.parameters()
    batch = tiny_batch(model, 6, seed=4)
    y = batch["label"]

    def losses() -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = model(batch)
        uni = unimodal_logits(out.features, model.head)
        return F.cross_entropy(out.logits, y), [F.cross_entropy(z, y) for z in uni.values()]

    # the authors' way: separate backward passes, gradients zeroed in between
    l_mm, l_uni = losses()
    model.zero_grad()
    l_mm.backward(retain_graph=True)
    g_mm_ref = _flat([p.grad.clone() for p in params])
    g_u_ref = torch.zeros_like(g_mm_ref)
    for m, loss in enumerate(l_uni):
        model.zero_grad()
        loss.backward(retain_graph=True)
        mine = torch.cat(
            [
                (p.grad if info.modality_index == m else torch.zeros_like(p)).reshape(-1)
                for (info, _), p in zip(groups, params, strict=True)
            ]
        )
        g_u_ref += mine
    # ours
    model.zero_grad()
    l_mm, l_uni = losses()
    g_u = _flat(list(torch.autograd.grad(sum(l_uni), params, retain_graph=True)))
    assert all(p.grad is None or not p.grad.any() for p in params)  # nothing accumulated
    (l_mm + sum(l_uni)).backward()
    g_sum = _flat([p.grad for p in params])
    torch.testing.assert_close(g_u, g_u_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_sum - g_u, g_mm_ref, rtol=1e-4, atol=1e-6)

    # and the rule on our gradients equals the rule on the authors' gradients
    numel = torch.tensor([info.numel for info in groups.params])
    ids = torch.repeat_interleave(torch.arange(len(params)), numel)
    modality = groups.table("modality", "cpu")
    ours, k_ours = mmpareto.mmpareto_reference(g_sum - g_u, g_u, ids, modality, 2)
    ref, k_ref = mmpareto.mmpareto_reference(g_mm_ref, g_u_ref, ids, modality, 2)
    torch.testing.assert_close(k_ours, k_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
