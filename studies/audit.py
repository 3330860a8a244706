"""Check a run's ``metrics.jsonl`` against its schema and against METHOD.md.

Every step record carries the scores the regulator saw and the decision it took (gap, alpha,
regulated); every epoch record carries the information trace and the window decision used in that
epoch. From the records alone, `audit` recomputes the decisions with `inforeg.functional` and
lists each disagreement, so a run's numbers can be trusted (or not) without re-running it:

    python -m studies.audit OUT/metrics.jsonl   (reads OUT/config.json for the regulator section)
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from inforeg import functional as Fn
from inforeg.config import RegulatorConfig
from inforeg.regulators import regulator_class
from launch.records import (
    EpochRecord,
    RecordError,
    RunRecords,
    StepRecord,
    modality_fields,
    parse_lines,
    schema_problems,
)
from launch.typed import from_mapping


def _close(a: float, b: float, tol: float = 1e-4) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def windows_from_traces(
    epochs: Sequence[EpochRecord], modalities: list[str], cfg: RegulatorConfig
) -> dict[int, dict[str, bool]]:
    """The window decision for each epoch, recomputed from the logged traces of earlier epochs."""
    history = {m: [float(e.trace[m]) for e in epochs] for m in modalities}
    k = cfg.resolved_threshold
    out = {}
    for e in epochs:
        t = e.epoch
        if cfg.resolved_window == "official":
            lead = history[modalities[0]][:t]
            is_open = Fn.official_window_open(lead, t, k, cfg.official_span)
            out[t] = dict.fromkeys(modalities, is_open)
        else:
            out[t] = {m: Fn.window_open(history[m][:t], t, k) for m in modalities}
    return out


def decision_problems(run: RunRecords, modalities: list[str], cfg: RegulatorConfig) -> list[str]:
    windows = windows_from_traces(run.epochs, modalities, cfg)
    problems = []
    for e in run.epochs:
        for m in modalities:
            if e.window_open[m] != windows[e.epoch][m]:
                problems.append(
                    f"epoch {e.epoch}: window_open.{m}={e.window_open[m]} but the traces "
                    f"give {windows[e.epoch][m]}"
                )
    for s in run.steps:
        problems += step_problems(s, modalities, cfg, windows.get(s.epoch))
    return problems


def step_problems(
    s: StepRecord, modalities: list[str], cfg: RegulatorConfig, window: dict[str, bool] | None
) -> list[str]:
    """One step record's gaps against METHOD.md, and its regulator's decision recomputed by the
    method's own `audit_step` from the record's logged inputs. `window`: the epoch's window
    decisions recomputed from the traces (None: the run stopped before that epoch's record)."""
    problems = []
    scores = torch.tensor([float(s.score[m]) for m in modalities], dtype=torch.float64)
    gaps = Fn.score_gaps(scores).tolist()
    for m, gap in zip(modalities, gaps, strict=True):
        if not _close(float(s.gap[m]), gap):
            problems.append(f"step {s.step}: gap.{m}={s.gap[m]} but the scores give {gap}")
    method = regulator_class(cfg.name)
    return problems + method.audit_step(s.to_json(), modalities, cfg, window)


def flat_modalities(flats: Sequence[Mapping[str, Any]]) -> list[str]:
    """The modalities of flat records, in head order, from the first record that names them
    (an epoch record's traces, a step record's scores)."""
    for flat in flats:
        names = modality_fields(flat).get("trace" if flat["kind"] == "epoch" else "score")
        if names:
            return names
    return []


def typed(flats: Sequence[Mapping[str, Any]]) -> RunRecords:
    """Flat records that follow the schema, as the typed records of `launch.records`."""
    steps = [StepRecord.from_json(f) for f in flats if f["kind"] == "step"]
    epochs = [EpochRecord.from_json(f) for f in flats if f["kind"] == "epoch"]
    return RunRecords(tuple(steps), tuple(epochs))


def audit(records: list[dict[str, Any]], cfg: RegulatorConfig) -> list[str]:
    """Every disagreement of the flat records (in file order) with the schema, line by line,
    and with METHOD.md (empty: none)."""
    modalities = flat_modalities(records)
    if not any(r.get("kind") == "epoch" for r in records) or not modalities:
        return ["no epoch record"]
    problems = [p for i, r in enumerate(records, start=1) for p in schema_problems(r, i)]
    if not problems:
        problems += decision_problems(typed(records), modalities, cfg)
    for r in records:
        for k, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                problems.append(f"{r['kind']} {r.get('step', r.get('epoch'))}: {k} is {v}")
    return problems


def audit_run(out_dir: Path) -> list[str]:
    config = json.loads((out_dir / "config.json").read_text())
    cfg = from_mapping(RegulatorConfig, config["regulator"], prefix="regulator")
    try:
        records = parse_lines((out_dir / "metrics.jsonl").read_text(encoding="utf-8"))
    except RecordError as e:
        return [str(e)]
    return audit(records, cfg)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m studies.audit RUN_DIR|RUN_DIR/metrics.jsonl", file=sys.stderr)
        return 2
    run = Path(args[0])
    found = audit_run(run.parent if run.is_file() else run)
    print("\n".join(found) if found else "metrics.jsonl: schema and decisions agree with METHOD.md")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
