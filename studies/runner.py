"""Run a study end to end: build its dataset, calibrate its recipe, train its methods x seeds,
write its report (docs/study-protocol.md is the protocol it follows).

    python -m studies.runner avmnist [--seeds 5] [--parallel 2] [--out runs/study-avmnist]
                                   [--epochs N] [--methods joint,inforeg] [--report-only]
                                   [--calibrate-only]

(`make study-avmnist`.) Steps, each skipped when already done so that re-running is cheap and a
killed study continues where it stopped:

1. data: the source folder is checked against its SHA256SUMS; the manifest is rendered unless
   ``OUT/raw/avmnist.json`` records the same options; ``inforeg-preprocess build`` writes the
   FFCV shards, or confirms (re-hashing them) that ``OUT/shards`` is up to date;
2. calibration (`calibrate`): the study's candidate recipes in order, with unregulated runs
   only (joint training, then the encoders alone) on calibration seeds the study never uses,
   under ``OUT/calibration/<candidate>/``; the first candidate meeting every criterion is the
   recipe, and the dose-response thresholds are replayed on its joint traces
   (``OUT/calibration/calibration.json``, recomputed from the runs on every invocation);
3. runs: one single-process trainer per (method, seed) with the chosen recipe, ``--parallel`` at
   a time with ``run.threads=1`` (independent runs use the cores better than one run on several
   threads). A run whose ``summary.json`` says it finished is skipped; any other run is started
   with ``--resume auto`` (it continues from its latest complete checkpoint, if any). A run
   folder holding another configuration stops the study rather than being overwritten; a
   method whose configuration does not build is reported as not run (``OUT/not_run.json``).
   Each start is recorded with its commit in the run's ``provenance.json``;
4. report: `studies.results` aggregates every run's ``metrics.jsonl``; `studies.results_doc`
   writes the figures (`studies.figures`), the markdown (`studies.markdown`, ``docs/RESULTS.md``)
   and the small result files.

Wall time and the machine's load average are recorded in ``OUT/study.json`` (one entry per
invocation, rewritten after every run; `studies.sessions`) and reported.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.checkpoint import find_latest
from launch.config import config_to_dict, load_config
from launch.typed import ConfigError
from studies import calibration
from studies.avmnist import STUDIES, Study
from studies.calibration import Candidate
from studies.results import Method, Run, load_run
from studies.results_doc import write_study_report
from studies.run_folder import with_added_defaults
from studies.sessions import Session, record_session, run_all

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "launch" / "train.py"


class StudyError(RuntimeError):
    """A study cannot go on (a run folder of another configuration, a failed build)."""


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One training run of the study: a method's config with a seed, in its own folder."""

    method: str
    seed: int
    config: Path
    out_dir: Path
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.method}/seed{self.seed}"

    def command(self, python: str = sys.executable) -> list[str]:
        return [
            python,
            str(TRAIN),
            "--config",
            str(self.config),
            "--resume",
            "auto",
            *list(self.overrides),
        ]


def plan(
    study: Study,
    out: Path,
    seeds: int | Sequence[int],
    epochs: int | None = None,
    methods: Sequence[str] | None = None,
    recipe: Sequence[str] = (),
    extra: Sequence[Method] = (),
    folder: str = "runs",
) -> list[RunSpec]:
    """The study's runs: the primary claims' methods for every seed first, then the others,
    each part seed-major, so a study cut short has its primary comparisons and whole rows of
    seeds. `seeds`: a count (0..n-1) or the seeds; `recipe`: the calibrated recipe's overrides,
    applied to every run; `extra`: methods beyond the study's list (the dose-response series)."""
    every = [*study.methods, *extra]
    keys = [m.key for m in every]
    chosen = list(methods) if methods else keys
    unknown = sorted(set(chosen) - set(keys))
    if unknown:
        raise StudyError(f"--methods: unknown {unknown}; the {study.name} study has {keys}")
    specs = []
    seed_list = list(range(seeds) if isinstance(seeds, int) else seeds)
    first = [m for m in every if m.key in chosen and m.key in study.primary]
    rest = [m for m in every if m.key in chosen and m.key not in study.primary]
    order = [(s, m) for s in seed_list for m in first] + [(s, m) for s in seed_list for m in rest]
    for seed, method in order:
        run_dir = out / folder / method.key / f"seed{seed}"
        overrides = [
            f"data.dir={out / 'shards'}",
            *recipe,
            *method.overrides,
            f"run.seed={seed}",
            f"regulator.noise_seed={seed}",
            f"run.out_dir={run_dir}",
        ]
        if epochs is not None:
            overrides.append(f"run.epochs={epochs}")
        specs.append(
            RunSpec(
                method=method.key,
                seed=seed,
                config=study.config_path(ROOT, method.config_stem),
                out_dir=run_dir,
                overrides=tuple(overrides),
            )
        )
    return specs


def expected_config(spec: RunSpec) -> dict[str, Any]:
    """The full configuration the trainer will write to the run's config.json."""
    return config_to_dict(load_config(spec.config, spec.overrides))


def run_state(spec: RunSpec, expected: dict[str, Any]) -> str:
    """done (finished: skip), resume (a complete checkpoint to continue from) or new.

    StudyError when the folder holds a run of another configuration: it is never overwritten."""
    config_file = spec.out_dir / "config.json"
    if config_file.is_file():
        found = with_added_defaults(json.loads(config_file.read_text()))
        if found != expected:
            differ = sorted(
                k for k in set(found) | set(expected) if found.get(k) != expected.get(k)
            )
            raise StudyError(
                f"{spec.out_dir} holds a run of another configuration (sections {differ} "
                "differ); choose another --out or remove that folder"
            )
    summary_file = spec.out_dir / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if summary.get("exit_code") == 0 and summary.get("epochs") == expected["run"]["epochs"]:
            return "done"
    if find_latest(spec.out_dir / "checkpoints") is not None:
        return "resume"
    return "new"


def runnable(specs: Sequence[RunSpec]) -> tuple[list[RunSpec], dict[str, str]]:
    """The specs whose configuration builds, and method -> the configuration error of those
    that do not (protocol section 2: reported as not run, never replaced by something else)."""
    ok: list[RunSpec] = []
    errors: dict[str, str] = {}
    for spec in specs:
        try:
            expected_config(spec)
        except (ConfigError, ValueError) as e:
            errors.setdefault(spec.method, str(e))
            continue
        ok.append(spec)
    return ok, errors


def train(
    specs: Sequence[RunSpec],
    parallel: int,
    session: Session,
    train_missing: bool,
    strict: bool = True,
    on_run_end: Callable[[], object] = lambda: None,
) -> list[RunSpec]:
    """Train the specs that are not finished (when `train_missing`); return those still missing.
    StudyError when a run fails and `strict` (the calibration cannot choose without its runs;
    the study's report lists a failed run instead)."""
    todo = [s for s in specs if run_state(s, expected_config(s)) != "done"]
    if todo and train_missing:
        run_all(todo, parallel, session, lambda s: print(s, flush=True), on_run_end=on_run_end)
        if session.failed and strict:
            raise StudyError(f"{len(session.failed)} run(s) failed: {sorted(session.failed)}")
        todo = [s for s in specs if run_state(s, expected_config(s)) != "done"]
    return todo


def load_runs(specs: Sequence[RunSpec]) -> list[Run]:
    return [load_run(s.out_dir / "metrics.jsonl", s.method, s.seed) for s in specs]


def calibrate(
    study: Study,
    out: Path,
    parallel: int,
    session: Session,
    train_missing: bool = True,
    on_run_end: Callable[[], object] = lambda: None,
) -> dict[str, Any]:
    """Protocol section 1: try the candidates in order with unregulated runs on the calibration
    seeds (joint first; the encoders alone only where joint meets C1), stop at the first that
    meets every criterion, choose, and fix the dose thresholds; OUT/calibration/calibration.json.
    Every figure is recomputed from the runs, so re-running only trains what is missing."""
    results: dict[str, dict[str, Any]] = {}
    joint_runs: dict[str, list[Run]] = {}
    for candidate in study.candidates:

        def specs(methods: Sequence[str], chosen: Candidate = candidate) -> list[RunSpec]:
            seeds = study.calibration_seeds
            return plan(study, out, seeds, None, methods, chosen.overrides(),
                        folder=f"calibration/{chosen.name}")  # fmt: skip

        joint_key, *alone_keys = study.calibration_methods
        if train(specs([joint_key]), parallel, session, train_missing, on_run_end=on_run_end):
            raise StudyError(f"calibration {candidate.name}: joint runs missing (--report-only)")
        joint_runs[candidate.name] = load_runs(specs([joint_key]))
        result = calibration.evaluate(joint_runs[candidate.name], {}, study.strong, study.weak,
                                      study.criteria)  # fmt: skip
        if result["C1"]["met"]:
            if train(specs(alone_keys), parallel, session, train_missing, on_run_end=on_run_end):
                raise StudyError(f"calibration {candidate.name}: runs missing (--report-only)")
            alone = {k.removesuffix("_only"): load_runs(specs([k])) for k in alone_keys}
            result = calibration.evaluate(joint_runs[candidate.name], alone, study.strong,
                                          study.weak, study.criteria)  # fmt: skip
        results[candidate.name] = {"overrides": list(candidate.overrides()), **result}
        print(f"study: calibration {candidate.name}: " + ", ".join(
            f"{c} {'met' if result[c]['met'] else 'not met' if result[c]['met'] is False else '-'}"
            for c in ("C1", "C2", "C3")), flush=True)  # fmt: skip
        if calibration.meets_all(result):
            break
    order = [c.name for c in study.candidates]
    chosen, why = calibration.choose(results, order)
    dose = calibration.dose_thresholds(joint_runs[chosen], study.strong, study.dose_grid)
    summary = {"order": order, "candidates": results, "chosen": chosen, "why": why,
               "seeds": list(study.calibration_seeds), "dose": dose}  # fmt: skip
    path = out / "calibration" / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"study: calibration chose {chosen} ({why}); dose thresholds {dose['thresholds']}")
    return summary


def build_dataset(study: Study, source: Path, out: Path, log: Callable[[str], None]) -> None:
    """Check the source, render the manifest unless current, build (or confirm) the shards."""
    checked = study.verify_source(source)
    log(f"study: {source}: {checked} files match SHA256SUMS")
    raw, shards = out / "raw", out / "shards"
    commands = []
    if study.manifest_current(raw):
        log(f"study: {raw / 'manifest.csv'} is current (same options); not re-rendered")
    else:
        commands.append(study.manifest_command(source, raw))
    commands.append(study.build_command(raw, shards))
    for args in commands:
        cmd = [sys.executable, "-m", "preprocess.cli", *args]
        log(f"study: inforeg-preprocess {shlex.join(args)}")
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            raise StudyError(f"inforeg-preprocess {args[0]} failed: {shlex.join(args)}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("study", choices=sorted(STUDIES))
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per method")
    p.add_argument("--parallel", type=int, default=2, help="runs trained at the same time")
    p.add_argument("--out", type=Path, default=None, help="default runs/study-<study>")
    p.add_argument("--source", type=Path, default=Path("../shared/data"))
    p.add_argument("--epochs", type=int, default=None, help="override run.epochs")
    p.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    p.add_argument("--skip", default="", help="comma-separated methods left out of this invocation")
    p.add_argument("--report", type=Path, default=Path("docs/RESULTS.md"))
    p.add_argument("--results-dir", type=Path, default=None, help="default docs/results/<study>")
    p.add_argument("--report-only", action="store_true", help="no data build, no training")
    p.add_argument("--calibrate-only", action="store_true", help="stop after the calibration")
    args = p.parse_args(argv)
    # SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C, so run_all stops its children
    # instead of leaving them to finish unsupervised while a later invocation starts them again
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.seeds < 1 or args.parallel < 1:
        p.error("--seeds and --parallel must be >= 1")
    study = STUDIES[args.study]
    out = args.out or Path(f"runs/study-{study.name}")
    results_dir = args.results_dir or Path("docs/results") / study.name
    methods = [m for m in args.methods.split(",") if m] or None
    session = Session(parallel=args.parallel)
    train_missing = not args.report_only
    try:
        if train_missing:
            out.mkdir(parents=True, exist_ok=True)
            build_dataset(study, args.source, out, lambda s: print(s, flush=True))
        progress = functools.partial(record_session, out, session)
        chosen = calibrate(study, out, args.parallel, session, train_missing, progress)
        if args.calibrate_only:
            return finish(out, session, train_missing)
        recipe = study.candidate(chosen["chosen"]).overrides()
        dose = study.dose_methods(chosen["dose"]["thresholds"])
        skip = {m for m in args.skip.split(",") if m}
        keys = [m.key for m in (*study.methods, *dose)]
        unknown = sorted(skip - set(keys))
        if unknown:
            raise StudyError(f"--skip: unknown {unknown}; the {study.name} study has {keys}")
        subset = [k for k in (methods or keys) if k not in skip]
        planned = plan(study, out, range(args.seeds), args.epochs, subset, recipe, dose)
        specs, not_run = runnable(planned)
        (out / "not_run.json").write_text(json.dumps(not_run, indent=1) + "\n")
        for key, error in not_run.items():
            print(f"study: {key} cannot run, reported as not run: {error}", flush=True)
        states = {s.name: run_state(s, expected_config(s)) for s in specs}
        session.skipped = [s.name for s in specs if states[s.name] == "done"]
        print(
            f"study {study.name}: {len(specs)} runs, {len(session.skipped)} finished, "
            f"{sum(v == 'resume' for v in states.values())} to resume, "
            f"{sum(v == 'new' for v in states.values())} to start; out {out}",
            flush=True,
        )
        missing = train(specs, args.parallel, session, train_missing, False, progress)
        finish(out, session, train_missing)
    except StudyError as e:
        finish(out, session, train_missing)
        print(f"study: {e}", file=sys.stderr)
        return 2

    paths = write_study_report(study, specs, out, args.report, results_dir, ROOT)
    for path in paths:
        print(f"study: wrote {path}")
    if missing:
        names = [s.name for s in missing]
        print(f"study: {len(names)} run(s) not finished, listed in the report: {names}")
        return 1
    return 0


def finish(out: Path, session: Session, trained: bool) -> int:
    """Record this invocation's session (when it could train) in OUT/study.json."""
    if trained and (session.trained or session.failed):
        session.finished = time.time()
        record_session(out, session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
