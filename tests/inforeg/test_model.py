from __future__ import annotations

import pytest
import torch

from inforeg.model import EncoderConfig, InputSpec, ModelConfig, build_model


def test_resnet18_audio_video_model_has_the_papers_size_and_shapes() -> None:
    cfg = ModelConfig(
        encoders={"audio": EncoderConfig(kind="resnet18"), "video": EncoderConfig(kind="resnet18")}
    )
    model = build_model(cfg, InputSpec(), num_classes=6)
    sizes = {m: sum(p.numel() for p in e.parameters()) for m, e in model.encoders.items()}
    # ResNet-18 trunk without its fc: 11,176,512 parameters on RGB, 11,170,240 on 1 channel.
    assert sizes == {"audio": 11_170_240, "video": 11_176_512}
    assert model.head.in_features == 1024 and model.modalities == ("audio", "video")
    batch = {"audio": torch.randn(2, 1, 257, 188), "video": torch.randn(2, 3, 3, 64, 64)}
    out = model(batch)
    assert out.logits.shape == (2, 6)
    assert [f.shape for f in out.features.values()] == [(2, 512), (2, 512)]


def test_head_is_a_function_of_the_concatenated_features() -> None:
    cfg = ModelConfig(
        encoders={
            "video": EncoderConfig(kind="cnn", width=4, dim=8),
            "text": EncoderConfig(kind="transformer", dim=16, heads=2),
        }
    )
    model = build_model(cfg, InputSpec(vocab_size=50, text_len=10), num_classes=3).eval()
    text = torch.randint(1, 50, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 5:] = False
    batch = {"video": torch.randn(2, 4, 3, 32, 32), "text": text, "text_mask": mask}
    out = model(batch)
    joined = torch.cat([out.features["video"], out.features["text"]], dim=1)
    torch.testing.assert_close(out.logits, model.head(joined))
    # Padding is ignored: changing masked-out tokens does not change the text features.
    text2 = text.clone()
    text2[0, 5:] = 7
    out2 = model({**batch, "text": text2})
    torch.testing.assert_close(out2.features["text"], out.features["text"])


def test_bad_model_configs_name_the_field() -> None:
    with pytest.raises(ValueError, match="encoder kind"):
        EncoderConfig(kind="vit")
    with pytest.raises(ValueError, match=r"model\.encoders\.text\.kind"):
        ModelConfig(encoders={"text": EncoderConfig(kind="cnn")})
    with pytest.raises(ValueError, match=r"model\.fusion must be one of"):
        ModelConfig(encoders={"audio": EncoderConfig(kind="cnn")}, fusion="film")
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(kind="transformer", dim=10, heads=4)
