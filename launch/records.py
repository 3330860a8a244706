"""The ``metrics.jsonl`` schema, defined once: `StepRecord`, `EpochRecord`, one writer, one reader.

A run's ``metrics.jsonl`` holds one JSON object per line. Step records (every ``run.log_every``
steps) and epoch records (once per epoch) are flat objects whose per-modality values are keyed
``<field>.<modality>`` (``score.audio``), as TensorBoard and ``jq`` like them::

    {"kind": "step", "epoch", "step", "loss", "score.<m>", "gap.<m>", "alpha.<m>",
     "regulated.<m>", [method fields, e.g. OGM's "coeff.<m>", "ratio.<m>"], "lr",
     "samples_per_s", "data_wait_frac"}
    {"kind": "epoch", "epoch", "trace.<m>", "window_open.<m>", "acc", "macro_f1", "acc.<m>",
     "loss", "epoch_time_s", "samples_per_s"}

In Python the records are the typed dataclasses below, per-modality values as mappings in head
order (``record.score["audio"]``); `StepRecord.to_json` / `EpochRecord.to_json` write the flat
form and `parse_run` reads it back. Everything that reads finished runs (``studies/``) goes
through this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEP_DECISIONS = ("score", "gap", "alpha", "regulated")
"""Per-modality step fields every regulator records (its decision at the record's last step)."""
EPOCH_INFORMATION = ("trace", "window_open")
"""Per-modality epoch fields every regulator records (information amount, window decision)."""

PerModality = Mapping[str, float]


class RecordError(ValueError):
    """A metrics.jsonl line that does not follow the schema; the message names line and key."""


def per_modality(flat: Mapping[str, Any], name: str, modalities: Sequence[str]) -> dict[str, Any]:
    """``{m: flat["<name>.<m>"]}`` in head order (values as stored, None where missing)."""
    return {m: flat.get(f"{name}.{m}") for m in modalities}


def modality_fields(flat: Mapping[str, Any]) -> dict[str, list[str]]:
    """``<field>.<modality>`` keys of a flat record grouped: field -> modalities, in key order."""
    out: dict[str, list[str]] = {}
    for key in flat:
        if "." in key:
            name, modality = key.split(".", 1)
            out.setdefault(name, []).append(modality)
    return out


def _flatten(fields: Mapping[str, PerModality]) -> dict[str, Any]:
    """Per-modality fields, modality by modality (``score.a, gap.a, ..., score.v, ...``)."""
    out: dict[str, Any] = {}
    modalities = list(next(iter(fields.values()), {}))
    for m in modalities:
        for name, values in fields.items():
            out[f"{name}.{m}"] = values[m]
    return out


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    """The mean loss over the window of steps since the last record, the regulator's decision at
    its last step (``score``, ``gap``, ``alpha``, ``regulated``; method fields in ``extra``) and
    the window's throughput."""

    epoch: int
    step: int
    loss: float | None
    score: PerModality
    gap: PerModality
    alpha: PerModality
    regulated: PerModality
    """1.0 where the modality's gradients were regulated at that step, else 0.0."""
    extra: Mapping[str, PerModality] = field(default_factory=dict)
    """Method-specific per-modality fields (OGM: ``coeff``, ``ratio``)."""
    lr: float | None = None
    samples_per_s: float | None = None
    """All ranks together."""
    data_wait_frac: float | None = None
    """The host's time waiting for batches over the window's wall time."""
    phases: Mapping[str, float] = field(default_factory=dict)
    """Each phase's share of the window (`launch.profiling.PHASES`; they add up to 1)."""
    tflops: float | None = None
    """Achieved training TFLOP/s per device (the model's counted FLOPs per sample x samples/s)."""
    mfu: float | None = None
    """tflops over the device's dense peak (None where no peak is known)."""

    @property
    def modalities(self) -> list[str]:
        return list(self.score)

    def value(self, name: str, modality: str) -> float | None:
        """A per-modality field by name (decision fields and method fields alike)."""
        fields = {**self.decisions(), **self.extra}
        return fields[name].get(modality) if name in fields else None

    def decisions(self) -> dict[str, PerModality]:
        return {name: getattr(self, name) for name in STEP_DECISIONS}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "step", "epoch": self.epoch, "step": self.step}
        out["loss"] = self.loss
        out.update(_flatten(self.decisions()))
        out.update(_flatten(self.extra))
        out.update(lr=self.lr, samples_per_s=self.samples_per_s)
        out["data_wait_frac"] = self.data_wait_frac
        out.update(phases=dict(self.phases), tflops=self.tflops, mfu=self.mfu)
        return out

    @staticmethod
    def from_json(flat: Mapping[str, Any]) -> StepRecord:
        grouped = modality_fields(flat)
        modalities = grouped.get("score", [])
        fields = {name: per_modality(flat, name, modalities) for name in grouped}
        return StepRecord(
            epoch=int(flat["epoch"]),
            step=int(flat["step"]),
            loss=flat.get("loss"),
            score=fields.pop("score"),
            gap=fields.pop("gap"),
            alpha=fields.pop("alpha"),
            regulated=fields.pop("regulated"),
            extra=fields,
            lr=flat.get("lr"),
            samples_per_s=flat.get("samples_per_s"),
            data_wait_frac=flat.get("data_wait_frac"),
            phases=dict(flat.get("phases") or {}),
            tflops=flat.get("tflops"),
            mfu=flat.get("mfu"),
        )


@dataclass(frozen=True, kw_only=True)
class EpochRecord:
    """One epoch: each modality's information amount and the window decision used during the
    epoch, the evaluation (fused and per-branch accuracy, macro-F1), loss and throughput."""

    epoch: int
    trace: PerModality
    window_open: Mapping[str, bool]
    acc: float | None
    macro_f1: float | None
    branch_acc: PerModality
    """Each modality's own accuracy (its head slice), logged as ``acc.<m>``."""
    loss: float | None = None
    epoch_time_s: float | None = None
    samples_per_s: float | None = None

    @property
    def modalities(self) -> list[str]:
        return list(self.trace)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "epoch", "epoch": self.epoch}
        out.update(_flatten({"trace": self.trace, "window_open": self.window_open}))
        out.update(acc=self.acc, macro_f1=self.macro_f1)
        out.update({f"acc.{m}": v for m, v in self.branch_acc.items()})
        out.update(loss=self.loss, epoch_time_s=self.epoch_time_s)
        out["samples_per_s"] = self.samples_per_s
        return out

    @staticmethod
    def from_json(flat: Mapping[str, Any]) -> EpochRecord:
        modalities = modality_fields(flat).get("trace", [])
        return EpochRecord(
            epoch=int(flat["epoch"]),
            trace=per_modality(flat, "trace", modalities),
            window_open={
                m: bool(v) for m, v in per_modality(flat, "window_open", modalities).items()
            },
            acc=flat.get("acc"),
            macro_f1=flat.get("macro_f1"),
            branch_acc=per_modality(flat, "acc", modalities),
            loss=flat.get("loss"),
            epoch_time_s=flat.get("epoch_time_s"),
            samples_per_s=flat.get("samples_per_s"),
        )


Record = StepRecord | EpochRecord

REQUIRED = {
    "step": ("epoch", "step", "loss", "lr", "samples_per_s", "data_wait_frac"),
    "epoch": ("epoch", "acc", "macro_f1", "loss", "epoch_time_s", "samples_per_s"),
}
REQUIRED_PER_MODALITY = {"step": STEP_DECISIONS, "epoch": (*EPOCH_INFORMATION, "acc")}


@dataclass(frozen=True)
class RunRecords:
    """A run's records in file order, split by kind."""

    steps: tuple[StepRecord, ...]
    epochs: tuple[EpochRecord, ...]

    @property
    def modalities(self) -> list[str]:
        """The run's modalities in head order (from its first record that names them)."""
        if self.epochs:
            return self.epochs[0].modalities
        return self.steps[0].modalities if self.steps else []


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: a value that is not finite is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(record: Record) -> str:
    """One metrics.jsonl line (without its newline)."""
    clean = {}
    for key, value in record.to_json().items():
        if isinstance(value, dict):  # phases
            clean[key] = {k: finite_or_none(v) for k, v in value.items()}
        else:
            clean[key] = finite_or_none(value)
    return json.dumps(clean)


def schema_problems(flat: Mapping[str, Any], line: int) -> list[str]:
    """What a flat record lacks against the schema (empty: nothing)."""
    kind = flat.get("kind")
    if kind not in REQUIRED:
        return [f"line {line}: kind {kind!r} is neither step nor epoch"]
    modalities = modality_fields(flat).get("score" if kind == "step" else "trace", [])
    keys = [*REQUIRED[kind]]
    keys += [f"{name}.{m}" for name in REQUIRED_PER_MODALITY[kind] for m in modalities]
    if not modalities:
        keys.append("score.<modality>" if kind == "step" else "trace.<modality>")
    missing = [k for k in keys if k not in flat]
    return [f"line {line} ({kind}): missing {missing}"] if missing else []


def parse_lines(text: str, source: str = "metrics.jsonl") -> list[dict[str, Any]]:
    """The flat records of metrics.jsonl text, in order; RecordError naming a line that is not
    a JSON object or does not follow the schema."""
    flats = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            flat = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"{source}: line {i} is not JSON ({e})") from e
        if not isinstance(flat, dict):
            raise RecordError(f"{source}: line {i} is not a JSON object")
        problems = schema_problems(flat, i)
        if problems:
            raise RecordError(f"{source}: {problems[0]}")
        flats.append(flat)
    return flats


def parse_run(text: str, source: str = "metrics.jsonl") -> RunRecords:
    """A run's records from metrics.jsonl text."""
    steps, epochs = [], []
    for flat in parse_lines(text, source):
        if flat["kind"] == "step":
            steps.append(StepRecord.from_json(flat))
        else:
            epochs.append(EpochRecord.from_json(flat))
    return RunRecords(tuple(steps), tuple(epochs))


def read_run(path: Path) -> RunRecords:
    """The records of a metrics.jsonl file."""
    return parse_run(path.read_text(encoding="utf-8"), str(path))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The flat records of a metrics.jsonl file, checked against the schema (for ``jq``-style
    access; typed access: `read_run`)."""
    return parse_lines(path.read_text(encoding="utf-8"), str(path))
