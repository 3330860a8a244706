"""Write a study's result documents from its finished runs: ``docs/RESULTS.md``, the figures,
``summary.json`` and one small JSON file per run (its final numbers and epoch records).

This module does the reading and writing: the run folders (which runs finished, and why the
others did not), the calibration runs (`studies.calibration_report`), the runs' provenance
(`studies.provenance`), the study's bookkeeping (``OUT/study.json``, the dataset's
``dataset.json``). The numbers come from `studies.analysis`, the figures from `studies.figures`,
the markdown from `studies.markdown`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launch.config import load_config
from studies.analysis import Analysis, analyse
from studies.audit import audit_run
from studies.avmnist import Study
from studies.calibration_report import CalibrationView, calibration_lines, load_calibration
from studies.figures import write_figures
from studies.markdown import render_markdown
from studies.paired import t_critical
from studies.provenance import check_runs, git_is_ancestor, protocol_commit, provenance_lines
from studies.results import Method, Run, final_metrics, finished_run, is_regulated, per_seed

if TYPE_CHECKING:  # studies.runner imports this module to report; annotations only
    from studies.runner import RunSpec


def study_methods(study: Study, specs: Sequence[RunSpec]) -> list[Method]:
    """The study's methods, then the planned ones it does not list (the dose-response series,
    ``<dose_config>_k<K>``, labelled as `Study.dose_methods` labels them)."""
    known = {m.key for m in study.methods}
    prefix = f"{study.dose_config}_k"
    extra: list[Method] = []
    for key in dict.fromkeys(s.method for s in specs):
        if key in known:
            continue
        if key.startswith(prefix):
            extra += study.dose_methods([float(key.removeprefix(prefix))])
        else:
            extra.append(Method(key=key, label=key, group="dose"))
    return [*study.methods, *extra]


def config_error(spec: RunSpec) -> str | None:
    """The configuration error that keeps a planned run from starting (None: it loads)."""
    try:
        load_config(spec.config, spec.overrides)
    except (OSError, ValueError) as e:  # ConfigError is a ValueError
        return f"{type(e).__name__}: {e}"
    return None


def collect_runs(
    specs: Sequence[RunSpec], methods: Sequence[Method], config_errors: Mapping[str, str]
) -> tuple[list[Run], dict[str, str], dict[str, str]]:
    """(finished runs, method -> why it has none, run name -> why it did not finish).
    `config_errors`: method -> why its configuration does not build (the runner leaves such
    methods out of the specs)."""
    runs: list[Run] = []
    unfinished: dict[str, str] = {}
    for spec in specs:
        run, reason = finished_run(spec.out_dir, spec.method, spec.seed)
        if run is not None:
            runs.append(run)
            continue
        error = config_error(spec) if not spec.out_dir.is_dir() else None
        unfinished[spec.name] = error or reason
    finished = {r.method for r in runs}
    planned = {s.method: s for s in specs}
    not_run = {}
    for m in methods:
        if m.key in finished:
            continue
        planned_spec = planned.get(m.key)
        if planned_spec is None:
            error = config_errors.get(m.key)
            not_run[m.key] = (
                f"its configuration does not build: {error}"
                if error
                else "not in this report's plan of runs"
            )
        else:
            not_run[m.key] = unfinished.get(planned_spec.name, "no finished run")
    return runs, not_run, unfinished


def write_study_report(
    study: Study,
    specs: Sequence[RunSpec],
    out: Path,
    report: Path,
    results_dir: Path,
    root: Path,
) -> list[Path]:
    """Recompute everything from the run folders under `out` (the study's and the calibration's)
    and write summary.json, the per-run JSON, the PNGs and `report`. Planned runs that did not
    finish are reported as such, never silently dropped."""
    methods = study_methods(study, specs)
    errors = out / "not_run.json"  # the runner's methods whose configuration does not build
    config_errors = json.loads(errors.read_text()) if errors.is_file() else {}
    runs, not_run, unfinished = collect_runs(specs, methods, config_errors)
    a = analyse(methods, runs, not_run, study.weak, study.dose_config)
    view = load_calibration(study, out)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "runs").mkdir(exist_ok=True)
    figures = write_figures(
        study, a.groups, results_dir, a.dose, a.labels, a.weak, view.joint if view else None
    )
    written: list[Path] = [*figures.values()]
    by_name = {s.name: s for s in specs}
    sessions = read_sessions(out)
    written += write_run_files(a.runs, by_name, sessions, results_dir, root)
    epochs = max((len(r.epochs) for r in runs), default=0)
    last_seed = max(r.seed for r in runs)
    setup = setup_text(study, out, epochs, sessions, last_seed, view)
    protocol = protocol_commit(root)
    method_of = {m.key: m for m in methods}
    regulated = {
        n: by_name[n].out_dir
        for n in (f"{r.method}/seed{r.seed}" for r in runs)
        if is_regulated(method_of[by_name[n].method])
    }
    checked = check_runs(regulated, protocol, git_is_ancestor(root)) if protocol else []
    meta = study_meta(study, specs, a, sessions, epochs, out, results_dir, root)
    meta["unfinished"] = unfinished
    audits = {name: audit_run(by_name[name].out_dir) for name in meta["runs"]}
    meta["audit_problems"] = {name: found for name, found in audits.items() if found}
    summary_path = results_dir / "summary.json"
    summary = to_json(a, view, meta, protocol_info(protocol, checked))
    summary_path.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    written.append(summary_path)
    rel_figures = {k: os.path.relpath(p, report.parent) for k, p in figures.items()}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        render_markdown(
            study=study,
            analysis=a,
            setup=setup,
            calibration=calibration_lines(view, study, rel_figures.get("calibration", "")),
            provenance=[
                *provenance_lines(protocol, checked),
                *audit_lines(audits),
                *unfinished_lines(unfinished),
            ],
            figures=rel_figures,
            meta=meta,
        )
        + "\n"
    )
    written.append(report)
    return written


def audit_lines(audits: Mapping[str, Sequence[str]]) -> list[str]:
    """Protocol section 5: what `studies.audit` found in each finished run's records."""
    failing = {name: found for name, found in audits.items() if found}
    return [
        f"**Audit** (protocol section 5; `python -m studies.audit RUN` checks the records' schema, "
        "recomputes every window and regulation decision from the logged traces and scores, and "
        f"looks for non-finite values): **{len(audits) - len(failing)} of {len(audits)} finished "
        "runs agree with METHOD.md**" + (":" if failing else "."),
        "",
        *(
            f"- `{name}`: {len(found)} problem(s); the first: {found[0]}"
            for name, found in failing.items()
        ),
        *([""] if failing else []),
    ]


def unfinished_lines(unfinished: Mapping[str, str]) -> list[str]:
    """The planned runs without a finished result, one line per method and reason."""
    if not unfinished:
        return []
    grouped: dict[tuple[str, str], list[str]] = {}
    for name, why in unfinished.items():
        method, seed = name.split("/", 1)
        grouped.setdefault((method, why), []).append(seed.removeprefix("seed"))
    return [
        f"**Planned runs without a finished result ({len(unfinished)}):**",
        "",
        *(f"- `{m}` seeds {', '.join(seeds)}: {why}" for (m, why), seeds in grouped.items()),
        "",
    ]


def protocol_info(protocol: Any, checked: Sequence[Any]) -> dict[str, Any]:
    if protocol is None:
        return {"commit": None, "runs": []}
    return {
        "commit": protocol.commit,
        "time": protocol.time.isoformat(),
        "runs": [asdict(p) for p in checked],
    }


def clean(value: Any) -> Any:
    """NaN and infinities as None, recursively (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


METRICS = ("acc", "macro_f1", "best_acc", "best_epoch")


def to_json(
    a: Analysis, view: CalibrationView | None, meta: Mapping[str, Any], provenance: Any
) -> dict[str, Any]:
    """summary.json: per method and metric the per-seed values, the claims with their per-seed
    differences, S5, S6, the calibration as recomputed, the provenance and every run's file."""
    methods = {}
    for m in a.methods:
        runs = a.groups.get(m.key, [])
        names = [*METRICS, *(f"acc.{x}" for x in a.modalities)]
        names += [f"trace_mean.{x}" for x in a.modalities]
        metrics = {
            k: per_seed(runs, k)
            for k in names
            if runs and all(k in final_metrics(r) or k.startswith("trace_mean.") for r in runs)
        }
        methods[m.key] = {
            "label": m.label,
            "group": m.group,
            "per_seed": metrics,
            "not_run": a.not_run.get(m.key),
        }
    calibration = None
    if view is not None:
        calibration = {
            "candidates": view.results,
            "chosen": view.chosen,
            "why": view.why,
            "dose": view.dose,
            "disagreements": view.disagreements(),
        }
    return clean(
        {
            "meta": dict(meta),
            "rule": "paired by seed; holds: mean > 0 and t = mean/se > the two-sided 5 % t "
            f"critical value on n-1 df (4 df: {t_critical(4)}); reversed: mean < 0 and t < -it",
            "weak": a.weak,
            "strong": a.strong,
            "methods": methods,
            "claims": [asdict(c) | {"verdict": c.verdict} for c in a.claims],
            "dose_response": asdict(a.dose) | {"positive_seeds": a.dose.positive_seeds},
            "ranking": asdict(a.ranking),
            "calibration": calibration,
            "provenance": provenance,
            "runs": [
                {"method": r.method, "seed": r.seed, "metrics_jsonl": r.source, "sha256": r.sha256}
                for r in a.runs
            ],
        }
    )


def read_sessions(out: Path) -> list[dict[str, Any]]:
    """The runner's sessions that trained something (``OUT/study.json``; none if absent)."""
    study_json = out / "study.json"
    sessions = json.loads(study_json.read_text())["sessions"] if study_json.is_file() else []
    return [s for s in sessions if s.get("trained")]


def write_run_files(
    runs: Sequence[Run],
    specs: Mapping[str, RunSpec],
    sessions: Sequence[Mapping[str, Any]],
    results_dir: Path,
    root: Path,
) -> list[Path]:
    """One ``runs/<method>-seed<n>.json`` per run: its file, wall time, final numbers, its
    regulator's configuration and its epoch records (in the metrics.jsonl form)."""
    wall_by_run = {name: w for s in sessions for name, w in s["trained"].items()}
    written = []
    for run in runs:
        name = f"{run.method}/seed{run.seed}"
        path = results_dir / "runs" / f"{run.method}-seed{run.seed}.json"
        cfg = json.loads((specs[name].out_dir / "config.json").read_text())
        record = {
            "method": run.method,
            "seed": run.seed,
            "metrics_jsonl": rel(Path(run.source), root),
            "sha256": run.sha256,
            "wall_s": wall_by_run.get(name),
            "final": final_metrics(run),
            "regulator": cfg["regulator"],
            "epochs": [e.to_json() for e in run.epochs],
        }
        path.write_text(json.dumps(clean(record), indent=1) + "\n")
        written.append(path)
    return written


def setup_text(
    study: Study,
    out: Path,
    epochs: int,
    sessions: Sequence[Mapping[str, Any]],
    last_seed: int,
    view: CalibrationView | None,
) -> str:
    """The study's setup section, filled in from the dataset that was built, the calibration
    (`view`; without one, the first candidate's recipe) and the sessions."""
    info = json.loads((out / "shards" / "dataset.json").read_text())
    opts = study.build_options
    # the recipe the runs trained with: the runner's record of its choice, else the recomputed one
    chosen = (view.recorded.get("chosen") or view.chosen) if view else study.candidates[0].name
    recipe = study.candidate(chosen)
    return study.setup.format(
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        step_size=recipe.step_size,
        gamma=recipe.gamma,
        calibration_seeds=", ".join(str(s) for s in study.calibration_seeds),
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
