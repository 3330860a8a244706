"""`inforeg-bench regulator`: the fused gradient pass against a memory copy and the official code.

    inforeg-bench regulator                            # two ResNet-18 encoders (the paper's)
    inforeg-bench regulator --params 20000000 --modalities 3 --impl flat
    inforeg-bench regulator --device cuda --impl flat  # the Triton kernel, wall clock

For each implementation: milliseconds per call and effective GB/s, i.e. the bytes the update
must move (InfoReg: read g, w, anchor, write g = 16 bytes per fp32 element; OGM-GE: read and
write g = 8; the statistic alone: read g = 4) over the time, against a same-size copy
(``dst.copy_(src)``: read + write = 8 bytes per element) measured in the same run. Also the
"official-style" per-step gradient work of the official InfoReg code (its per-parameter loop
with identity scans adding ``beta * (w - anchor)`` to both encoders, its per-layer Fisher
accumulators for every Conv/Linear weight, its per-parameter squared norms with a host sync
each) and, on the ResNet-18 model, a forward + backward + SGD step of the audio-video model, so
that the regulator's share of a training step is printed. InfoReg's alpha is forced non-zero
for every modality (the worst case: every modality regulated).

On CUDA the calls are timed on the wall clock in batches between syncs, which includes their
launch overhead; the GPU check (`bench.gpu_kernel`, `scripts/gpu_check.sh`) times the Triton
pass with `triton.testing.do_bench` over one large call instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from inforeg.config import RegulatorConfig
from inforeg.groups import ModalityGroups
from inforeg.kernels import DEFAULT_CHUNK, IMPLS, GradientUpdate, ParamGradients, regulate_
from inforeg.model import EncoderConfig, InputSpec, ModelConfig, MultimodalModel, build_model
from inforeg.regulators import build_regulator

UPDATES = ("inforeg", "ogm_ge", "stat")
# bytes each element must move: pulled (read g, w, anchor; write g), scaled (read, write g),
# statistic only (read g)
PULLED, SCALED, STAT_ONLY = 16, 8, 4
SYNTHETIC_NAMES = ("audio", "video", "text")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        choices=("resnet18", "synthetic"),
        default=None,
        help="resnet18: two ResNet-18 encoders (default); synthetic: see --params",
    )
    p.add_argument(
        "--params",
        type=int,
        default=None,
        help="synthetic: total encoder parameters (implies --model synthetic)",
    )
    p.add_argument("--modalities", type=int, default=2, help="synthetic: number of encoders")
    p.add_argument(
        "--impl",
        nargs="+",
        choices=IMPLS,
        default=["flat", "foreach", "reference"],
        help="implementations to time (the JSON's top level describes the first)",
    )
    p.add_argument(
        "--update",
        choices=UPDATES,
        default="inforeg",
        help="inforeg: pull to the anchor; ogm_ge: scale + GE noise; stat: trace only",
    )
    p.add_argument(
        "--regulated",
        type=int,
        default=None,
        help="inforeg: how many encoders are pulled (the first ones in head order); "
        "default: all but the weakest, the paper's rule (1 of 2 as the official "
        "code's step); the others only feed the trace statistic",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for this run (default: torch's own choice)",
    )
    p.add_argument("--repeat", type=int, default=20, help="timed calls per implementation")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="flat on CPU: piece size")
    p.add_argument("--batch", type=int, default=8, help="training-step batch (resnet18 model)")
    p.add_argument("--step-repeat", type=int, default=3, help="timed training steps")
    p.add_argument("--no-step", action="store_true", help="skip the training-step measurement")
    p.add_argument("--no-official", action="store_true", help="skip the official-style timing")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")


def argument_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments (None: nothing)."""
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        return "--device cuda but no CUDA device is available"
    if is_synthetic(args) and (args.params is None or args.params < args.modalities):
        return "--model synthetic needs --params >= --modalities"
    if args.modalities < 1 or args.repeat < 1:
        return "--modalities and --repeat must be >= 1"
    if args.threads is not None and args.threads < 1:
        return "--threads must be >= 1"
    modalities = args.modalities if is_synthetic(args) else 2
    if args.regulated is not None and not 0 <= args.regulated <= modalities:
        return f"--regulated must be in 0..{modalities}"
    return None


def is_synthetic(args: argparse.Namespace) -> bool:
    return bool(args.model == "synthetic" or (args.model is None and args.params is not None))


def bytes_moved(update: str, sizes: list[int], regulated: int) -> int:
    """The bytes the update must move over encoders of `sizes` parameters."""
    n = sum(sizes)
    pulled = sum(sizes[:regulated]) if update == "inforeg" else 0
    return {
        "inforeg": PULLED * pulled + STAT_ONLY * (n - pulled),
        "ogm_ge": SCALED * n,
        "stat": STAT_ONLY * n,
    }[update]


def run(args: argparse.Namespace) -> int:
    problem = argument_error(args)
    if problem is not None:
        print(f"regulator bench: {problem}")
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # this process only, asked for on the command line
    device = torch.device(args.device)
    synthetic = is_synthetic(args)
    modalities = args.modalities if synthetic else 2
    regulated = max(1, modalities - 1) if args.regulated is None else args.regulated
    torch.manual_seed(0)
    model = synthetic_model(args.params, args.modalities) if synthetic else resnet18_model()
    model = model.to(device)
    groups = ModalityGroups.from_model(model)
    sizes = [sum(p.numel for p in groups.params if p.modality == m) for m in groups.modalities]
    n, moved = sum(sizes), bytes_moved(args.update, sizes, regulated)
    step_ms = loss_overhead_ms = None
    if not synthetic and not args.no_step:
        step_ms, loss_overhead_ms = train_step_ms(model, args.batch, args.step_repeat)
    rows = measure(args, model, n, moved, regulated, step_ms, loss_overhead_ms)
    where = "CUDA " + torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    what = f"{args.modalities} synthetic encoders" if synthetic else "two ResNet-18 encoders"
    pulls = f" ({regulated} of {modalities} encoders pulled)" if args.update == "inforeg" else ""
    print(
        f"regulator bench: {what}, {n:,} encoder parameters, update={args.update}{pulls}, "
        f"{where}, {torch.get_num_threads()} threads"
    )
    print_legend(args.update, moved, device)
    if step_ms is not None:
        print(
            f"  training step (fwd+bwd+SGD, batch {args.batch}): {step_ms:.1f} ms; "
            f"the regulator's loss() adds {loss_overhead_ms:.2f} ms"
        )
    print(_table(rows))
    if args.json is not None:
        payload = dict(rows[0])
        payload.update(device=where, model=what, params=n, modalities=groups.num_modalities)
        pulled = regulated if args.update == "inforeg" else None
        payload.update(update=args.update, regulated=pulled)
        payload.update(bytes_moved=moved, loss_overhead_ms=loss_overhead_ms)
        payload.update(threads=torch.get_num_threads(), results=rows)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"  wrote {args.json}")
    return 0


def measure(
    args: argparse.Namespace,
    model: MultimodalModel,
    n: int,
    moved: int,
    regulated: int,
    step_ms: float | None,
    loss_overhead_ms: float | None,
) -> list[dict[str, Any]]:
    """One row per implementation: its time against a same-size copy and the official code."""
    device = torch.device(args.device)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)

    def copy_fn() -> None:
        dst.copy_(src)

    official = None if args.no_official else OfficialStyle(copy.deepcopy(model), 2e-3, regulated)
    rows = []
    for impl in args.impl:
        # copy, update and official-style calls alternate, so that load from other processes
        # on a shared machine hits all three alike and their ratios stay meaningful
        fns: dict[str, Callable[[], object]] = {
            "copy": copy_fn,
            "impl": update_call(model, impl, args.update, args.chunk, regulated),
        }
        if official is not None:
            fns["official"] = official.step
        med = interleaved_ms(fns, args.repeat, args.warmup, device)
        ms, copy_ms = med["impl"], med["copy"]
        copy_gbps = 8 * n / copy_ms / 1e6
        gbps = moved / ms / 1e6
        official_ms = med.get("official")
        rows.append(
            {
                "impl": impl,
                "ms_per_call": ms,
                "gbps": gbps,
                "copy_ms": copy_ms,
                "copy_gbps": copy_gbps,
                "pct_of_copy": 100 * gbps / copy_gbps,
                "official_ms_per_call": official_ms,
                "speedup_vs_official": None if official_ms is None else official_ms / ms,
                "train_step_ms": step_ms,
                "pct_of_train_step": None
                if step_ms is None or loss_overhead_ms is None
                else 100 * (ms + loss_overhead_ms) / step_ms,
            }
        )
    return rows


def print_legend(update: str, moved: int, device: torch.device) -> None:
    traffic = {
        "inforeg": "read g, w, anchor and write g where pulled; read g elsewhere, for the trace",
        "ogm_ge": "read and write g",
        "stat": "read g",
    }[update]
    timing = (
        "timed in batches between syncs"
        if device.type == "cuda"
        else "each row's three timings interleaved (medians)"
    )
    print(
        f"  GB/s = the bytes the update must move ({moved / 1e6:.0f} MB: {traffic}) per second\n"
        "  copy = same-size dst.copy_(src); official = the official code's per-step gradient "
        "work; " + timing
    )


# ----- models -----------------------------------------------------------------------------------
def resnet18_model(num_classes: int = 6) -> MultimodalModel:
    enc = {"audio": EncoderConfig(kind="resnet18"), "video": EncoderConfig(kind="resnet18")}
    return build_model(ModelConfig(encoders=enc), InputSpec(), num_classes)


class _ConvStack(nn.Module):
    def __init__(self, params: int, width: int = 256):
        super().__init__()
        per_layer = width * width * 9 + 2 * width  # conv + BN affine
        layers: list[nn.Module] = []
        while params >= per_layer:
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
            params -= per_layer
        if params > 0:
            layers.append(nn.Linear(params, 1, bias=False))  # the remainder, one weight row
        self.layers = nn.Sequential(*layers)
        self.out_dim = width


def synthetic_model(params: int, modalities: int, num_classes: int = 10) -> MultimodalModel:
    """Encoders of ~params/modalities parameters each (256-channel 3x3 convs + BN), for timing
    only (they are not meant to run forward)."""
    names = SYNTHETIC_NAMES if modalities <= len(SYNTHETIC_NAMES) else ()
    encoders = {
        (names[i] if names else f"m{i}"): _ConvStack(params // modalities)
        for i in range(modalities)
    }
    return MultimodalModel(encoders, num_classes)


# ----- timing -----------------------------------------------------------------------------------
def time_ms(fn: Callable[[], object], repeat: int, warmup: int, device: torch.device) -> float:
    """Wall time of `fn` in milliseconds (device work included)."""
    return interleaved_ms({"fn": fn}, repeat, warmup, device)["fn"]


def interleaved_ms(
    fns: dict[str, Callable[[], object]], repeat: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Per-call wall time in ms of each function.

    CPU: the functions are called in turn `repeat` times and the median of each is kept, so that
    load from other processes on a shared machine hits all alike. CUDA: each function runs
    `repeat` times back to back between two synchronisations (the mean), so that the host's
    launch overhead overlaps the device work as it does in training.
    """
    cuda = device.type == "cuda"
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    if cuda:
        torch.cuda.synchronize(device)
        out = {}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(repeat):
                fn()
            torch.cuda.synchronize(device)
            out[name] = (time.perf_counter() - t0) * 1e3 / repeat
        return out
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def update_call(
    model: MultimodalModel, impl: str, update_kind: str, chunk: int, regulated: int
) -> Callable[[], object]:
    """One implementation's call on a private copy of the model with random gradients."""
    m = copy.deepcopy(model)
    groups = ModalityGroups.from_model(m)
    view = ParamGradients(groups, contiguous=impl == "flat")
    device = next(m.parameters()).device
    gen = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():
        for p in groups.parameters():
            p.grad = torch.randn(p.shape, generator=gen, device=device) * 1e-3
    view.snapshot_anchor()
    with torch.no_grad():  # w != anchor, as in the middle of an epoch
        for p in groups.parameters():
            p.add_(torch.randn(p.shape, generator=gen, device=device), alpha=1e-4)
    mod = groups.num_modalities
    if update_kind == "inforeg":
        alpha = torch.tensor([1.2] * regulated + [0.0] * (mod - regulated), device=device)
        update = GradientUpdate(alpha=alpha, stat="paper")
    elif update_kind == "ogm_ge":
        std = torch.full((len(groups.params),), 1e-3, device=device)
        update = GradientUpdate(
            scale=torch.full((mod,), 0.5, device=device), scale_conv_only=True,
            noise_std=std * groups.table("conv_weight", device), stat="paper",
        )  # fmt: skip
    else:
        update = GradientUpdate(stat="paper")
    return lambda: regulate_(view, update, impl, chunk=chunk)


def train_step_ms(model: MultimodalModel, batch: int, repeat: int) -> tuple[float, float]:
    """(ms of a forward + backward + SGD step, ms the InfoReg regulator's loss() adds to the
    plain cross-entropy) on the audio-video model, as in the official settings."""
    m = copy.deepcopy(model)
    device = next(m.parameters()).device
    data = {
        "audio": torch.randn(batch, 1, 257, 188, device=device),
        "video": torch.randn(batch, 3, 3, 224, 224, device=device),
    }
    labels = torch.randint(0, m.head.out_features, (batch,), device=device)
    opt = torch.optim.SGD(m.parameters(), lr=2e-3, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(m(data).logits, labels).backward()
        opt.step()

    step_ms = time_ms(step, repeat, 1, device)
    groups = ModalityGroups.from_model(m)
    reg = build_regulator(RegulatorConfig(name="inforeg"), groups, ParamGradients(groups), m.head)
    reg.on_epoch_start(0)
    with torch.no_grad():
        out = m(data)
    plain = time_ms(lambda: F.cross_entropy(out.logits, labels), 20, 3, device)
    with_reg = time_ms(lambda: reg.loss(out, labels), 20, 3, device)
    return step_ms, max(0.0, with_reg - plain)


# ----- the official code's per-step gradient work -----------------------------------------------
class OfficialStyle:
    """What the official InfoReg code does to the gradients every step, rewritten here only to
    time it: identity scans, per-layer Fisher accumulators, per-parameter norms with ``.item()``.
    """

    def __init__(self, model: MultimodalModel, lr: float, regulated: int):
        self.model = model
        self.lr = lr
        self.regulated = regulated
        self.anchor = copy.deepcopy(model)  # the code's per-epoch deepcopy (not timed)
        self.encoders = list(model.encoders.values())
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        weighted = [
            (name, mod) for name, mod in model.named_modules()
            if isinstance(mod, nn.Conv2d | nn.Linear)
        ]  # fmt: skip
        self.fim = {name: torch.zeros_like(mod.weight) for name, mod in weighted}
        enc_modules = {id(mod) for enc in self.encoders for mod in enc.modules()}
        self.fim_encoder = {
            name: torch.zeros_like(mod.weight) for name, mod in weighted if id(mod) in enc_modules
        }
        self.modules = dict(weighted)
        self.encoder_params = {id(p) for enc in self.encoders for p in enc.parameters()}
        device = next(model.parameters()).device
        self.beta = 0.95 * torch.exp(torch.tanh(torch.tensor(0.3, device=device)))
        self.norm_sum = 0.0

    @torch.no_grad()
    def step(self) -> None:
        # the code's beta for the regulated encoder(s), its 0 for the others (still computed)
        coefs = [self.beta] * self.regulated + [0.0] * (len(self.encoders) - self.regulated)
        for p, q in zip(self.model.parameters(), self.anchor.parameters(), strict=True):
            for enc, coef in zip(self.encoders, coefs, strict=True):
                if p.requires_grad and any(p is x for x in enc.parameters()):  # identity scan
                    grad = p.grad
                    assert grad is not None
                    grad += coef * (p - q)
        for name, mod in self.modules.items():
            self.fim[name] += mod.weight.grad * mod.weight.grad
        for name in self.fim_encoder:
            w = self.modules[name].weight
            self.fim_encoder[name] += w.grad * w.grad
        for p in self.model.parameters():
            if id(p) in self.encoder_params and p.grad is not None and p.grad.dim() == 4:
                self.norm_sum += self.lr * torch.sum(p.grad**2).item()  # a host sync each


def _table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    head = (
        f"  {'impl':<10} {'ms/call':>8} {'GB/s':>6} {'copy ms':>8} {'copy GB/s':>9} "
        f"{'% of copy':>9} {'official ms':>11} {'x official':>10} {'% of step':>9}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"  {r['impl']:<10} {r['ms_per_call']:>8.2f} {r['gbps']:>6.1f} {r['copy_ms']:>8.2f} "
            f"{r['copy_gbps']:>9.1f} {r['pct_of_copy']:>9.1f} "
            f"{fmt(r['official_ms_per_call'], '.1f'):>11} "
            f"{fmt(r['speedup_vs_official'], '.1f'):>10} {fmt(r['pct_of_train_step'], '.2f'):>9}"
        )
    return "\n".join(lines)
