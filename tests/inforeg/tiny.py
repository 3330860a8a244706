"""Tiny models of the real structure (encoders ModuleDict + shared head) and batches for tests."""

from __future__ import annotations

import torch
from torch import Tensor

from inforeg.model import EncoderConfig, InputSpec, ModelConfig, MultimodalModel, build_model

NUM_CLASSES = 3
SPEC = InputSpec(channels={"audio": 1, "video": 3}, vocab_size=40, text_len=6)


def tiny_model(modalities: int = 2, seed: int = 0, fusion: str = "concat") -> MultimodalModel:
    """audio, video (small CNNs) and, with three modalities, text (bag of embeddings); `fusion`
    mmtm couples the two CNNs by MMTM modules (`inforeg.mmtm`)."""
    encoders = {
        "audio": EncoderConfig(kind="cnn", width=4, dim=8),
        "video": EncoderConfig(kind="cnn", width=4, dim=8),
        "text": EncoderConfig(kind="mlp", dim=8),
    }
    names = list(encoders)[:modalities]
    torch.manual_seed(seed)
    cfg = ModelConfig(encoders={m: encoders[m] for m in names}, fusion=fusion)
    return build_model(cfg, SPEC, NUM_CLASSES)


def tiny_batch(model: MultimodalModel, batch: int, seed: int) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    data: dict[str, Tensor] = {
        "audio": torch.randn(batch, 1, 16, 16, generator=gen),
        "video": torch.randn(batch, 2, 3, 16, 16, generator=gen),
        "label": torch.randint(0, NUM_CLASSES, (batch,), generator=gen),
    }
    if "text" in model.encoders:
        data["text"] = torch.randint(1, SPEC.vocab_size, (batch, SPEC.text_len), generator=gen)
    return data
