"""`inforeg-preprocess`: synthesize, describe, build and verify datasets.

Each subcommand is a small function taking the parsed arguments; `main` only dispatches and turns
expected failures (bad options, bad manifests, missing files) into one clear message and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from preprocess.cli_manifest import add_manifest
from preprocess.errors import BuildError
from preprocess.manifest import ManifestError, read_manifest
from preprocess.schema import BuildOptions
from preprocess.stage import EXECUTORS

if TYPE_CHECKING:
    from preprocess.build import BuildResult, RunSettings

Command = Callable[[argparse.Namespace], int]


def _cmd_synth(args: argparse.Namespace) -> int:
    from preprocess.synthetic import SynthConfig, synthesize

    cfg = SynthConfig(
        samples=args.samples,
        classes=args.classes,
        seed=args.seed,
        modalities=tuple(m.strip() for m in args.modalities.split(",") if m.strip()),
        width=args.width,
        height=args.height,
        seconds=args.seconds,
        fps=args.fps,
        audio_sr=args.audio_sr,
        audio_snr_db=args.audio_snr,
        video_snr_db=args.video_snr,
        text_noise=args.text_noise,
        audio_label_noise=args.audio_label_noise,
        video_label_noise=args.video_label_noise,
        text_label_noise=args.text_label_noise,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
    )
    manifest_path = synthesize(Path(args.out), cfg, workers=args.workers)
    manifest = read_manifest(manifest_path)
    counts = {s: len(manifest.split(s)) for s in ("train", "val", "test")}
    print(
        f"synth: {len(manifest.rows)} samples, {cfg.classes} classes, modalities "
        f"{','.join(manifest.modalities())}; splits {counts}\nsynth: manifest {manifest_path}"
    )
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic raw audio-video-text dataset")
    p.add_argument("--out", required=True, help="output folder (media/, manifest.csv)")
    p.add_argument("--samples", type=int, default=60)
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modalities", default="video,audio,text", help="comma-separated subset")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--audio-sr", type=int, default=22050)
    p.add_argument("--audio-snr", type=float, default=0.0, help="dB; higher = stronger audio")
    p.add_argument("--video-snr", type=float, default=-6.0, help="dB; higher = stronger video")
    p.add_argument("--text-noise", type=float, default=0.6, help="prob. a keyword is random")
    p.add_argument("--audio-label-noise", type=float, default=0.0)
    p.add_argument("--video-label-noise", type=float, default=0.3)
    p.add_argument("--text-label-noise", type=float, default=0.3)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.set_defaults(func=_cmd_synth)


def _cmd_check_manifest(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.manifest)
    counts = {s: len(manifest.split(s)) for s in ("train", "val", "test")}
    print(
        f"manifest {manifest.path}: {len(manifest.rows)} rows, classes {len(manifest.classes())}, "
        f"modalities {','.join(manifest.modalities())}, splits {counts}"
    )
    return 0


def _add_check_manifest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-manifest", help="validate a manifest CSV and summarise it")
    p.add_argument("manifest")
    p.set_defaults(func=_cmd_check_manifest)


def _csv_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _build_options(args: argparse.Namespace) -> BuildOptions:
    from preprocess.schema import AudioFeatures

    features = AudioFeatures(
        kind=args.audio_features,
        n_fft=args.n_fft,
        hop_length=args.hop_length,
        win_length=args.win_length or args.n_fft,
        n_mels=args.n_mels if args.audio_features == "log_mel" else None,
    )
    return BuildOptions(
        formats=_csv_list(args.formats),
        fps=args.fps,
        max_frames=args.max_frames,
        min_frames=args.min_frames,
        frame_size=args.frame_size,
        jpeg_quality=args.jpeg_quality,
        frames_jpeg_quality=args.frames_jpeg_quality,
        audio_sr=args.audio_sr,
        audio_seconds=args.audio_seconds,
        min_audio_seconds=args.min_audio_seconds,
        text_len=args.text_len,
        min_word_count=args.min_word_count,
        shard_size=args.shard_size,
        audio_features=features,
        classes=_csv_list(args.classes) if args.classes else None,
    )


def _run_settings(args: argparse.Namespace) -> RunSettings:
    from preprocess.build import RunSettings

    settings = RunSettings(
        workers=args.workers,
        max_error_rate=args.max_error_rate,
        overwrite=args.overwrite,
        keep_staging=args.keep_staging,
        progress=not args.quiet,
        executor=getattr(args, "executor", "local"),
        ray_address=getattr(args, "ray_address", None),
    )
    if settings.executor == "ray":
        from preprocess.ray_exec import require_ray

        require_ray()  # exit 2 with the install hint before any work
    return settings


def _within_budget(result: BuildResult, settings: RunSettings, out: str, command: str) -> int:
    if not result.exceeded:
        return 0
    print(
        f"inforeg-preprocess {command}: error: {result.bad} of {result.total} samples were "
        f"skipped ({100 * result.error_rate:.2f}%), more than --max-error-rate "
        f"{100 * settings.max_error_rate:.2f}%; the folder is consistent but incomplete, "
        f"see {Path(out) / 'errors.jsonl'}",
        file=sys.stderr,
    )
    return 1


def _cmd_build(args: argparse.Namespace) -> int:
    from preprocess.build import build
    from preprocess.plan import Sharding

    # All are validated (ValueError naming the option) before any file is read or written.
    options = _build_options(args)
    sharded = args.num_shards is not None or args.shard_index is not None
    sharding = Sharding(
        num_shards=1 if args.num_shards is None else args.num_shards,
        shard_index=0 if args.shard_index is None else args.shard_index,
    )
    settings = _run_settings(args)
    if sharded:
        from preprocess.parts import build_part

        build_part(args.manifest, args.out, options, settings, sharding)
        return 0  # the error budget is the merge's (over all parts)
    result = build(args.manifest, args.out, options, settings)
    return _within_budget(result, settings, args.out, "build")


def _cmd_merge(args: argparse.Namespace) -> int:
    from preprocess.merge import MergeError, merge

    settings = _run_settings(args)
    try:
        result = merge(args.dir, settings)
    except MergeError as e:
        print(f"inforeg-preprocess merge: error: {e}", file=sys.stderr)
        return 1
    return _within_budget(result, settings, args.dir, "merge")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """How `build` and `merge` run (none of it changes the bytes written)."""
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument(
        "--max-error-rate",
        type=float,
        default=0.01,
        help="fraction of skipped samples above which the build (or merge) exits 1",
    )
    p.add_argument("--overwrite", action="store_true", help="replace another build in the folder")
    p.add_argument("--keep-staging", action="store_true", help="keep DIR/.staging after success")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="check the N parts of a sharded build and write the dataset from them",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("dir", help="the --out of every part")
    _add_run_options(p)
    p.set_defaults(func=_cmd_merge)


def _add_build_options(p: argparse.ArgumentParser) -> None:
    """The options shared by `build` and `bench` (everything that shapes the output)."""
    defaults = BuildOptions()
    f = defaults.audio_features
    p.add_argument("--manifest", required=True, help="manifest CSV")
    p.add_argument("--formats", default=",".join(defaults.formats), help="any of ffcv,dali,frames")
    p.add_argument("--fps", type=float, default=defaults.fps, help="video frames kept per second")
    p.add_argument("--max-frames", type=int, default=defaults.max_frames, help="cap per clip")
    p.add_argument("--min-frames", type=int, default=defaults.min_frames, help="fewer = error")
    p.add_argument("--frame-size", type=int, default=defaults.frame_size, help="short side, px")
    p.add_argument("--jpeg-quality", type=int, default=defaults.jpeg_quality)
    p.add_argument(
        "--frames-jpeg-quality",
        type=int,
        default=defaults.frames_jpeg_quality,
        help="JPEG quality of the frames format (source resolution)",
    )
    p.add_argument("--audio-sr", type=int, default=defaults.audio_sr, help="Hz")
    p.add_argument("--audio-seconds", type=float, default=defaults.audio_seconds)
    p.add_argument(
        "--min-audio-seconds",
        type=float,
        default=defaults.min_audio_seconds,
        help="shorter audio (before tiling) = error",
    )
    p.add_argument("--text-len", type=int, default=defaults.text_len, help="token ids per text")
    p.add_argument("--min-word-count", type=int, default=defaults.min_word_count)
    p.add_argument("--shard-size", type=int, default=defaults.shard_size, help="samples per tar")
    p.add_argument("--audio-features", choices=("log_stft", "log_mel"), default=f.kind)
    p.add_argument("--n-fft", type=int, default=f.n_fft)
    p.add_argument("--hop-length", type=int, default=f.hop_length)
    p.add_argument("--win-length", type=int, default=None, help="default: n_fft")
    p.add_argument("--n-mels", type=int, default=128, help="with --audio-features log_mel")
    p.add_argument("--classes", default=None, help="comma-separated class list (default: labels)")


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="process a manifest into FFCV / DALI / frames outputs (parallel, resumable)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_build_options(p)
    p.add_argument("--out", required=True, help="dataset folder to write")
    _add_run_options(p)
    p.add_argument("--num-shards", type=int, default=None, help="parts of a sharded build: N")
    p.add_argument("--shard-index", type=int, default=None, help="this part: rows p %% N == I")
    p.add_argument("--executor", choices=EXECUTORS, default="local", help="per-sample stage")
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join (none: start a local one of --workers CPUs)",
    )
    p.set_defaults(func=_cmd_build)


def _cmd_bench(args: argparse.Namespace) -> int:
    from preprocess.bench import format_merge, format_table, run_bench
    from preprocess.stage import EXECUTORS

    options = _build_options(args)
    workers = [int(w) for w in _csv_list(args.workers)]
    if not workers or min(workers) < 1:
        raise ValueError(f"--workers must list counts >= 1, got {args.workers!r}")
    executors = _csv_list(args.executors)
    if not executors or any(e not in EXECUTORS for e in executors):
        raise ValueError(f"--executors must list some of {EXECUTORS}, got {args.executors!r}")
    if "ray" in executors:
        from preprocess.ray_exec import require_ray

        require_ray()
    if args.merge_parts < 0:
        raise ValueError(f"--merge-parts must be >= 0, got {args.merge_parts}")
    json_path = Path(args.json) if args.json else None
    rows, merges = run_bench(
        Path(args.manifest), options, workers, json_path, executors, args.merge_parts
    )
    print(format_table(rows))
    if merges:
        print(format_merge(merges))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="build throughput (clips/s) per executor and worker count; a merge's cost",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_build_options(p)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--executors", default="local", help="comma-separated: local,ray")
    p.add_argument("--merge-parts", type=int, default=0, help="also build as N parts + merge")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=_cmd_bench)


def _cmd_verify(args: argparse.Namespace) -> int:
    from preprocess.verify import verify

    problems = verify(args.dir, workers=args.workers)
    for problem in problems:
        print(f"verify: {problem}", file=sys.stderr)
    if problems:
        print(f"verify: {args.dir}: {len(problems)} mismatch(es)", file=sys.stderr)
        return 1
    print(f"verify: {args.dir}: every file and count matches dataset.json")
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="re-hash a dataset folder and check its counts")
    p.add_argument("dir")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.set_defaults(func=_cmd_verify)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_synth,
    _add_check_manifest,
    _add_build,
    _add_merge,
    _add_verify,
    add_manifest,
    _add_bench,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inforeg-preprocess", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Command = args.func
    try:
        return command(args)
    except (ManifestError, ValueError, FileNotFoundError, BuildError) as e:
        print(f"inforeg-preprocess {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
