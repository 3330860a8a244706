"""Write a `.beton` file in one sequential pass, with FFCV's own file format and `Field.encode`.

FFCV's `DatasetWriter` forks workers and waits for a shared counter: a worker that dies (disk full,
a field that raises) leaves it polling forever, and its page order depends on worker timing. The
samples here are already processed (the work is a copy), so this writer lays the file out itself,
exactly as FFCV's reader expects, and deterministically:

    HeaderType | FieldDescType x fields | metadata x samples | pad to a page | pages | alloc table

Each sample's allocations lie in one page (pages are `page_size` bytes, a power of two, aligned in
the file, as FFCV's page-based memory manager reads them); a sample that does not fit in the rest
of the current page starts a new one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from ffcv.fields.base import Field
from ffcv.types import (
    ALLOC_TABLE_TYPE,
    CURRENT_VERSION,
    TYPE_ID_HANDLER,
    FieldDescType,
    HeaderType,
    get_metadata_type,
)
from ffcv.utils import align_to_page

from preprocess.schema import AUDIO, TEXT, VIDEO

MIN_PAGE_SIZE = 1 << 21  # FFCV's minimum (2 MiB)


class _SampleDoesNotFit(Exception):
    pass


class _Pages:
    """Sequential page allocator: `malloc(n) -> (file pointer, writable buffer)`."""

    def __init__(self, out: BinaryIO, data_start: int, page_size: int):
        self.out, self.data_start, self.page_size = out, data_start, page_size
        self.page = np.zeros(page_size, dtype="<u1")
        self.page_index = -1
        self.used = page_size  # no page open yet
        self.allocations: list[tuple[int, int, int]] = []  # (sample, ptr, size)
        self.sample = -1

    def malloc(self, size: int) -> tuple[int, np.ndarray]:
        if size > self.page_size:
            raise ValueError(f"a field of {size} bytes exceeds the page size {self.page_size}")
        if self.used + size > self.page_size:
            raise _SampleDoesNotFit
        ptr = self.data_start + self.page_index * self.page_size + self.used
        buffer = self.page[self.used : self.used + size]
        self.used += size
        self.allocations.append((self.sample, ptr, size))
        return ptr, buffer

    def new_page(self) -> None:
        self.flush()
        self.page_index += 1
        self.page.fill(0)
        self.used = 0

    def flush(self) -> None:
        if self.page_index >= 0:
            self.out.seek(self.data_start + self.page_index * self.page_size)
            self.out.write(self.page.tobytes())


def sample_values(
    modalities: Sequence[str],
    jpegs: Sequence[bytes],
    frame_shape: tuple[int, int],
    audio: np.ndarray | None,
    text: np.ndarray | None,
    label: int,
    index: int,
) -> tuple[Any, ...]:
    """One sample's field values in `preprocess.ffcv_fields.dataset_fields` order."""
    values: list[Any] = []
    if VIDEO in modalities:
        values.append((jpegs, frame_shape))
    if AUDIO in modalities:
        values.append(audio)
    if TEXT in modalities:
        values.append(text)
    values += [label, index]
    return tuple(values)


def write_beton(
    path: Path,
    fields: Mapping[str, Field],
    samples: Iterable[tuple[Any, ...]],
    num_samples: int,
    page_size: int,
) -> None:
    """Write `num_samples` samples (tuples of field values in `fields` order) to `path` directly.

    The caller makes it atomic (writes a temporary name and renames it).
    """
    if num_samples < 1:
        raise ValueError(f"{path}: an FFCV file needs at least one sample")
    if page_size < MIN_PAGE_SIZE or page_size & (page_size - 1):
        raise ValueError(f"page_size must be a power of two >= {MIN_PAGE_SIZE}, got {page_size}")
    field_list = list(fields.values())
    metadata_type = get_metadata_type(field_list)
    columns = metadata_type.names
    type_ids = {handler: type_id for type_id, handler in TYPE_ID_HANDLER.items()}

    header = np.zeros(1, dtype=HeaderType)
    header["version"] = CURRENT_VERSION
    header["num_fields"] = len(fields)
    header["page_size"] = page_size
    header["num_samples"] = num_samples
    descriptors = np.zeros(len(fields), dtype=FieldDescType)
    for i, (name, field) in enumerate(fields.items()):
        encoded = name.encode("ascii")
        if len(encoded) > descriptors[0]["name"].shape[0]:
            raise ValueError(f"FFCV field name {name!r} is longer than 16 bytes")
        descriptors[i]["type_id"] = type_ids.get(type(field), 255)  # 255 = custom field
        descriptors[i]["name"][: len(encoded)] = np.frombuffer(encoded, dtype="<u1")
        descriptors[i]["arguments"][:] = field.to_binary()[0]
    metadata = np.zeros(num_samples, dtype=metadata_type)
    metadata_start = HeaderType.itemsize + descriptors.nbytes
    data_start = align_to_page(metadata_start + metadata.nbytes, page_size)

    with path.open("wb") as out:
        pages = _Pages(out, data_start, page_size)
        written = 0
        for index, values in enumerate(samples):
            if index >= num_samples:
                raise ValueError(f"{path}: more samples than the {num_samples} announced")
            pages.sample = index
            for attempt in range(2):
                try:
                    for column, field, value in zip(columns, field_list, values, strict=True):
                        field.encode(metadata[column][index : index + 1], value, pages.malloc)
                    break
                except _SampleDoesNotFit:
                    if attempt == 1:
                        raise ValueError(
                            f"{path}: sample {index} does not fit in a {page_size}-byte page"
                        ) from None
                    while pages.allocations and pages.allocations[-1][0] == index:
                        pages.allocations.pop()  # this sample restarts on a fresh page
                    pages.new_page()
            written += 1
        if written != num_samples:
            raise ValueError(f"{path}: {written} samples written, {num_samples} announced")
        pages.flush()
        out.seek(0, os.SEEK_END)
        header["alloc_table_ptr"] = out.tell()
        out.write(np.array(pages.allocations, dtype=ALLOC_TABLE_TYPE).tobytes())
        out.seek(0)
        out.write(header.tobytes())
        out.write(descriptors.tobytes())
        out.write(metadata.tobytes())
        out.flush()
        os.fsync(out.fileno())
