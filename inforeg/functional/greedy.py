"""Greedy (Wu et al., ICML 2022): balanced multimodal learning by re-balancing steps that cut
one modality's cross-modal (MMTM) flow; docs/methods.md, section Greedy.

Transcribed from nyukat/greedy_multimodal_learning @ a190e03:

- ``src/callbacks.py`` lines 199-233 (``compute_BDR``): for each branch m, after backward, the
  conditional learning speed terms ``sum ||g||^2 / sum ||w||^2`` over the branch's main
  parameters and over its MMTM (bypass) parameters (MMTM parameters named by no modality, the
  shared squeeze layer, count for both), each ACCUMULATED over all steps since training began;
  ``BDR_m = log10(acc_bypass_m / acc_main_m)`` and the decision statistic ``d = BDR_0 - BDR_1``;
- lines 240-263 (``on_backward_end``): before ``starting_epoch`` (2) the statistic accumulates and
  no curation runs; afterwards, outside a curation window, it accumulates and, when
  ``|d| > epsilon`` (0.01), starts a window of ``curation_windowsize`` (5) steps caring for
  modality 0 if ``d > 0`` else modality 1; inside a window the statistic is NOT accumulated and the
  window ends after its fifth step;
- ``src/balanced_mmtm.py`` lines 113-152: in a window the cared modality's MMTM gate is replaced
  by the detached running average of its gates (so no information flows into it from the other
  branch), the other modality's gate is left as computed;
- ``eval.py`` with ``configs/eval.gin`` (``mmtm_off``, average squeeze maps): the conditional
  utilization rate compares a branch's accuracy with the other modality's flow and with that
  flow replaced by its training average.

The method is defined for two modalities (the rule compares two branches). The state is four
device tensors (`GreedyState`); `greedy_step` advances it with no host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class GreedyState:
    """The rule's state; checkpoint all four fields (device tensors)."""

    speeds: Tensor  # (2, M) float64: accumulated [bypass; main] sum g^2 / sum w^2 per branch
    curation: Tensor  # () bool: a re-balancing window is running
    caring: Tensor  # () long: the modality whose cross-modal flow is cut in the window
    step: Tensor  # () long: steps taken in the running window

    @classmethod
    def initial(cls, num_modalities: int = 2, device: torch.device | str = "cpu") -> GreedyState:
        _check_two_modalities(num_modalities)
        return cls(
            speeds=torch.zeros(2, num_modalities, dtype=torch.float64, device=device),
            curation=torch.zeros((), dtype=torch.bool, device=device),
            caring=torch.zeros((), dtype=torch.long, device=device),
            step=torch.zeros((), dtype=torch.long, device=device),
        )


def speed_terms(
    grad_sq_main: Tensor, weight_sq_main: Tensor, grad_sq_bypass: Tensor, weight_sq_bypass: Tensor
) -> Tensor:
    """(2, M) float64 ``[bypass; main]`` of ``sum g^2 / sum w^2`` per branch, this step.

    Each argument is (M,): per-modality sums over the branch's main (encoder) parameters or its
    bypass (MMTM) parameters, the shared MMTM parameters counted in every modality's bypass sum
    (all-reduced across ranks first when the gradients are partitioned).
    """
    args = (grad_sq_main, weight_sq_main, grad_sq_bypass, weight_sq_bypass)
    shapes = {tuple(a.shape) for a in args}
    if len(shapes) != 1 or args[0].dim() != 1:
        raise ValueError(f"speed_terms takes four (M,) sums of equal shape, got {sorted(shapes)}")
    bypass = grad_sq_bypass.double() / weight_sq_bypass.double()
    main = grad_sq_main.double() / weight_sq_main.double()
    return torch.stack([bypass, main])


def branch_bias(speeds: Tensor) -> Tensor:
    """(M,) ``BDR_m = log10(accumulated bypass speed / accumulated main speed)``."""
    return torch.log10(speeds[0] / speeds[1])


def bias_gap(speeds: Tensor) -> Tensor:
    """() the decision statistic ``d = BDR_0 - BDR_1`` (two modalities)."""
    _check_two_modalities(speeds.shape[-1])
    bdr = branch_bias(speeds)
    return bdr[0] - bdr[1]


def greedy_step(
    state: GreedyState, terms: Tensor, *, unlocked: bool, epsilon: float = 0.01, window: int = 5
) -> tuple[GreedyState, Tensor]:
    """One ``on_backward_end`` of the official rule: ``(new state, d)``.

    `terms` is this step's `speed_terms`; `unlocked` is ``epoch >= starting_epoch`` (a host
    bool, fixed for the epoch). The returned state's ``curation`` and ``caring`` decide the NEXT
    step's forward (the code sets them after this step's backward). ``d`` is the statistic after
    this step (unchanged inside a window, where nothing accumulates).
    """
    if window < 1:
        raise ValueError(f"Greedy window must be >= 1 step, got {window}")
    if not epsilon >= 0:
        raise ValueError(f"Greedy epsilon must be >= 0, got {epsilon}")
    _check_two_modalities(state.speeds.shape[-1])
    if terms.shape != state.speeds.shape:
        raise ValueError(f"terms {tuple(terms.shape)} != speeds {tuple(state.speeds.shape)}")
    if not unlocked:  # accumulate, never curate
        speeds = state.speeds + terms.to(state.speeds)
        off = torch.zeros_like(state.curation)
        return GreedyState(speeds, off, torch.zeros_like(state.caring), state.step), bias_gap(
            speeds
        )
    in_window = state.curation
    speeds = torch.where(in_window, state.speeds, state.speeds + terms.to(state.speeds))
    d = bias_gap(speeds)
    start = ~in_window & (d.abs() > epsilon)  # NaN d never starts a window
    step = torch.where(in_window, state.step + 1, torch.zeros_like(state.step))
    curation = torch.where(in_window, step != window, start)
    caring_new = torch.where(d < 0, torch.ones_like(state.caring), torch.zeros_like(state.caring))
    caring = torch.where(in_window, state.caring, torch.where(start, caring_new, 0 * caring_new))
    return GreedyState(speeds, curation, caring, step), d


def cut_gate(gate: Tensor, running_gate: Tensor, modality: int, state: GreedyState) -> Tensor:
    """Modality `modality`'s MMTM gate (B, C) for this step's forward: its detached running
    average (C,) broadcast over the batch inside a window that cares for it, else `gate`."""
    cut = state.curation & (state.caring == modality)
    return torch.where(cut, running_gate.detach().expand_as(gate), gate)


def mmtm_gates(
    maps: Sequence[Tensor],
    squeeze: tuple[Tensor, Tensor],
    excite: Sequence[tuple[Tensor, Tensor]],
) -> list[Tensor]:
    """MMTM's channel gates (``balanced_mmtm.py`` lines 93-111), one (B, C_m) per branch.

    `maps` are the branches' feature maps (B, C_m, ...); each is squeezed to its channel means,
    the squeezes concatenated, passed through ``relu(W_sq s + b_sq)`` (`squeeze` = (weight,
    bias)) and each branch's excitation ``sigmoid(W_m e + b_m)``. Rescale branch m by
    ``maps[m] * gate_m[..., None, None]``.
    """
    return mmtm_excite([x.flatten(2).mean(-1) for x in maps], squeeze, excite)


def mmtm_excite(
    squeezed: Sequence[Tensor],
    squeeze: tuple[Tensor, Tensor],
    excite: Sequence[tuple[Tensor, Tensor]],
) -> list[Tensor]:
    """`mmtm_gates` from the branches' squeezed maps, one (B, C_m) channel mean per branch (the
    caller's squeeze: a clip's frames are averaged too, `inforeg.mmtm`)."""
    if len(squeezed) != len(excite):
        raise ValueError(f"{len(squeezed)} squeezed maps but {len(excite)} excitation layers")
    e = torch.relu(F.linear(torch.cat(list(squeezed), dim=1), *squeeze))  # (B, hidden)
    return [torch.sigmoid(F.linear(e, w, b)) for w, b in excite]


def running_gate(average: Tensor, gate: Tensor, step: int | Tensor) -> Tensor:
    """``(mean_b gate + average * step) / (step + 1)``, detached: the gate's running mean over
    the forwards so far (``balanced_mmtm.py`` lines 113-116; `step` counts earlier forwards)."""
    return ((gate.detach().mean(0) + average * step) / (step + 1)).detach()


def conditional_utilization(acc_with_flow: Tensor, acc_without_flow: Tensor) -> Tensor:
    """(M,) ``(A_m - A_m^cut) / A_m``: the relative accuracy branch m loses when the other
    modality's cross-modal flow into it is replaced by its average (the code's evaluation)."""
    if acc_with_flow.shape != acc_without_flow.shape:
        raise ValueError(
            f"accuracies of shapes {tuple(acc_with_flow.shape)} and "
            f"{tuple(acc_without_flow.shape)} differ"
        )
    return (acc_with_flow - acc_without_flow) / acc_with_flow


def _check_two_modalities(m: int) -> None:
    if m != 2:
        raise ValueError(f"Greedy is defined for two modalities (two branches), got {m}")
