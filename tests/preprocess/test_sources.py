"""Sources -> manifest -> build: CREMA-D (fake tree of real media), Kinetics-Sounds lists, AV-MNIST
from the real MNIST and FSDD files in ../shared/data."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from preprocess.cli import main as preprocess_main
from preprocess.manifest import read_manifest
from preprocess.media import rgb_to_yuv420p, write_mp4, write_wav
from preprocess.process import decode_jpeg
from preprocess.schema import load_dataset_info
from preprocess.sources.avmnist import pca_degrade, read_idx, verify_checksums
from preprocess.sources.cremad import EMOTIONS, split_list
from preprocess.verify import verify
from preprocess.writers.frames import read_index
from tests.conftest import SHARED_DATA

QUICK_BUILD = ["--workers", "1", "--quiet", "--frame-size", "32", "--audio-seconds", "1"]


def write_flv(path: Path, frames: np.ndarray, fps: int) -> None:
    """An FLV with an H.264 stream, as CREMA-D's VideoFlash files are FLV containers."""
    with av.open(str(path), "w", format="flv") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_split_lists_are_ogm_ges_cremad_split() -> None:
    train, test = split_list("train"), split_list("test")
    assert (len(train), len(test)) == (6698, 744)
    clips = [c for c, _ in train + test]
    assert len(set(clips)) == 7442  # every CREMA-D clip exactly once
    assert {e for _, e in train + test} == set(EMOTIONS)
    assert train[0] == ("1088_IOM_NEU_XX", "NEU") and test[0] == ("1041_TIE_NEU_XX", "NEU")


def test_cremad_fake_tree_to_shards(tmp_path: Path) -> None:
    root = tmp_path / "CREMA-D"
    (root / "VideoFlash").mkdir(parents=True)
    (root / "AudioWAV").mkdir()
    picked = split_list("train")[:5] + split_list("test")[:3]
    rng = np.random.default_rng(0)
    for clip, _ in picked:
        frames = rng.integers(0, 255, size=(8, 36, 48, 3), dtype=np.uint8)
        write_flv(root / "VideoFlash" / f"{clip}.flv", frames, fps=30)
        write_wav(root / "AudioWAV" / f"{clip}.wav", rng.uniform(-0.5, 0.5, 8000), 16000)
    (root / "VideoFlash" / "9999_XXX_ANG_XX.flv").write_bytes(b"")  # on disk, in no list

    out = tmp_path / "manifest"
    assert preprocess_main(["manifest", "cremad", "--root", str(root), "--out", str(out)]) == 0
    full = read_manifest(out / "manifest.csv")
    assert len(full.rows) == 7442  # missing clips are kept: build would report each of them

    args = ["manifest", "cremad", "--root", str(root), "--out", str(out), "--skip-missing"]
    assert preprocess_main(args) == 0
    manifest = read_manifest(out / "manifest.csv")
    assert [(r.id, r.split, r.label) for r in manifest.rows] == [
        (c, "train" if i < 5 else "test", e) for i, (c, e) in enumerate(picked)
    ]
    data = tmp_path / "data"
    build = ["build", "--manifest", str(out / "manifest.csv"), "--out", str(data), *QUICK_BUILD]
    assert preprocess_main(build) == 0
    info = load_dataset_info(data)
    assert info.splits["train"].samples == 5 and info.splits["test"].samples == 3
    assert info.classes == tuple(sorted({e for _, e in picked}))
    assert verify(data) == []


def test_kinetics_sounds_lists_use_the_videos_audio_track(tmp_path: Path) -> None:
    root = tmp_path / "ks"
    rng = np.random.default_rng(1)
    names = {"train": ["a/clip1.mp4", "b/clip2.mp4", "a/clip3.mp4"], "test": ["b/clip4"]}
    for clips in names.values():
        for clip in clips:
            path = root / (clip if clip.endswith(".mp4") else clip + ".mp4")
            path.parent.mkdir(parents=True, exist_ok=True)
            frames = rng.integers(0, 255, size=(6, 32, 32, 3), dtype=np.uint8)
            write_mp4(path, frames, 6, audio=rng.uniform(-0.3, 0.3, 22050), sample_rate=22050)
    lists = {}
    for split, clips in names.items():
        lists[split] = tmp_path / f"{split}.txt"
        # OGM-GE's three-column form for train, two columns for test
        rows = [
            f"{c},10,{c.split('/')[0]}" if split == "train" else f"{c},{c.split('/')[0]}"
            for c in clips
        ]
        lists[split].write_text("\n".join(rows) + "\n")
    out = tmp_path / "manifest"
    args = [
        "manifest",
        "kinetics-sounds",
        "--root",
        str(root),
        "--train-list",
        str(lists["train"]),
        "--test-list",
        str(lists["test"]),
        "--out",
        str(out),
    ]
    assert preprocess_main(args) == 0
    manifest = read_manifest(out / "manifest.csv")
    assert [r.id for r in manifest.rows] == ["a/clip1", "b/clip2", "a/clip3", "b/clip4"]
    assert all(r.audio == r.video for r in manifest.rows)
    data = tmp_path / "data"
    build = [
        "build",
        "--manifest",
        str(out / "manifest.csv"),
        "--out",
        str(data),
        *QUICK_BUILD,
        "--formats",
        "dali,frames",
    ]
    assert preprocess_main(build) == 0
    info = load_dataset_info(data)
    assert (info.splits["train"].samples, info.splits["test"].samples) == (3, 1)
    # the frames format names folders after ids; '/' is not a safe name, so a hash is used
    entries = read_index(data / "frames" / "train.jsonl")
    assert all(e["folder"].startswith("train/~") and e["wav"] for e in entries)


def test_kinetics_list_errors_name_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "root").mkdir()
    bad = tmp_path / "train.txt"
    bad.write_text("a.mp4,x\njust-one-cell\n")
    args = [
        "manifest",
        "kinetics-sounds",
        "--root",
        str(tmp_path / "root"),
        "--train-list",
        str(bad),
        "--test-list",
        str(bad),
        "--out",
        str(tmp_path / "o"),
    ]
    assert preprocess_main(args) == 2
    assert "train.txt:2" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATA / "SHA256SUMS").is_file(), reason="needs ../shared/data")
@pytest.mark.timeout(300)
def test_avmnist_manifest_and_build_counts_match_the_splits(tmp_path: Path) -> None:
    out = tmp_path / "avmnist"
    args = [
        "manifest",
        "avmnist",
        "--source",
        str(SHARED_DATA),
        "--out",
        str(out),
        "--max-per-digit",
        "3",
        "--val-takes",
        "5",
        "--workers",
        "2",
    ]
    assert preprocess_main(args) == 0
    manifest = read_manifest(out / "manifest.csv")
    meta = json.loads((out / "avmnist.json").read_text())
    # 3 recordings per digit and split: FSDD takes 0-4 test, 5-9 val (--val-takes 5), rest train
    assert meta["samples"] == {"train": 30, "val": 30, "test": 30}
    takes = {s: {int(r.id.split("_")[2]) for r in manifest.split(s)} for s in meta["samples"]}
    assert max(takes["test"]) <= 4 and min(takes["val"]) >= 5 and max(takes["val"]) <= 9
    assert min(takes["train"]) >= 10
    audio = {s: {r.audio for r in manifest.split(s)} for s in meta["samples"]}
    assert not (audio["train"] & audio["val"]) and not (audio["train"] & audio["test"])
    images = meta["mnist_images"]
    train_images = {i for r in manifest.split("train") for i in images[r.id]}
    val_images = {i for r in manifest.split("val") for i in images[r.id]}
    assert not train_images & val_images  # both from MNIST train, disjoint
    assert all(len(set(images[r.id])) == 3 for r in manifest.rows)

    data = tmp_path / "data"
    build = [
        "build",
        "--manifest",
        str(out / "manifest.csv"),
        "--out",
        str(data),
        "--formats",
        "ffcv,dali,frames",
        *QUICK_BUILD,
    ]
    assert preprocess_main(build) == 0
    info = load_dataset_info(data)
    assert {s: info.splits[s].samples for s in info.splits} == meta["samples"]
    assert info.classes == tuple(str(d) for d in range(10))
    assert all(v == 3 for s in info.splits.values() for v in s.per_class.values())
    assert verify(data) == []

    # Each clip shows its MNIST digits: 3 frames (1 s at 3 fps), each the padded image.
    labels = read_idx(SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz")
    test_images = read_idx(SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz")
    for entry in read_index(data / "frames" / "test.jsonl"):
        assert entry["frame_count"] == 3
        picks = images[entry["id"]]
        assert all(int(labels[i]) == entry["label"] for i in picks)
        folder = data / "frames" / entry["folder"]
        for k, name in enumerate(sorted(p.name for p in folder.iterdir())):
            grey = decode_jpeg((folder / name).read_bytes()).mean(axis=-1)[2:30, 2:30]
            assert np.abs(grey - test_images[picks[k]]).mean() < 8.0  # H.264 qp 10 + JPEG q95


def test_avmnist_checks_sha256sums(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  a.txt\n{'0' * 64}  gone.txt\n")
    with pytest.raises(ValueError, match=r"2 file\(s\)") as e:
        verify_checksums(tmp_path)
    assert "a.txt: sha256 differs" in str(e.value) and "gone.txt: missing" in str(e.value)
    shutil.rmtree(tmp_path)


@pytest.mark.skipif(not (SHARED_DATA / "SHA256SUMS").is_file(), reason="needs ../shared/data")
def test_pca_energy_removal_removes_that_share_of_the_variance() -> None:
    images = read_idx(SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz")[:5000]
    flat = images.reshape(len(images), -1) / 255.0
    mean, projection = pca_degrade(images, 0.75)
    kept = (flat - mean) @ projection
    share = kept.var(axis=0).sum() / (flat - mean).var(axis=0).sum()
    assert 0.25 <= share < 0.30  # the leading components up to 25% of the variance (and one more)
    _, identity = pca_degrade(images, 0.0)
    assert np.allclose(identity, np.eye(784))
