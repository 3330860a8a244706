"""Modality encoders, late fusion and the shared head.

The model is ``encoders`` (an ``nn.ModuleDict`` modality -> encoder returning (B, D_m) features)
and one linear ``head`` over the features concatenated in ``encoders`` order, as in the paper and
OGM-GE. A modality's unimodal logits are the head's own slice (``inforeg.functional``), so no
extra heads are needed; `ModalityGroups` is built from ``encoders``.

Encoders:
- ``resnet18``: the paper's encoder for spectrograms (B, 1, F, T) and frames (B, K, 3, H, W);
  frames run as a (B*K) batch and are average-pooled over time and space (as OGM-GE).
- ``cnn``: a small conv net with the same input conventions, for tests and demos.
- ``transformer``: a small text encoder over (B, L) token ids with a padding mask.
- ``mlp``: bag-of-embeddings text encoder (masked mean of embeddings, then an MLP).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from inforeg.mmtm import build_bypass, mmtm_features

ENCODER_KINDS = ("resnet18", "cnn", "transformer", "mlp")
IMAGE_KINDS = ("resnet18", "cnn")
TEXT_KINDS = ("transformer", "mlp")
FUSIONS = ("concat", "mmtm")
STAGED_KINDS = IMAGE_KINDS
"""Encoders whose trunk runs stage by stage (what ``fusion: mmtm`` needs)."""


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """One modality's encoder."""

    kind: str
    """resnet18 | cnn (audio spectrograms, video frames) | transformer | mlp (text)."""
    width: int = 64
    """Base channel count (resnet18: 64 as in the paper; cnn: first conv's channels)."""
    dim: int = 128
    """Output feature size D_m for cnn / transformer / mlp (resnet18 always gives 8 * width)."""
    layers: int = 2
    """transformer: encoder layers."""
    heads: int = 4
    """transformer: attention heads (must divide dim)."""

    def __post_init__(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"encoder kind must be one of {ENCODER_KINDS}, got {self.kind!r}")
        for name in ("width", "dim", "layers", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"encoder {name} must be >= 1, got {getattr(self, name)}")
        if self.kind == "transformer" and self.dim % self.heads:
            raise ValueError(f"encoder dim {self.dim} must be divisible by heads {self.heads}")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Encoders per modality (their order is the head's concatenation order) and the fusion."""

    encoders: Mapping[str, EncoderConfig] = field(default_factory=dict)
    fusion: str = "concat"
    """concat: late fusion (each encoder whole, one head on the concatenated features); mmtm:
    two image encoders run stage by stage with an MMTM module after each of their last three
    stages (Greedy's mid-fusion, `inforeg.mmtm`), the same head on the pooled features."""
    mmtm_ratio: int = 4
    """fusion mmtm: the squeeze layer maps sum C_m channels to 2 sum C_m / ratio (the code's 4)."""

    def __post_init__(self) -> None:
        if not self.encoders:
            raise ValueError("model.encoders must name at least one modality")
        if self.fusion not in FUSIONS:
            raise ValueError(f"model.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.mmtm_ratio < 1:
            raise ValueError(f"model.mmtm_ratio must be >= 1, got {self.mmtm_ratio}")
        if self.fusion == "mmtm":
            if len(self.encoders) != 2:
                raise ValueError(
                    "model.fusion: mmtm couples exactly two encoders, got "
                    f"{len(self.encoders)} ({', '.join(self.encoders)})"
                )
            for modality, enc in self.encoders.items():
                if enc.kind not in STAGED_KINDS:
                    raise ValueError(
                        f"model.fusion: mmtm needs encoders that run stage by stage "
                        f"{STAGED_KINDS}; model.encoders.{modality}.kind is {enc.kind!r}"
                    )
        for modality, enc in self.encoders.items():
            if modality == "text" and enc.kind not in TEXT_KINDS:
                raise ValueError(f"model.encoders.text.kind must be one of {TEXT_KINDS}")
            if modality in ("audio", "video") and enc.kind not in IMAGE_KINDS:
                raise ValueError(f"model.encoders.{modality}.kind must be one of {IMAGE_KINDS}")


class ModelOutput(NamedTuple):
    """The model's outputs. A named tuple (not a dataclass) so that DeepSpeed's engine finds its
    tensors: it hooks the forward's output tensors to run its backward prologue (timers, the
    flops profiler, ZeRO's backward bookkeeping) and skips objects it cannot traverse."""

    logits: Tensor  # (B, C)
    features: dict[str, Tensor]  # modality -> (B, D_m), in head order


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet18_trunk(in_channels: int, width: int) -> nn.Sequential:
    """ResNet-18 without its classifier: (N, in_channels, H, W) -> (N, 8 * width, H/32, W/32)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    c_in = width
    for stage, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
        stride = 1 if stage == 0 else 2
        layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    trunk = nn.Sequential(*layers)
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return trunk


def small_cnn_trunk(in_channels: int, width: int) -> nn.Sequential:
    """Four stride-2 conv+BN+ReLU stages: (N, C, H, W) -> (N, 8 * width, H/16, W/16)."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for c_out in (width, 2 * width, 4 * width, 8 * width):
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """Spectrograms (B, C, F, T) or frame stacks (B, K, C, H, W) -> (B, D) by a 2-D trunk.

    Frames are folded into the batch, run through the trunk, and averaged over time and space.
    `stage_ends` cut the trunk (an ``nn.Sequential``) into its four stages, for mid-fusion
    (`inforeg.mmtm`); `stage_channels` are their output widths.
    """

    def __init__(
        self,
        trunk: nn.Sequential,
        trunk_channels: int,
        dim: int | None,
        stage_ends: tuple[int, ...] = (),
        stage_channels: tuple[int, ...] = (),
    ):
        super().__init__()
        self.trunk = trunk
        self.proj: nn.Module = nn.Identity() if dim is None else nn.Linear(trunk_channels, dim)
        self.out_dim = trunk_channels if dim is None else dim
        self.stage_ends = stage_ends
        self.stage_channels = stage_channels

    def fold(self, x: Tensor) -> Tensor:
        """The trunk's input: (B, C, F, T) as is, frames (B, K, C, H, W) as (B*K, C, H, W)."""
        return rearrange(x, "b k c h w -> (b k) c h w") if x.dim() == 5 else x

    def run_stage(self, stage: int, fmap: Tensor) -> Tensor:
        """Stage `stage` (0-based) of the trunk on a folded map."""
        lo = self.stage_ends[stage - 1] if stage else 0
        for module in islice(self.trunk, lo, self.stage_ends[stage]):
            fmap = module(fmap)
        return fmap

    def pool(self, fmap: Tensor, batch: int) -> Tensor:
        """(B*K, D, H, W) or (B, D, F, T) -> (B, out_dim): mean over frames and space."""
        if fmap.shape[0] == batch:  # a spectrogram's map (or one frame per clip)
            return self.proj(reduce(fmap, "b d f t -> b d", "mean"))
        return self.proj(reduce(fmap, "(b k) d h w -> b d", "mean", b=batch))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.pool(self.trunk(self.fold(x)), x.shape[0])


class TextTransformerEncoder(nn.Module):
    """Token ids (B, L) with mask (B, L) -> masked mean of a small Transformer's outputs (B, D)."""

    def __init__(self, vocab_size: int, max_len: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_dim = dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = x != 0 if mask is None else mask  # (B, L), True = real token
        h = self.encoder(self.embed(x) + self.position[: x.shape[1]], src_key_padding_mask=~mask)
        return masked_mean(h, mask)


class TextBagEncoder(nn.Module):
    """Token ids (B, L) -> MLP over the masked mean embedding (B, D)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.out_dim = dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = x != 0 if mask is None else mask
        return self.mlp(masked_mean(self.embed(x), mask))


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of h (B, L, D) over positions where mask (B, L) is True; zeros for empty rows."""
    weights = rearrange(mask, "b l -> b l 1").to(h.dtype)
    total = reduce(h * weights, "b l d -> b d", "sum")
    return total / reduce(weights, "b l 1 -> b 1", "sum").clamp_min(1.0)


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What the data tells the model: input channels per image modality, text vocabulary/length."""

    channels: Mapping[str, int] = field(default_factory=lambda: {"audio": 1, "video": 3})
    vocab_size: int = 0
    text_len: int = 0


def build_encoder(modality: str, cfg: EncoderConfig, spec: InputSpec) -> nn.Module:
    if cfg.kind in TEXT_KINDS:
        if spec.vocab_size < 2 or spec.text_len < 1:
            raise ValueError(f"encoder for {modality!r} needs the text vocabulary and length")
        if cfg.kind == "transformer":
            return TextTransformerEncoder(
                spec.vocab_size, spec.text_len, cfg.dim, cfg.layers, cfg.heads
            )
        return TextBagEncoder(spec.vocab_size, cfg.dim)
    if modality not in spec.channels:
        raise ValueError(f"no input channel count for modality {modality!r}")
    in_channels = spec.channels[modality]
    widths = tuple(k * cfg.width for k in (1, 2, 4, 8))
    if cfg.kind == "resnet18":  # stem + layer1 (6 modules), then two blocks per layer
        trunk = resnet18_trunk(in_channels, cfg.width)
        return ImageEncoder(trunk, 8 * cfg.width, None, (6, 8, 10, 12), widths)
    trunk = small_cnn_trunk(in_channels, cfg.width)  # conv, BN, ReLU per stage
    return ImageEncoder(trunk, 8 * cfg.width, cfg.dim, (3, 6, 9, 12), widths)


class MultimodalModel(nn.Module):
    """Encoders per modality, concatenated features, one linear head; with `bypass` (MMTM
    modules between two staged image encoders, `inforeg.mmtm`), mid-fusion before the pooling."""

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        num_classes: int,
        bypass: Mapping[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        dims = [int(getattr(enc, "out_dim")) for enc in self.encoders.values()]  # noqa: B009
        self.head = nn.Linear(sum(dims), num_classes)
        self.bypass = nn.ModuleDict(dict(bypass or {}))
        """Cross-modal modules outside the encoders (empty for late fusion)."""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.encoders.keys())

    def forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        if len(self.bypass):
            features = mmtm_features(self.encoders, self.bypass, batch)
        else:
            features = {
                m: enc(batch[m], batch.get(f"{m}_mask")) for m, enc in self.encoders.items()
            }  # m -> (B, D_m)
        logits = self.head(torch.cat(list(features.values()), dim=1))  # (B, C)
        return ModelOutput(logits=logits, features=features)


def build_model(cfg: ModelConfig, spec: InputSpec, num_classes: int) -> MultimodalModel:
    """The model for `cfg`, sized by what the data provides (`spec`) and the class count."""
    encoders = {m: build_encoder(m, enc_cfg, spec) for m, enc_cfg in cfg.encoders.items()}
    model = MultimodalModel(encoders, num_classes)
    if cfg.fusion == "mmtm":  # built after the head: encoders and head as the concat model's
        model.bypass.update(build_bypass(encoders, cfg.mmtm_ratio))
    return model
