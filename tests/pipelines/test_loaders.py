"""Every registered loader (reference, FFCV, and DALI once `pipelines.dali` registers itself) on a
real built dataset: the contract, distributed coverage, exact resume, cross-loader equivalence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import PIPELINES, build_loader
from pipelines.contract import Batch, Loader, LoaderSpec, spec_order
from preprocess.schema import load_dataset_info

PIPES = sorted(PIPELINES)
SIZE, K, B = 64, 3, 4


def make(dataset: Path, pipeline: str, **kw: object) -> Loader:
    args: dict[str, object] = {"batch_size": B, "frames": K, "size": SIZE, "workers": 1}
    args.update(kw)
    return build_loader(LoaderSpec(pipeline=pipeline, data_dir=dataset, **args))  # type: ignore[arg-type]


def drain(loader: Loader) -> dict[str, torch.Tensor]:
    batches: list[Batch] = list(loader)
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", PIPES)
def test_batches_follow_the_contract(dataset: Path, pipeline: str) -> None:
    info = load_dataset_info(dataset)
    n = info.splits["train"].samples
    loader = make(dataset, pipeline, split="train", train=True)
    assert isinstance(loader, Loader) and len(loader) == n // B
    batches = list(loader)
    assert len(batches) == len(loader) and loader.state_dict() == {
        "epoch": 0,
        "batches": len(loader),
    }
    for batch in batches:
        assert set(batch) == {"video", "audio", "text", "text_mask", "label", "index"}
        assert (
            batch["video"].shape == (B, K, 3, SIZE, SIZE) and batch["video"].dtype == torch.float32
        )
        assert batch["audio"].shape == (B, 1, *info.audio_feature_shape)  # type: ignore[misc]
        assert batch["audio"].dtype == torch.float32
        assert (
            batch["text"].shape == (B, info.options.text_len) and batch["text"].dtype == torch.int64
        )
        assert torch.equal(batch["text_mask"], batch["text"] != 0)
        assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
        assert batch["label"].shape == batch["index"].shape == (B,)
        assert all(str(t.device) == "cpu" for t in batch.values())
    seen = torch.cat([b["index"] for b in batches])
    assert seen.unique().numel() == seen.numel()
    # normalised frames: roughly centred, the ImageNet range
    video = torch.cat([b["video"] for b in batches])
    assert video.min() > -2.2 and video.max() < 2.7 and abs(video.mean()) < 1.0
    loader.set_epoch(1)
    epoch1 = torch.cat([b["index"] for b in loader])
    assert not torch.equal(epoch1, seen) and loader.state_dict()["epoch"] == 1
    loader.set_epoch(0)
    assert torch.equal(torch.cat([b["index"] for b in loader]), seen)  # the same for an epoch


# DALI reads in its reader's order (a contiguous part per rank, buffer-shuffled), by design: see
# pipelines/dali.py. Strict: this fails once DALI follows the contract's order.
DALI_ORDER = pytest.mark.xfail(
    reason="DALI's order is its reader's (pipelines/dali.py)", strict=True
)
WITH_DALI_ORDER = [pytest.param(p, marks=DALI_ORDER) if p == "dali" else p for p in PIPES]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", WITH_DALI_ORDER)
def test_train_order_is_the_contracts(dataset: Path, pipeline: str) -> None:
    n = load_dataset_info(dataset).splits["train"].samples
    loader = make(dataset, pipeline, split="train", seed=3, rank=1, world_size=2)
    loader.set_epoch(4)
    seen = drain(loader)["index"].numpy()
    assert np.array_equal(seen, spec_order(loader.spec, n, 4))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", PIPES)
def test_two_ranks_cover_every_sample_once(dataset: Path, pipeline: str) -> None:
    splits = load_dataset_info(dataset).splits
    # eval: every sample of the split exactly once across the ranks, the last batch may be short
    parts = [
        drain(make(dataset, pipeline, split="test", train=False, rank=r, world_size=2))["index"]
        for r in range(2)
    ]
    assert sorted(torch.cat(parts).tolist()) == list(range(splits["test"].samples))
    # train: disjoint parts, the same number of full batches on each rank
    loaders = [make(dataset, pipeline, split="train", rank=r, world_size=2) for r in range(2)]
    steps = splits["train"].samples // (2 * B)
    assert len(loaders[0]) == len(loaders[1]) == steps
    indices = [drain(loader)["index"].tolist() for loader in loaders]
    assert len(indices[0]) == len(indices[1]) == steps * B
    assert not set(indices[0]) & set(indices[1])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", PIPES)
def test_resume_yields_exactly_the_rest_of_the_epoch(dataset: Path, pipeline: str) -> None:
    uninterrupted = make(dataset, pipeline, split="train")
    uninterrupted.set_epoch(2)
    full = list(uninterrupted)
    stopped = make(dataset, pipeline, split="train")
    stopped.set_epoch(2)
    for k, batch in enumerate(stopped):
        assert torch.equal(batch["video"], full[k]["video"])
        if k == 2:
            break  # killed while training on the third batch
    state = stopped.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    resumed = make(dataset, pipeline, split="train")
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 3
    for got, want in zip(rest, full[3:], strict=True):
        assert got.keys() == want.keys()
        for key in got:
            assert torch.equal(got[key], want[key]), key
    assert resumed.state_dict() == {"epoch": 2, "batches": len(full)}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * np.log10(255.0**2 / mse)


def to_pixels(video: torch.Tensor) -> torch.Tensor:
    """Normalised float frames -> [0, 255] (undo dataset.json's ImageNet mean/std)."""
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (video * std + mean) * 255


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", [p for p in PIPES if p != "reference"])
def test_eval_equivalence_with_the_reference(dataset: Path, pipeline: str) -> None:
    """Eval mode: the same (index, label) and text; audio features within 1e-4 relative (same int16
    PCM when the source rate is audio_sr; float32 STFTs batched or not); video within JPEG/resize
    tolerance: the reference resizes the source-resolution q95 frames with PIL's bilinear, the
    others the stored q90 frames (96 px short side) with their own resampler, so pixels differ
    by a few grey levels: mean absolute difference < 4 of 255, PSNR > 30 dB."""
    ref = drain(make(dataset, "reference", split="test", train=False))
    got = drain(make(dataset, pipeline, split="test", train=False))
    n = load_dataset_info(dataset).splits["test"].samples
    assert ref["index"].tolist() == got["index"].tolist() == list(range(n))
    assert torch.equal(ref["label"], got["label"]) and torch.equal(ref["text"], got["text"])
    scale = float(ref["audio"].abs().max())
    assert float((ref["audio"] - got["audio"]).abs().max()) <= 1e-4 * scale
    a, b = to_pixels(ref["video"]), to_pixels(got["video"])
    assert float((a - b).abs().mean()) < 4.0
    assert psnr(a, b) > 30.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", [p for p in WITH_DALI_ORDER if p != "reference"])
def test_train_mode_draws_what_the_reference_draws(dataset: Path, pipeline: str) -> None:
    """Train mode: the same samples in the same batches, the same flips and proportional crops
    (the boxes differ by rounding between 120 px and 96 px frames, so frames agree loosely)."""
    ref = drain(make(dataset, "reference", split="train", seed=7))
    got = drain(make(dataset, pipeline, split="train", seed=7))
    assert torch.equal(ref["index"], got["index"]) and torch.equal(ref["label"], got["label"])
    scale = float(ref["audio"].abs().max())
    assert float((ref["audio"] - got["audio"]).abs().max()) <= 1e-4 * scale
    a, b = to_pixels(ref["video"]), to_pixels(got["video"])
    # a wrong crop or flip gives ~40 grey levels of mean difference on these frames
    assert float((a - b).abs().mean()) < 12.0


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", ["ffcv", "reference"])  # DALI decodes with nvJPEG on GPU
def test_device_batches_match_the_host_ones(dataset: Path, pipeline: str) -> None:
    """On CUDA: every tensor on the device; the same samples; video and audio as on the CPU up to
    float rounding (cuFFT vs pocketFFT)."""
    cpu = drain(make(dataset, pipeline, split="test", train=False))
    batches = list(make(dataset, pipeline, split="test", train=False, device="cuda"))
    assert all(t.device.type == "cuda" for b in batches for t in b.values())
    gpu = {key: torch.cat([b[key] for b in batches]).cpu() for key in batches[0]}
    assert torch.equal(cpu["index"], gpu["index"]) and torch.equal(cpu["text"], gpu["text"])
    torch.testing.assert_close(gpu["video"], cpu["video"], rtol=1e-5, atol=1e-5)
    scale = float(cpu["audio"].abs().max())
    assert float((cpu["audio"] - gpu["audio"]).abs().max()) <= 1e-4 * scale


THREADS_PROBE = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(3)
from pipelines import LoaderSpec, build_loader
loader = build_loader(LoaderSpec(pipeline=sys.argv[2], data_dir=Path(sys.argv[1]), batch_size=4,
                                 frames=3, size=64, workers=2))
after_build = torch.get_num_threads()
for epoch in range(2):
    loader.set_epoch(epoch)
    batches = sum(1 for _ in loader)
print(after_build, torch.get_num_threads(), batches)
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pipeline", PIPES)
def test_a_loader_leaves_torchs_thread_count_alone(dataset: Path, pipeline: str) -> None:
    """Importing FFCV and starting its epochs set torch's thread count (to 1, to the workers): a
    CPU trainer would silently compute on one core. A fresh process, so the import is included."""
    run = subprocess.run(
        [sys.executable, "-c", THREADS_PROBE, str(dataset), pipeline],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    after_build, after_epochs, batches = map(int, run.stdout.split()[-3:])
    assert (after_build, after_epochs) == (3, 3) and batches > 0
