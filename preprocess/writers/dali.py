"""Webdataset tar shards for DALI's `fn.readers.webdataset` (and the `webdataset` package).

A shard is a plain POSIX (ustar) tar of members `<key>.<ext>`, the members of one sample adjacent
(key = the sample's index, 8 digits, so no dot ever splits a key). Beside each `<name>.tar` lies
`<name>.idx`, DALI's index (what its `wds2idx` tool writes, version v1.2):

    v1.2 <samples>
    <ext> <data offset> <size> <member name> [<ext> <data offset> <size> <member name> ...]

one line per sample, offsets in bytes from the start of the tar to the member's data. Members are
written with fixed metadata (mtime 0, uid/gid 0, mode 0444), so equal samples give equal bytes.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from preprocess.schema import (
    AUDIO,
    AUDIO_DTYPE,
    DALI_INDEX_VERSION,
    SCALAR_DTYPE,
    TEXT,
    TEXT_DTYPE,
    VIDEO,
    dali_key,
)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def sample_members(
    modalities: Sequence[str],
    sample_id: str,
    jpegs: Sequence[bytes],
    audio: np.ndarray | None,
    text: np.ndarray | None,
    label: int,
    index: int,
) -> tuple[str, list[tuple[str, bytes]]]:
    """One sample's (key, members) in `DALI_MEMBERS` order, for `write_shard`."""
    members = [("id", sample_id.encode("utf-8"))]
    if VIDEO in modalities:
        sizes = np.array([len(j) for j in jpegs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype("<i4")
        members += [("frames", b"".join(bytes(j) for j in jpegs))]
        members += [("offsets", offsets.tobytes())]
    if AUDIO in modalities:
        assert audio is not None
        members.append(("audio", audio.astype(AUDIO_DTYPE).tobytes()))
    if TEXT in modalities:
        assert text is not None
        members.append(("text", text.astype(TEXT_DTYPE).tobytes()))
    members.append(("label", np.array([label], SCALAR_DTYPE).tobytes()))
    members.append(("index", np.array([index], SCALAR_DTYPE).tobytes()))
    return dali_key(index), members


def write_shard(
    tar_path: Path, idx_path: Path, samples: Iterable[tuple[str, list[tuple[str, bytes]]]]
) -> int:
    """Write one shard and its index (both directly; the caller renames them into place).

    `samples` yields (key, [(ext, data), ...]). Returns the number of samples written.
    """
    lines: list[str] = []
    with tar_path.open("wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                if "." in key or "/" in key:
                    raise ValueError(f"shard key {key!r} must not contain '.' or '/'")
                entries = []
                for ext, data in members:
                    info = _member(f"{key}.{ext}", len(data))
                    header = info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
                    offset = tar.offset + len(header)
                    tar.addfile(info, io.BytesIO(data))
                    entries.append(f"{ext} {offset} {len(data)} {info.name}")
                lines.append(" ".join(entries))
        raw.flush()
        os.fsync(raw.fileno())
    if not lines:
        raise ValueError(f"{tar_path}: a shard needs at least one sample")
    with idx_path.open("w", encoding="ascii") as f:
        f.write(f"{DALI_INDEX_VERSION} {len(lines)}\n")
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return len(lines)


def read_index(idx_path: Path) -> list[dict[str, tuple[int, int]]]:
    """Parse a DALI index: per sample, ext -> (data offset, size)."""
    lines = idx_path.read_text(encoding="ascii").splitlines()
    if not lines:
        raise ValueError(f"{idx_path}: empty index file")
    version, _, count = lines[0].partition(" ")
    if version != DALI_INDEX_VERSION or not count.isdigit() or int(count) != len(lines) - 1:
        raise ValueError(f"{idx_path}: bad header {lines[0]!r} for {len(lines) - 1} sample lines")
    samples = []
    for line in lines[1:]:
        parts = line.split(" ")
        if len(parts) % 4:
            raise ValueError(f"{idx_path}: malformed line {line[:80]!r}")
        samples.append(
            {parts[i]: (int(parts[i + 1]), int(parts[i + 2])) for i in range(0, len(parts), 4)}
        )
    return samples
