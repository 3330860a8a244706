"""The device-stage check's comparison, run CPU against CPU (the GPU check runs CUDA against
CPU): shapes, tolerances and figures, and that a wrong stage fails it."""

from __future__ import annotations

import torch

import bench.gpu_stage as stage


def test_the_stage_comparison_passes_for_the_same_device() -> None:
    ok, lines = stage.compare_stage(torch.device("cpu"))
    assert ok, lines
    assert len(lines) == 1 + len(stage.FEATURES)
    assert "(257, 188)" in lines[1] and "(128, 188)" in lines[2]


def test_the_stage_comparison_catches_a_wrong_normalisation(monkeypatch) -> None:
    from pipelines.contract import normalize_video

    calls = []

    def skewed(frames: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
        calls.append(1)  # _timed calls it 6 times per device: the CPU's first, then the other's
        return normalize_video(frames, mean, std) + (1e-3 if len(calls) > 6 else 0.0)

    monkeypatch.setattr(stage, "normalize_video", skewed)
    ok, lines = stage.compare_stage(torch.device("cpu"))
    assert not ok and "video norm max |diff| 1.0e-03" in lines[0]
