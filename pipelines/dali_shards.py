"""The DALI loader's view of a split's tar shards: index files, per-sample frame metadata, checks.

`read_shards` parses the index files once per loader (where each member of each sample lies, and
the order the shards store the samples in) and reads each sample's frame offsets (checked against
its frame bytes: the batch source slices JPEGs by them) and frame size (from its first JPEG's
header), which the contract's crop boxes need. `verify_files` checks the shards against
dataset.json's sha256; `check_sample` is the slow host twin of the graph, run only after DALI
failed on a batch, to name the damaged sample.
"""

from __future__ import annotations

import io
import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.contract import LoaderError
from preprocess.schema import (
    AUDIO,
    INDEX,
    LABEL,
    TEXT,
    VIDEO,
    DatasetInfo,
    dali_index,
    dali_key,
    file_digest,
)

FRAMES, OFFSETS = "frames", "offsets"
"""The video members of a sample: its JPEGs concatenated, and int32 (frame_count + 1,) offsets."""


class DaliDataError(LoaderError):
    """A shard's bytes are not what `inforeg-preprocess build` wrote; names the shard and sample."""


@dataclass(frozen=True, kw_only=True)
class ShardSet:
    """A split's tar shards and index files, and per sample (row = the sample's index) where it
    lies and what its stored frames are. Built once per loader from the index files."""

    tars: tuple[Path, ...]
    indexes: tuple[Path, ...]
    shard: np.ndarray
    """int64 (N,): position in `tars` of the shard holding each sample."""
    members: dict[str, np.ndarray]
    """extension -> int64 (N, 2): (byte offset in its tar, size) of each sample's member."""
    frame_counts: np.ndarray
    """int64 (N,): frames stored per sample (0 without video)."""
    heights: np.ndarray
    widths: np.ndarray
    """int64 (N,): the stored frames' size (every frame of a clip has its first frame's size)."""
    sequence: np.ndarray
    """int64 (N,): the samples in the order DALI's reader walks them (tars, then index lines)."""
    frame_offsets: np.ndarray
    """int64 (sum of frame_counts + N,): every sample's `offsets` member, concatenated; sample i's
    are `frame_offsets[offsets_at[i] : offsets_at[i] + frame_counts[i] + 1]`."""
    offsets_at: np.ndarray
    """int64 (N,): where each sample's offsets start in `frame_offsets`."""

    @property
    def samples(self) -> int:
        return int(self.shard.size)


def parse_index(path: Path) -> list[dict[str, tuple[int, int, str]]]:
    """A DALI v1.2 index file: per sample, extension -> (data offset, size, member name)."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the DALI index file: {e}") from e
    head = lines[0].split(" ") if lines else []
    if len(head) != 2 or head[0] != "v1.2" or not head[1].isdigit():
        raise ValueError(f"{path}: not a DALI v1.2 index (header {lines[:1]!r})")
    if int(head[1]) != len(lines) - 1:
        raise ValueError(f"{path}: header says {head[1]} samples, the file lists {len(lines) - 1}")
    samples = []
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split(" ")
        if len(parts) % 4 or not all(p.isdigit() for p in parts[1::4] + parts[2::4]):
            raise ValueError(f"{path}: line {number} is not `ext offset size name` groups")
        samples.append(
            {
                parts[i]: (int(parts[i + 1]), int(parts[i + 2]), parts[i + 3])
                for i in range(0, len(parts), 4)
            }
        )
    return samples


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    """(height, width) from a JPEG's frame header; ValueError when there is none."""
    if bytes(data[:2]) != b"\xff\xd8":
        raise ValueError("not a JPEG (no start-of-image marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"not a JPEG (no marker at byte {i})")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _SOF:
            if i + 9 > len(data):
                break
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if height < 1 or width < 1:
                raise ValueError(f"JPEG frame header says {height}x{width}")
            return height, width
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    raise ValueError("not a JPEG (no frame header)")


def read_shards(root: Path, info: DatasetInfo, split: str) -> ShardSet:
    """The split's shards from `dataset.json` and their index files; each sample's frame count and
    size from its `offsets` member and its first JPEG's header (one mmap read per sample)."""
    split_info = info.splits.get(split)
    if split_info is None:
        raise ValueError(f"{root}: no split {split!r} (dataset.json has {sorted(info.splits)})")
    if not split_info.dali:
        raise ValueError(
            f"{root}: split {split!r} has no DALI shards (build with --formats including dali)"
        )
    n, exts = split_info.samples, info.dali_members
    tars = tuple(root / rel for rel in split_info.dali)
    indexes = tuple(root / dali_index(rel) for rel in split_info.dali)
    shard = np.full(n, -1, dtype=np.int64)
    sequence: list[int] = []
    members = {ext: np.zeros((n, 2), dtype=np.int64) for ext in exts}
    for s, (tar, idx) in enumerate(zip(tars, indexes, strict=True)):
        if not tar.is_file():
            raise ValueError(f"{tar}: DALI shard listed in dataset.json is missing")
        size = tar.stat().st_size
        for entry in parse_index(idx):
            names = {name.rsplit(".", 1)[0] for _, _, name in entry.values()}
            key = names.pop() if len(names) == 1 else ""
            if not key.isdigit() or int(key) >= n or dali_key(int(key)) != key:
                raise ValueError(f"{idx}: sample key {sorted(names | {key})} is not an index < {n}")
            index = int(key)
            if shard[index] >= 0:
                raise ValueError(f"{idx}: sample {key} is also in {tars[shard[index]]}")
            if set(entry) != set(exts):
                raise ValueError(f"{idx}: sample {key} has members {sorted(entry)}, not {exts}")
            for ext, (offset, length, _) in entry.items():
                if offset + length > size:
                    raise ValueError(f"{idx}: sample {key}.{ext} ends past the end of {tar}")
                members[ext][index] = (offset, length)
            shard[index] = s
            sequence.append(index)
    if (shard < 0).any():
        raise ValueError(
            f"{root}: split {split!r}: sample {int(np.argmin(shard))} is in no shard "
            f"(dataset.json says {n} samples)"
        )
    counts, heights, widths = (np.zeros(n, dtype=np.int64) for _ in range(3))
    frame_offsets, offsets_at = np.zeros(0, dtype=np.int64), np.zeros(n, dtype=np.int64)
    if VIDEO in info.modalities:
        counts = members[OFFSETS][:, 1] // 4 - 1
        if counts.min() < 1:
            bad = int(np.argmin(counts))
            raise DaliDataError(f"{tars[shard[bad]]}: sample {dali_key(bad)} stores no frames")
        offsets_at[1:] = np.cumsum(counts + 1)[:-1]
        frame_offsets = np.zeros(int((counts + 1).sum()), dtype=np.int64)
        for s, tar in enumerate(tars):
            frame_header(tar, np.flatnonzero(shard == s), members, heights, widths)
            read_offsets(tar, np.flatnonzero(shard == s), members, frame_offsets, offsets_at)
    return ShardSet(
        tars=tars,
        indexes=indexes,
        shard=shard,
        members=members,
        frame_counts=counts,
        heights=heights,
        widths=widths,
        sequence=np.asarray(sequence, dtype=np.int64),
        frame_offsets=frame_offsets,
        offsets_at=offsets_at,
    )


def frame_header(
    tar: Path,
    samples: np.ndarray,
    members: dict[str, np.ndarray],
    heights: np.ndarray,
    widths: np.ndarray,
) -> None:
    """Fill `heights`, `widths` of `samples` (all in `tar`) from each one's first JPEG header."""
    with tar.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        for sample in samples.tolist():
            at, nbytes = members[FRAMES][sample].tolist()
            head = memoryview(view)[at : at + min(nbytes, 1 << 16)]
            try:
                heights[sample], widths[sample] = jpeg_size(head)
            except ValueError as e:
                raise DaliDataError(f"{tar}: sample {dali_key(sample)}: first frame: {e}") from e
            finally:
                head.release()


def read_offsets(
    tar: Path,
    samples: np.ndarray,
    members: dict[str, np.ndarray],
    frame_offsets: np.ndarray,
    offsets_at: np.ndarray,
) -> None:
    """Copy each sample's `offsets` member into `frame_offsets`; DaliDataError naming a sample
    whose offsets do not cut its frame bytes (the loader slices JPEGs by them on the host)."""
    with tar.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        for sample in samples.tolist():
            at, nbytes = members[OFFSETS][sample].tolist()
            offsets = np.frombuffer(view, dtype="<i4", count=nbytes // 4, offset=at).copy()
            size = int(members[FRAMES][sample][1])
            if offsets[0] != 0 or offsets[-1] != size or (np.diff(offsets) <= 0).any():
                raise DaliDataError(
                    f"{tar}: sample {dali_key(sample)}: its `offsets` {offsets.tolist()} do not "
                    f"cut its {size} frame bytes"
                )
            frame_offsets[offsets_at[sample] : offsets_at[sample] + offsets.size] = offsets


def verify_files(root: Path, info: DatasetInfo, paths: Sequence[Path]) -> None:
    """Each file's sha256 against dataset.json's; DaliDataError naming the first that differs."""
    for path in paths:
        rel = path.relative_to(root).as_posix()
        expected = info.files.get(rel)
        if expected is None:
            raise DaliDataError(f"{path}: not listed in dataset.json's files (cannot be verified)")
        actual = file_digest(path).sha256
        if actual != expected.sha256:
            raise DaliDataError(
                f"{path}: sha256 {actual} differs from dataset.json's "
                f"{expected.sha256}: the shard was damaged or changed after the build"
            )


def check_sample(shards: ShardSet, info: DatasetInfo, index: int) -> str | None:
    """What is wrong with one stored sample, read back on the host (None: nothing found).

    The slow twin of the graph, run only to name the culprit after DALI failed on a batch.
    """
    from PIL import Image

    options, tar = info.options, shards.tars[shards.shard[index]]
    with tar.open("rb") as f:

        def member(ext: str) -> bytes:
            offset, length = shards.members[ext][index]
            f.seek(int(offset))
            return f.read(int(length))

        if int(np.frombuffer(member(INDEX), dtype="<i8")[0]) != index:
            return f"its `index` member is not {index}"
        if not 0 <= int(np.frombuffer(member(LABEL), dtype="<i8")[0]) < len(info.classes):
            return "its `label` member is not a class position"
        if AUDIO in info.modalities and len(member(AUDIO)) != 2 * options.audio_samples:
            return f"its `audio` member is not {options.audio_samples} int16 samples"
        if TEXT in info.modalities and len(member(TEXT)) != 4 * options.text_len:
            return f"its `text` member is not {options.text_len} int32 tokens"
        if VIDEO not in info.modalities:
            return None
        frames, offsets = member(FRAMES), np.frombuffer(member(OFFSETS), dtype="<i4")
        if offsets[0] != 0 or offsets[-1] != len(frames) or (np.diff(offsets) <= 0).any():
            return f"its `offsets` {offsets.tolist()} do not cut its {len(frames)} frame bytes"
        expected = (int(shards.widths[index]), int(shards.heights[index]))
        for j in range(offsets.size - 1):
            try:
                with Image.open(io.BytesIO(frames[offsets[j] : offsets[j + 1]])) as img:
                    img.load()
                    size = img.size
            except (OSError, ValueError, SyntaxError) as e:
                return f"frame {j} of {offsets.size - 1} is not a decodable JPEG ({e})"
            if size != expected:
                return f"frame {j} is {size[0]}x{size[1]}, frame 0 is {expected[0]}x{expected[1]}"
    return None
