"""What a build writes, decided before anything is written: identities, parts, samples, outputs.

Everything here is a pure function of the manifest, the options and the per-sample outcomes (which
rows failed, how large the good ones are), never of how the work was spread: a one-machine build
and the merge of N parts plan the same outputs. In particular:

- `index` is the position of a good sample among the good samples of its split, in manifest order;
- the vocabulary is built from the text of every good train sample, in manifest order;
- a DALI shard holds `shard_size` consecutive samples of a split (by `index`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.manifest import SPLITS, Manifest, ManifestRow
from preprocess.process import build_vocabulary, encode_text
from preprocess.schema import (
    FORMAT_VERSION,
    STAGING_DIR,
    TEXT,
    BuildOptions,
    dali_index,
    dali_shard,
    ffcv_file,
)
from preprocess.stage import ProcessJob, Summary


def json_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def config_digest(manifest_sha256: str, options: BuildOptions, modalities: Sequence[str]) -> str:
    """Identity of a build: same manifest bytes + same options = same outputs."""
    return json_digest(
        {
            "format_version": FORMAT_VERSION,
            "manifest": manifest_sha256,
            "options": options.to_json(),
            "modalities": list(modalities),
        }
    )


def staging_key(manifest_sha256: str, options: BuildOptions, modalities: Sequence[str]) -> str:
    """Identity of the records: only what shapes one sample's processing."""
    return json_digest(
        {
            "manifest": manifest_sha256,
            "record": options.record_key(),
            "modalities": list(modalities),
        }
    )[:16]


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    """One build's identity and places: the manifest, the options and what follows from them."""

    out: Path
    manifest: Manifest
    manifest_sha: str
    options: BuildOptions
    modalities: tuple[str, ...]
    classes: tuple[str, ...]
    config: str
    """`config_digest`: equal plans write equal bytes."""
    stage: Path
    """`DIR/.staging/<staging_key>`: the records (and output markers) of this plan."""

    @staticmethod
    def create(manifest: Manifest, out: Path, options: BuildOptions) -> BuildPlan:
        modalities = manifest.modalities()
        sha = manifest.digest()
        return BuildPlan(
            out=out,
            manifest=manifest,
            manifest_sha=sha,
            options=options,
            modalities=modalities,
            classes=tuple(sorted(options.classes)) if options.classes else manifest.classes(),
            config=config_digest(sha, options, modalities),
            stage=out / STAGING_DIR / staging_key(sha, options, modalities),
        )

    @property
    def records(self) -> Path:
        return self.stage / "records"

    def job(self) -> ProcessJob:
        return ProcessJob(
            root=self.manifest.root,
            options=self.options,
            modalities=self.modalities,
            classes=self.classes,
            records=self.records,
            frames_root=self.out / "frames" if "frames" in self.options.formats else None,
        )


@dataclass(frozen=True, kw_only=True)
class Sharding:
    """Part `shard_index` of `num_shards`: the manifest rows at positions p with
    p % num_shards == shard_index (deterministic, and balanced over the splits)."""

    num_shards: int = 1
    shard_index: int = 0

    def __post_init__(self) -> None:
        if self.num_shards < 1:
            raise ValueError(f"--num-shards must be >= 1, got {self.num_shards}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(
                f"--shard-index must be in [0, {self.num_shards - 1}] for --num-shards "
                f"{self.num_shards}, got {self.shard_index}"
            )

    def rows(self, rows: Sequence[ManifestRow]) -> list[ManifestRow]:
        return list(rows[self.shard_index :: self.num_shards])

    @property
    def name(self) -> str:
        """The part's file name stem: `part-00002-of-00008`."""
        return f"part-{self.shard_index:05d}-of-{self.num_shards:05d}"


@dataclass(frozen=True, kw_only=True)
class Item:
    """One sample of an output: its identity and what the assembly adds to its record."""

    id: str
    label: int
    index: int
    text: np.ndarray | None


@dataclass(frozen=True, kw_only=True)
class OutputTask:
    """One output to write: an FFCV file, or a DALI shard with its index."""

    kind: str  # "ffcv" | "dali"
    rels: tuple[str, ...]  # the files it writes (relative to DIR)
    items: tuple[Item, ...]
    plan: str
    out: Path
    records: Path
    markers: Path
    modalities: tuple[str, ...]
    options: BuildOptions
    page_size: int = 0


def split_items(
    manifest: Manifest,
    summaries: Mapping[str, Summary],
    options: BuildOptions,
    modalities: tuple[str, ...],
    classes: tuple[str, ...],
) -> tuple[tuple[str, ...] | None, dict[str, list[Item]]]:
    """(vocabulary or None without text, the good samples of each split with index and tokens)."""
    good = [r for r in manifest.rows if not summaries[r.id].errors]
    vocab = None
    ids: dict[str, int] = {}
    if TEXT in modalities:
        vocab = build_vocabulary(
            (r.text or "" for r in good if r.split == "train"), options.min_word_count
        )
        ids = {w: i for i, w in enumerate(vocab)}
    label_of = {c: i for i, c in enumerate(classes)}
    items_by_split: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for row in good:
        part = items_by_split[row.split]
        text = encode_text(row.text or "", ids, options.text_len) if TEXT in modalities else None
        part.append(Item(id=row.id, label=label_of[row.label], index=len(part), text=text))
    return vocab, items_by_split


def page_size_for(largest_sample: int) -> int:
    """FFCV page size: a power of two >= 2 MiB (FFCV's minimum) holding 8 of the largest samples
    (a sample never straddles pages, so the waste per page is below one sample)."""
    size = 1 << 21
    while size < 8 * largest_sample:
        size *= 2
    return size


def _plan_digest(config: str, rel: str, part: Sequence[Item]) -> str:
    return json_digest(
        {
            "config": config,
            "output": rel,
            "items": [
                [i.id, i.label, i.index, None if i.text is None else i.text.tolist()] for i in part
            ],
        }
    )


def plan_outputs(
    out: Path,
    stage: Path,
    config: str,
    options: BuildOptions,
    modalities: tuple[str, ...],
    items_by_split: Mapping[str, list[Item]],
    summaries: Mapping[str, Summary],
) -> list[OutputTask]:
    """Every FFCV file and DALI shard to write, largest first."""
    tasks = []
    common: dict[str, Any] = {
        "out": out,
        "records": stage / "records",
        "markers": stage / "outputs",
        "modalities": modalities,
        "options": options,
    }
    for split, items in items_by_split.items():
        if not items:
            continue
        if "ffcv" in options.formats:
            rel = ffcv_file(split)
            largest = max(summaries[i.id].nbytes + 16 * summaries[i.id].frames for i in items)
            tasks.append(
                OutputTask(
                    kind="ffcv",
                    rels=(rel,),
                    items=tuple(items),
                    plan=_plan_digest(config, rel, items),
                    page_size=page_size_for(largest + 4 * options.text_len + 4096),
                    **common,
                )
            )
        if "dali" in options.formats:
            for shard, start in enumerate(range(0, len(items), options.shard_size)):
                part = items[start : start + options.shard_size]
                rel = dali_shard(split, shard)
                tasks.append(
                    OutputTask(
                        kind="dali",
                        rels=(rel, dali_index(rel)),
                        items=tuple(part),
                        plan=_plan_digest(config, rel, part),
                        **common,
                    )
                )
    # Largest first, so one big FFCV file does not start last and leave the other workers idle.
    return sorted(tasks, key=lambda t: -len(t.items) * (4 if t.kind == "ffcv" else 1))
