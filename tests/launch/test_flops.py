"""The model's training FLOPs per sample against a count worked out by hand, and the peaks."""

from __future__ import annotations

import pytest
import torch

from inforeg.model import EncoderConfig, InputSpec, ModelConfig
from launch.flops import peak_tflops, training_flops


def conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def resnet18_macs(c_in: int, h: int, w: int) -> tuple[int, int]:
    """Multiply-accumulates of ResNet-18's convolutions on one (c_in, h, w) image, and of its
    first convolution alone (whose input needs no gradient)."""
    h, w = conv_out(h, 7, 2, 3), conv_out(w, 7, 2, 3)
    first = 49 * c_in * 64 * h * w
    macs = first
    h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)  # max pool
    c = 64
    for stage, c_out in enumerate((64, 128, 256, 512)):
        stride = 1 if stage == 0 else 2
        h2, w2 = conv_out(h, 3, stride, 1), conv_out(w, 3, stride, 1)
        macs += 9 * c * c_out * h2 * w2  # block 1, conv 1
        macs += 9 * c_out * c_out * h2 * w2 * 3  # block 1 conv 2, block 2 convs 1 and 2
        if stride != 1 or c != c_out:
            macs += c * c_out * h2 * w2  # the 1x1 shortcut
        c, h, w = c_out, h2, w2
    return macs, first


def test_resnet18_audio_video_flops_match_the_count_by_hand() -> None:
    frames, size, audio = 3, 224, (257, 188)
    video_macs, video_first = resnet18_macs(3, size, size)
    audio_macs, audio_first = resnet18_macs(1, *audio)
    head_macs = 1024 * 6
    # training = forward (2 FLOPs per MAC) + gradients of the inputs and the weights (2 x 2),
    # except the first convolutions, whose input (the data) needs no gradient
    expected_video = frames * (6 * video_macs - 2 * video_first)
    expected_audio = 6 * audio_macs - 2 * audio_first
    expected = expected_video + expected_audio + 6 * head_macs
    assert video_macs == pytest.approx(1.814e9, rel=0.01)  # ResNet-18's known 1.8 GMACs at 224

    cfg = ModelConfig(
        encoders={"audio": EncoderConfig(kind="resnet18"), "video": EncoderConfig(kind="resnet18")}
    )
    counted = training_flops(cfg, InputSpec(), 6, frames, size, audio)
    assert counted.total == pytest.approx(expected, rel=0.02)
    assert counted.by_module["encoders.video"] == pytest.approx(expected_video, rel=0.02)
    assert counted.by_module["encoders.audio"] == pytest.approx(expected_audio, rel=0.02)
    assert counted.by_module["head"] == pytest.approx(6 * head_macs, rel=0.02)


def test_counting_leaves_the_global_rng_alone() -> None:
    cfg = ModelConfig(encoders={"audio": EncoderConfig(kind="cnn", width=4, dim=8)})
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    training_flops(cfg, InputSpec(), 2, 3, 32, (33, 20))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_peaks_come_from_the_override_or_nowhere_on_a_cpu() -> None:
    cpu = torch.device("cpu")
    assert peak_tflops(cpu, torch.float32, 0.0) is None
    assert peak_tflops(cpu, torch.float32, 1.5) == 1.5
