"""Write a study's result documents from its finished runs: ``docs/RESULTS.md``, the figures,
``summary.json`` and one small JSON file per run (its final numbers and epoch records).

The numbers come from `studies.results`, the figures from `studies.figures`, the markdown from
`studies.markdown`; this module reads the run folders and the study's bookkeeping
(``OUT/study.json``, the dataset's ``dataset.json``) and writes the files.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studies.avmnist import Study
from studies.figures import write_figures
from studies.markdown import render_markdown
from studies.results import (
    Claim,
    Run,
    Stat,
    aggregate,
    by_method,
    final_metrics,
    load_run,
    study_claims,
    to_json,
    weak_modality,
)

if TYPE_CHECKING:  # studies.runner imports this module to report; annotations only
    from studies.runner import RunSpec


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """A study's runs and everything computed from them."""

    runs: list[Run]
    """In the order of the specs."""
    groups: dict[str, list[Run]]
    """method -> its runs, by seed."""
    agg: dict[str, dict[str, Stat]]
    modalities: list[str]
    weak: str
    claims: list[Claim]


def analyse(study: Study, specs: Sequence[RunSpec]) -> Analysis:
    """Read every run's metrics.jsonl and aggregate them; the weak modality is the lower branch
    accuracy of the first trained (not reference) method."""
    runs = [load_run(s.out_dir / "metrics.jsonl", s.method, s.seed) for s in specs]
    groups = by_method(sorted(runs, key=lambda r: (r.method, r.seed)))
    agg = aggregate(runs)
    first = next(m.key for m in study.methods if m.key in groups and m.group != "reference")
    modalities = groups[first][0].modalities
    weak = weak_modality(agg[first], modalities)
    return Analysis(
        runs=runs,
        groups=groups,
        agg=agg,
        modalities=modalities,
        weak=weak,
        claims=study_claims(agg, weak),
    )


def write_study_report(
    study: Study,
    specs: Sequence[RunSpec],
    out: Path,
    report: Path,
    results_dir: Path,
    root: Path,
) -> list[Path]:
    """Aggregate the finished runs, write summary.json, per-run JSON, the PNGs and `report`."""
    a = analyse(study, specs)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "runs").mkdir(exist_ok=True)
    figures = write_figures(study, a.groups, results_dir)
    written: list[Path] = [*figures.values()]

    sessions = read_sessions(out)
    written += write_run_files(a.runs, specs, sessions, results_dir, root)
    epochs = json.loads((specs[0].out_dir / "config.json").read_text())["run"]["epochs"]
    setup = setup_text(study, out, epochs, sessions, last_seed=max(r.seed for r in a.runs))
    summary_path = results_dir / "summary.json"
    meta = study_meta(study, specs, a, sessions, epochs, out, results_dir, root)
    summary_path.write_text(
        json.dumps(to_json(study.methods, a.agg, a.claims, a.runs, meta), indent=1)
    )
    written.append(summary_path)

    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        render_markdown(
            study=study,
            setup=setup,
            agg=a.agg,
            claims=a.claims,
            weak=a.weak,
            modalities=a.modalities,
            groups=a.groups,
            figures={k: os.path.relpath(p, report.parent) for k, p in figures.items()},
            meta=meta,
        )
    )
    written.append(report)
    return written


def read_sessions(out: Path) -> list[dict[str, Any]]:
    """The runner's sessions that trained something (``OUT/study.json``; none if absent)."""
    study_json = out / "study.json"
    sessions = json.loads(study_json.read_text())["sessions"] if study_json.is_file() else []
    return [s for s in sessions if s.get("trained")]


def write_run_files(
    runs: Sequence[Run],
    specs: Sequence[RunSpec],
    sessions: Sequence[Mapping[str, Any]],
    results_dir: Path,
    root: Path,
) -> list[Path]:
    """One ``runs/<method>-seed<n>.json`` per run: its file, wall time, final numbers, its
    regulator's configuration and its epoch records (in the metrics.jsonl form)."""
    wall_by_run = {name: w for s in sessions for name, w in s["trained"].items()}
    written = []
    for run, spec in zip(runs, specs, strict=True):
        path = results_dir / "runs" / f"{run.method}-seed{run.seed}.json"
        cfg = json.loads((spec.out_dir / "config.json").read_text())
        path.write_text(
            json.dumps(
                {
                    "method": run.method,
                    "seed": run.seed,
                    "metrics_jsonl": rel(Path(run.source), root),
                    "sha256": run.sha256,
                    "wall_s": wall_by_run.get(f"{run.method}/seed{run.seed}"),
                    "final": final_metrics(run),
                    "regulator": cfg["regulator"],
                    "epochs": [e.to_json() for e in run.epochs],
                },
                indent=1,
            )
            + "\n"
        )
        written.append(path)
    return written


def setup_text(
    study: Study, out: Path, epochs: int, sessions: Sequence[Mapping[str, Any]], last_seed: int
) -> str:
    """The study's setup section, filled in from the dataset that was built and the sessions."""
    info = json.loads((out / "shards" / "dataset.json").read_text())
    opts = study.build_options
    calibration = json.loads((out / "calibration" / "calibration.json").read_text())
    recipe = study.candidate(calibration["chosen"])
    return study.setup.format(
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        step_size=recipe.step_size,
        gamma=recipe.gamma,
        calibration_seeds=", ".join(str(s) for s in calibration["seeds"]),
        n_train=info["splits"]["train"]["samples"],
        n_test=info["splits"]["test"]["samples"],
        audio_seconds=float(opts["audio_seconds"]),
        n_mels=opts["n_mels"],
        n_fft=opts["n_fft"],
        hop_length=int(opts["hop_length"]),
        mel_frames=info["audio_feature_shape"][1],
        epochs=epochs,
        parallel=max((s.get("parallel", 0) for s in sessions), default=0) or "several",
        last_seed=last_seed,
    )


def study_meta(
    study: Study,
    specs: Sequence[RunSpec],
    a: Analysis,
    sessions: list[dict[str, Any]],
    epochs: int,
    out: Path,
    results_dir: Path,
    root: Path,
) -> dict[str, Any]:
    """What the report says about how the study was run (summary.json's ``meta``)."""
    example = ["python launch/train.py", "--config", rel(specs[0].config, root), "--resume auto"]
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M %Z"),
        "seeds": len({r.seed for r in a.runs}),
        "epochs": epochs,
        "runs": [f"{r.method}/seed{r.seed}" for r in a.runs],
        "sessions": sessions,
        "machine": f"{os.cpu_count()} CPU cores, {platform.platform()}",
        "summary_json": rel(results_dir / "summary.json", root),
        "runs_dir": rel(results_dir / "runs", root) + "/",
        "data_commands": [
            " ".join(study.manifest_command(Path("../shared/data"), out / "raw")),
            " ".join(study.build_command(out / "raw", out / "shards")),
        ],
        "example_command": " ".join([*example, *list(specs[0].overrides)]),
        "weak_modality": a.weak,
    }


def rel(path: Path, root: Path) -> str:
    """`path` relative to the repository when inside it (portable in committed files)."""
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)
