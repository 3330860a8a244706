"""`inforeg-preprocess manifest SOURCE`: a manifest from a dataset's original layout."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from preprocess.manifest import read_manifest


def _report_manifest(path: Path) -> None:
    manifest = read_manifest(path)
    counts = {s: len(manifest.split(s)) for s in ("train", "val", "test")}
    print(
        f"manifest: {len(manifest.rows)} samples, {len(manifest.classes())} classes, "
        f"splits {counts}\nmanifest: {path}"
    )


def _cmd_manifest_cremad(args: argparse.Namespace) -> int:
    from preprocess.manifest import write_manifest
    from preprocess.sources.cremad import cremad_rows

    out = Path(args.out)
    report = cremad_rows(Path(args.root), out, skip_missing=args.skip_missing)
    if report.missing:
        what = "left out (--skip-missing)" if args.skip_missing else "kept: build reports them"
        print(
            f"manifest cremad: {len(report.missing)} listed clip(s) lack a video or audio file, "
            f"{what}; e.g. {', '.join(report.missing[:3])}"
        )
    if report.unlisted:
        print(f"manifest cremad: {report.unlisted} clip(s) under the root are in neither list")
    _report_manifest(write_manifest(out / "manifest.csv", report.rows))
    return 0


def _cmd_manifest_kinetics(args: argparse.Namespace) -> int:
    from preprocess.manifest import write_manifest
    from preprocess.sources.kinetics_sounds import kinetics_rows

    lists = {"train": Path(args.train_list), "test": Path(args.test_list)}
    if args.val_list:
        lists["val"] = Path(args.val_list)
    out = Path(args.out)
    rows = kinetics_rows(Path(args.root), lists, out)
    _report_manifest(write_manifest(out / "manifest.csv", rows))
    return 0


def _cmd_manifest_avmnist(args: argparse.Namespace) -> int:
    from preprocess.sources.avmnist import AVMNISTConfig, avmnist_manifest

    cfg = AVMNISTConfig(
        frames=args.frames,
        clip_fps=args.clip_fps,
        size=args.size,
        image_noise=args.image_noise,
        pca_energy_removed=args.pca_energy_removed,
        samples_per_recording=args.samples_per_recording,
        val_takes=args.val_takes,
        max_per_digit=args.max_per_digit,
        seed=args.seed,
    )
    _report_manifest(avmnist_manifest(Path(args.source), Path(args.out), cfg, workers=args.workers))
    return 0


def add_manifest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manifest", help="write a manifest from a dataset's original layout")
    sources = p.add_subparsers(dest="source", required=True)
    c = sources.add_parser("cremad", help="CREMA-D (VideoFlash/, AudioWAV/), OGM-GE's split")
    c.add_argument("--root", required=True, help="folder holding VideoFlash/ and AudioWAV/")
    c.add_argument("--out", required=True, help="folder for manifest.csv")
    c.add_argument("--skip-missing", action="store_true", help="leave out clips without files")
    c.set_defaults(func=_cmd_manifest_cremad)
    k = sources.add_parser("kinetics-sounds", help="videos with audio tracks, from list files")
    k.add_argument("--root", required=True, help="folder the list's video paths are relative to")
    k.add_argument("--train-list", required=True, help="CSV lines 'video,label'")
    k.add_argument("--test-list", required=True)
    k.add_argument("--val-list", default=None)
    k.add_argument("--out", required=True)
    k.set_defaults(func=_cmd_manifest_kinetics)
    from preprocess.sources.avmnist import AVMNISTConfig

    d = AVMNISTConfig()
    a = sources.add_parser(
        "avmnist",
        help="MNIST clips + FSDD recordings of the same digit",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a.add_argument("--source", required=True, help="folder with SHA256SUMS, mnist/ and fsdd/")
    a.add_argument("--out", required=True, help="folder for media/ and manifest.csv")
    a.add_argument("--frames", type=int, default=d.frames, help="MNIST images per clip")
    a.add_argument("--clip-fps", type=int, default=d.clip_fps)
    a.add_argument("--size", type=int, default=d.size, help="frame side (even, >= 28)")
    a.add_argument("--image-noise", type=float, default=d.image_noise, help="Gaussian std, [0,1]")
    a.add_argument(
        "--pca-energy-removed",
        type=float,
        default=d.pca_energy_removed,
        help="fraction of image variance removed by PCA (AV-MNIST: 0.75)",
    )
    a.add_argument("--samples-per-recording", type=int, default=d.samples_per_recording)
    a.add_argument("--val-takes", type=int, default=d.val_takes, help="takes 5.. as val")
    a.add_argument("--max-per-digit", type=int, default=None, help="recordings per digit/split")
    a.add_argument("--seed", type=int, default=d.seed)
    a.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a.set_defaults(func=_cmd_manifest_avmnist)
