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

from preprocess.manifest import ManifestError, read_manifest

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


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_synth,
    _add_check_manifest,
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
    except (ManifestError, ValueError, FileNotFoundError) as e:
        print(f"inforeg-preprocess {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
