"""Synthetic raw data -> all formats -> read back with FFCV's Loader, DALI (CPU) and webdataset.

Reference ("direct decode"): the mp4 decoded with PyAV, the frames at the build's --fps picked by
their timestamps (first frame at or after each k / fps), resized with OpenCV's area filter; the wav
read with the standard library, tiled and cropped. Tolerances:
- frames: the stored frames are JPEG q90 of synthetic frames (10 dB SNR), so each must be within
  PSNR >= 30 dB and mean |diff| <= 6 / 255 of the reference frame, and closer to it than to any
  other frame of the clip (a wrong frame choice fails that);
- audio: int16 from the same 16-bit samples, at most 1 LSB off (FFmpeg scales by 1/32768 on
  decode, the writer by 32767 on encode).
"""

from __future__ import annotations

import itertools
import json
import wave
from collections import Counter
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import webdataset as wds

from preprocess.manifest import Manifest, read_manifest
from preprocess.process import build_vocabulary, decode_jpeg, encode_text
from preprocess.schema import (
    AUDIO_DTYPE,
    TEXT_DTYPE,
    DatasetInfo,
    dali_index,
    load_dataset_info,
)
from preprocess.writers.frames import read_index
from tests.preprocess.conftest import BUILD_ARGS

FPS = float(BUILD_ARGS[BUILD_ARGS.index("--fps") + 1])
FRAME_SIZE = int(BUILD_ARGS[BUILD_ARGS.index("--frame-size") + 1])


def direct_frames(path: Path, fps: float, short_side: int | None) -> list[np.ndarray]:
    """The reference frames: PyAV decode, pick by timestamp, OpenCV resize (None = source size)."""
    with av.open(str(path)) as container:
        decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    t0 = decoded[0][0]
    picked, k = [], 0
    for t, rgb in decoded:
        if t - t0 >= k / fps - 1e-3:
            picked.append(rgb)
            while k / fps - 1e-3 <= t - t0:
                k += 1
    if short_side is None:
        return picked
    out = []
    for rgb in picked:
        h, w = rgb.shape[:2]
        if h <= w:
            size = (round(w * short_side / h), short_side)  # cv2 sizes are (width, height)
        else:
            size = (short_side, round(h * short_side / w))
        out.append(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
    return out


def direct_audio(path: Path, samples: int) -> np.ndarray:
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0
    tiled = np.tile(pcm, -(-samples // pcm.size))[:samples]
    return (np.clip(tiled, -1, 1) * 32767).round().astype(np.int16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def assert_frames_match(stored: list[np.ndarray], reference: list[np.ndarray]) -> None:
    assert len(stored) == len(reference)
    for i, frame in enumerate(stored):
        assert frame.shape == reference[i].shape
        assert psnr(frame, reference[i]) >= 30.0
        assert np.abs(frame.astype(int) - reference[i].astype(int)).mean() <= 6.0
        others = [psnr(frame, r) for j, r in enumerate(reference) if j != i]
        assert all(p < psnr(frame, reference[i]) for p in others)


def expected(manifest: Manifest, info: DatasetInfo, split: str) -> dict[str, tuple[int, int]]:
    """id -> (label, index) for every row of the split (all good in the synthetic set)."""
    rows = manifest.split(split)
    return {r.id: (info.classes.index(r.label), i) for i, r in enumerate(rows)}


def check_sample(
    manifest: Manifest,
    info: DatasetInfo,
    sample_id: str,
    frames: list[np.ndarray],
    audio: np.ndarray,
    text: np.ndarray,
    vocab: tuple[str, ...],
) -> None:
    row = next(r for r in manifest.rows if r.id == sample_id)
    assert row.video is not None and row.audio is not None and row.text is not None
    assert_frames_match(frames, direct_frames(manifest.resolve(row.video), FPS, FRAME_SIZE))
    reference = direct_audio(manifest.resolve(row.audio), info.options.audio_samples)
    assert np.abs(audio.astype(int) - reference.astype(int)).max() <= 1
    ids = {w: i for i, w in enumerate(vocab)}
    assert np.array_equal(text, encode_text(row.text, ids, info.options.text_len))


@pytest.fixture(scope="module")
def loaded(synth_raw: Path, synth_built: Path) -> tuple[Manifest, DatasetInfo, tuple[str, ...]]:
    manifest = read_manifest(synth_raw)
    info = load_dataset_info(synth_built)
    vocab = tuple((synth_built / "vocab.txt").read_text().splitlines())
    return manifest, info, vocab


def test_dataset_json_records_schema_counts_and_options(
    loaded: tuple[Manifest, DatasetInfo, tuple[str, ...]], synth_built: Path
) -> None:
    manifest, info, vocab = loaded
    assert info.manifest_sha256 == manifest.digest()
    assert info.classes == manifest.classes()
    assert info.modalities == ("video", "audio", "text")
    assert [f.name for f in info.fields] == ["video", "audio", "text", "label", "index"]
    assert info.audio_feature_shape == (257, 188)  # 3 s at 22.05 kHz, n_fft 512, hop 353
    assert info.options.fps == FPS and info.options.frame_size == FRAME_SIZE
    for split in ("train", "val", "test"):
        rows = manifest.split(split)
        assert info.splits[split].samples == len(rows)
        assert info.splits[split].per_class == {
            c: sum(r.label == c for r in rows) for c in info.classes
        }
    train_texts = [r.text or "" for r in manifest.split("train")]
    assert vocab == build_vocabulary(train_texts) and info.vocab_size == len(vocab)
    listed = {p.relative_to(synth_built).as_posix() for p in synth_built.rglob("*") if p.is_file()}
    listed -= {"dataset.json", ".lock"}
    assert listed == set(info.files)


@pytest.mark.timeout(300)
def test_ffcv_loader_reads_every_sample(
    loaded: tuple[Manifest, DatasetInfo, tuple[str, ...]], synth_built: Path
) -> None:
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.ndarray import NDArrayDecoder
    from ffcv.loader import Loader, OrderOption

    from preprocess.ffcv_fields import (
        CUSTOM_FIELDS,
        AllFramesDecoder,
        FrameBytesDecoder,
        unpack_frames,
    )

    manifest, info, vocab = loaded
    split = "train"
    ids = [r.id for r in manifest.split(split)]
    pipelines = {
        "video": [AllFramesDecoder()],
        "audio": [NDArrayDecoder()],
        "text": [NDArrayDecoder()],
        "label": [IntDecoder()],
        "index": [IntDecoder()],
    }
    loader = Loader(
        str(synth_built / f"ffcv/{split}.beton"),
        batch_size=5,
        num_workers=1,
        order=OrderOption.SEQUENTIAL,
        drop_last=False,
        custom_fields=CUSTOM_FIELDS,
        pipelines=pipelines,
    )
    seen: list[tuple[str, int, int]] = []
    decoded: dict[str, np.ndarray] = {}
    for video, audio, text, label, index in loader:
        for b in range(len(label)):
            sid = ids[int(index[b, 0])]
            seen.append((sid, int(label[b, 0]), int(index[b, 0])))
            decoded[sid] = video[b]
            frames = [video[b, f] for f in range(video.shape[1])]
            check_sample(manifest, info, sid, frames, audio[b], text[b], vocab)
    want = expected(manifest, info, split)
    assert Counter(s for s, _, _ in seen) == Counter(list(want))  # every sample exactly once
    assert all(want[s] == (lab, idx) for s, lab, idx in seen)

    # The raw decoder gives the JPEG bytes. FFCV's decode (libjpeg-turbo with the fast IDCT and
    # fast chroma upsampling) is near OpenCV's exact one: PSNR >= 40 dB, no pixel 8 levels off.
    raw = Loader(
        str(synth_built / f"ffcv/{split}.beton"),
        batch_size=5,
        num_workers=1,
        order=OrderOption.SEQUENTIAL,
        drop_last=False,
        custom_fields=CUSTOM_FIELDS,
        pipelines={
            "video": [FrameBytesDecoder()],
            "audio": None,
            "text": None,
            "label": None,
            "index": [IntDecoder()],
        },
    )
    for blob, index in raw:
        for b in range(len(index)):
            jpegs = unpack_frames(blob[b])
            sid = ids[int(index[b, 0])]
            assert len(jpegs) == decoded[sid].shape[0]
            for f, jpeg in enumerate(jpegs):
                exact = decode_jpeg(jpeg)
                assert psnr(exact, decoded[sid][f]) >= 40.0
                assert np.abs(exact.astype(int) - decoded[sid][f].astype(int)).max() <= 8


def test_webdataset_reads_every_sample(
    loaded: tuple[Manifest, DatasetInfo, tuple[str, ...]], synth_built: Path
) -> None:
    manifest, info, vocab = loaded
    for split in ("train", "test"):
        shards = [str(synth_built / rel) for rel in info.splits[split].dali]
        assert len(shards) == -(-info.splits[split].samples // info.options.shard_size)
        seen = []
        for sample in wds.WebDataset(shards, shardshuffle=False):
            sid = sample["id"].decode()
            label = int(np.frombuffer(sample["label"], "<i8")[0])
            index = int(np.frombuffer(sample["index"], "<i8")[0])
            assert sample["__key__"] == f"{index:08d}"
            seen.append((sid, label, index))
            offsets = np.frombuffer(sample["offsets"], "<i4")
            frames = [decode_jpeg(sample["frames"][a:b]) for a, b in itertools.pairwise(offsets)]
            audio = np.frombuffer(sample["audio"], AUDIO_DTYPE)
            text = np.frombuffer(sample["text"], TEXT_DTYPE)
            check_sample(manifest, info, sid, frames, audio, text, vocab)
        want = expected(manifest, info, split)
        assert Counter(s for s, _, _ in seen) == Counter(list(want))
        assert all(want[s] == (lab, idx) for s, lab, idx in seen)


@pytest.mark.timeout(300)
def test_dali_webdataset_reader_cpu_picks_and_decodes_frames(
    loaded: tuple[Manifest, DatasetInfo, tuple[str, ...]], synth_built: Path
) -> None:
    """DALI's reader on the CPU, with the frame choice inside the graph: frame j of a sample is
    `frames[offsets[j]:offsets[j + 1]]` (slicing with tensor indices), decoded by
    fn.decoders.image; no Python per sample."""
    from nvidia.dali import fn, pipeline_def, types

    manifest, info, vocab = loaded
    split = "train"
    shards = [str(synth_built / rel) for rel in info.splits[split].dali]
    indexes = [str(synth_built / dali_index(rel)) for rel in info.splits[split].dali]
    count = info.splits[split].frames // info.splits[split].samples  # uniform in this set

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def graph():  # type: ignore[no-untyped-def]
        frames, offsets, audio, text, label, index = fn.readers.webdataset(
            paths=shards,
            index_paths=indexes,
            ext=["frames", "offsets", "audio", "text", "label", "index"],
            dtypes=[types.UINT8, types.INT32, types.INT16, types.INT32, types.INT64, types.INT64],
            random_shuffle=False,
            name="reader",
        )
        decoded = [
            fn.decoders.image(
                frames[offsets[j] : offsets[j + 1]], device="cpu", output_type=types.RGB
            )
            for j in range(count)
        ]
        return (audio, text, label, index, *decoded)

    pipe = graph()
    pipe.build()
    total = pipe.epoch_size("reader")
    assert total == info.splits[split].samples
    ids = [r.id for r in manifest.split(split)]
    seen = []
    while len(seen) < total:
        audio, text, label, index, *frames = pipe.run()
        for b in range(len(label)):
            if len(seen) == total:
                break
            idx = int(np.array(index[b])[0])
            sid = ids[idx]
            seen.append((sid, int(np.array(label[b])[0]), idx))
            check_sample(
                manifest,
                info,
                sid,
                [np.array(f[b]) for f in frames],
                np.array(audio[b]),
                np.array(text[b]),
                vocab,
            )
    want = expected(manifest, info, split)
    assert Counter(s for s, _, _ in seen) == Counter(list(want))
    assert all(want[s] == (lab, idx) for s, lab, idx in seen)


def test_dali_index_files_equal_dalis_own_tool(synth_built: Path, tmp_path: Path) -> None:
    from wds2idx import IndexCreator

    info = load_dataset_info(synth_built)
    for split in info.splits.values():
        for rel in split.dali:
            ours = (synth_built / dali_index(rel)).read_text()
            with IndexCreator(str(synth_built / rel), str(tmp_path / "x.idx"), verbose=False) as c:
                c.create_index()
            assert ours == (tmp_path / "x.idx").read_text()


def test_frames_format_is_the_peers_layout_at_source_resolution(
    loaded: tuple[Manifest, DatasetInfo, tuple[str, ...]], synth_built: Path
) -> None:
    manifest, info, _ = loaded
    for split in ("train", "val", "test"):
        entries = read_index(synth_built / f"frames/{split}.jsonl")
        rows = manifest.split(split)
        assert [e["id"] for e in entries] == [r.id for r in rows]
        assert [e["index"] for e in entries] == list(range(len(rows)))
        for entry, row in zip(entries, rows, strict=True):
            assert row.video is not None and row.audio is not None
            assert entry["label"] == info.classes.index(row.label) and entry["class"] == row.label
            folder = synth_built / "frames" / entry["folder"]
            names = sorted(p.name for p in folder.iterdir())
            assert names == [f"{i:05d}.jpg" for i in range(1, entry["frame_count"] + 1)]
            stored = [decode_jpeg((folder / n).read_bytes()) for n in names]
            # q95 at the source size (64 x 48): tighter than the resized q90 frames
            reference = direct_frames(manifest.resolve(row.video), FPS, None)
            assert len(stored) == len(reference)
            for a, b in zip(stored, reference, strict=True):
                assert a.shape == b.shape and psnr(a, b) >= 32.0
            with (
                wave.open(str(synth_built / "frames" / entry["wav"])) as w,
                wave.open(str(manifest.resolve(row.audio))) as src,
            ):
                assert w.getframerate() == src.getframerate()
                ours = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(int)
                theirs = np.frombuffer(src.readframes(src.getnframes()), "<i2").astype(int)
                assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1
    assert json.loads((synth_built / "dataset.json").read_text())["errors"] == 0
