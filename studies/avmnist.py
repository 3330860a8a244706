"""The studies `studies.runner` can run: their dataset, their methods and how they are described.

A study is data (a manifest source with its options, the build options), a family of configs
(`configs/<name>/<method>.yaml`, one per method, the same everywhere but the regulator) and the
prose of its report's setup section. Only what the runner and the report need lives here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studies.calibration import Candidate, Criteria
from studies.results import Method


def flags(options: dict[str, Any]) -> list[str]:
    """{"audio_sr": 8000, "quiet": True} -> ["--audio-sr", "8000", "--quiet"]."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            out += [flag, str(value)]
    return out


@dataclass(frozen=True, kw_only=True)
class Study:
    name: str
    title: str
    methods: tuple[Method, ...]
    references: dict[str, str]
    """modality -> the method key of its unimodal reference (the encoder trained alone)."""
    information_methods: tuple[str, ...]
    """Methods whose information curves are drawn (the paper's Fig. 1: joint vs InfoReg)."""
    alpha_methods: tuple[str, ...]
    manifest_options: dict[str, Any]
    """`inforeg-preprocess manifest avmnist` options (AVMNISTConfig fields + workers)."""
    build_options: dict[str, Any]
    """`inforeg-preprocess build` options."""
    setup: str
    """Markdown: the setup section of the report (str.format fields: see `setup_fields`)."""
    candidates: tuple[Candidate, ...] = ()
    """The recipes tried in calibration, in the protocol's order (docs/study-protocol.md)."""
    criteria: Criteria = field(default_factory=Criteria)
    calibration_seeds: tuple[int, ...] = (100, 101, 102)
    """Seeds of the calibration runs: never the study's own (0..seeds-1)."""
    calibration_methods: tuple[str, ...] = ("joint", "audio_only", "video_only")
    """Unregulated only: joint training first, then the encoders alone."""
    strong: str = "audio"
    weak: str = "video"
    """The modalities the protocol's calibration criteria name (information-sufficient, weak)."""
    dose_grid: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16)
    dose_config: str = "inforeg"
    """The method whose threshold the dose-response series varies."""
    primary: tuple[str, ...] = ()
    """The methods of the protocol's primary claims: trained first, every seed, so that a study
    cut short (a session's end) has them complete before any secondary run."""

    def config_path(self, root: Path, stem: str) -> Path:
        return root / "configs" / self.name / f"{stem}.yaml"

    def candidate(self, name: str) -> Candidate:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(f"the {self.name} study has no calibration candidate {name!r}")

    def method(self, key: str) -> Method:
        for m in self.methods:
            if m.key == key:
                return m
        raise KeyError(f"the {self.name} study has no method {key!r}")

    def dose_methods(self, thresholds: list[float]) -> tuple[Method, ...]:
        """The dose-response series' extra runs: the dose method at each threshold other than
        the paper's (whose run is the method's own)."""
        from studies.calibration import PAPER_K

        return tuple(
            Method(
                key=f"{self.dose_config}_k{k:g}",
                label=f"InfoReg, K = {k:g}",
                group="dose",
                config=self.dose_config,
                overrides=(f"regulator.threshold={k}",),
            )
            for k in thresholds
            if k != PAPER_K
        )

    def verify_source(self, source: Path) -> int:
        """Files of the source folder checked against its SHA256SUMS (ValueError if any fail)."""
        from preprocess.sources.avmnist import verify_checksums

        return verify_checksums(source)

    def manifest_config(self) -> dict[str, Any]:
        from preprocess.sources.avmnist import AVMNISTConfig

        fields = {k: v for k, v in self.manifest_options.items() if k != "workers"}
        return asdict(AVMNISTConfig(**fields))

    def manifest_current(self, raw: Path) -> bool:
        """The manifest in `raw` was rendered with these options (then it is not re-rendered;
        rendering is deterministic given them)."""
        meta, manifest = raw / "avmnist.json", raw / "manifest.csv"
        if not (meta.is_file() and manifest.is_file()):
            return False
        return bool(json.loads(meta.read_text()).get("config") == self.manifest_config())

    def manifest_command(self, source: Path, raw: Path) -> list[str]:
        return [
            "manifest",
            "avmnist",
            "--source",
            str(source),
            "--out",
            str(raw),
            *flags(self.manifest_options),
        ]

    def build_command(self, raw: Path, shards: Path) -> list[str]:
        return [
            "build",
            "--manifest",
            str(raw / "manifest.csv"),
            "--out",
            str(shards),
            *flags(self.build_options),
        ]


AVMNIST_SETUP = """\
**Data.** AV-MNIST built from `../shared/data` (checked against its `SHA256SUMS`): each sample
pairs one Free Spoken Digit Dataset recording (6 speakers, 8 kHz) with three different MNIST
images of the same digit, shown as a 3-frame clip. FSDD's standard split (takes 0-4 of every
speaker and digit are test) and MNIST's own train/test images keep the splits disjoint; every
recording appears twice, each time with other images ({n_train} train, {n_test} test samples).
There is no validation split: as in the peers' CREMA-D code, the test split is evaluated every
epoch, so the headline numbers are the **last** epoch's (the best epoch's, selected on test, are
shown beside them and are optimistic).

**Imbalance by design.** Spoken digits are the information-sufficient modality. The visual
stream is degraded as in the original AV-MNIST: PCA removes 75% of the images' variance (the
leading components are kept), and training-time crops and flips (the batch contract's) blur it
further. Audio is cut to its first {audio_seconds} s (the onset of the word), which leaves the
fused task short of 100% so that gains can show. The unimodal reference rows (each encoder
trained alone, same recipe) give each modality's potential.

**Audio features.** Log-mel, {n_mels} bands, `n_fft` {n_fft} (32 ms at 8 kHz, the usual
20-40 ms speech analysis window; 129 FFT bins up to the 4 kHz Nyquist frequency), hop
{hop_length} (8 ms): {mel_frames} frames for {audio_seconds} s. Mel bands rather than the
paper's linear log-STFT because a small CNN learns speech from them much faster: in one-seed
calibration runs (1 s audio, lr 0.01, 6 epochs; not part of this study) an audio-only model
reached 0.97 test accuracy on log-mel and 0.63 on the 129-bin log-STFT.

**Model and training.** Late fusion as in the paper (METHOD.md): one small CNN per modality
(four stride-2 conv-BN-ReLU stages, width 16, a 64-d projection; video frames are encoded one by
one and averaged), the features concatenated into one linear head whose slices give the
unimodal branch predictions (Greedy alone adds MMTM modules between the two trunks). The
official InfoReg code's optimiser: SGD, momentum 0.9, weight decay 1e-4. The recipe (batch size,
learning rate, epochs, learning-rate step) is the calibration's choice (below, and
`docs/study-protocol.md`): batch {batch_size}, lr {lr}, {epochs} epochs, StepLR({step_size},
{gamma}). FFCV loader, one process and one thread per run, {parallel} runs at a time. Seeds
0-{last_seed} (the seed sets the initial weights, the sample order, the crops and any method's
noise); the calibration used seeds {calibration_seeds}, which the study never uses.

**Methods** (each `configs/avmnist/<config>.yaml`, identical but for the regulator, with the
authors' default hyper-parameters, none tuned here; `docs/methods.md` has each one's maths and
source): Table 2 (joint loss only): joint training, OGM and OGM-GE (alpha 0.8), Greedy (MMTM,
epsilon 0.01, window 5), PMR, AGM (alpha 1, modulation in epochs 0-19), InfoReg as the paper
(NLL scores, beta 0.9, K 0.04, a window test per modality from epoch 2). Table 3 (the unimodal
cross-entropies added): Joint*, G-Blending, MMPareto, InfoReg*, and InfoReg as its official
code does it (batch-sum probability scores, alpha 0.95 / 0.1 x exp(tanh(gap)), one window test
on the audio trace's 10-epoch moving averages). Table 4: OGM, AGM, PMR and InfoReg each over
the whole training, only inside the window and only outside it (`regulator.schedule`). The
dose-response series: InfoReg at the thresholds the calibration fixed.
"""

AVMNIST = Study(
    name="avmnist",
    title="InfoReg on AV-MNIST (MNIST digits + spoken digits)",
    methods=(
        Method(key="joint", label="Joint training", group="joint_loss"),
        Method(key="ogm", label="OGM", group="joint_loss"),
        Method(key="ogm_ge", label="OGM-GE", group="joint_loss"),
        Method(key="greedy", label="Greedy", group="joint_loss"),
        Method(key="pmr", label="PMR", group="joint_loss"),
        Method(key="agm", label="AGM", group="joint_loss"),
        Method(key="inforeg", label="InfoReg (paper)", group="joint_loss"),
        Method(key="joint_star", label="Joint*", group="unimodal_loss"),
        Method(key="gblending", label="G-Blending", group="unimodal_loss"),
        Method(key="mmpareto", label="MMPareto", group="unimodal_loss"),
        Method(key="inforeg_star", label="InfoReg* (paper)", group="unimodal_loss"),
        Method(key="inforeg_official", label="InfoReg* (official code)", group="unimodal_loss"),
        *(
            Method(
                key=f"{base}_{schedule}",
                label=f"{label}, only {where} the window",
                group="schedule",
                config=base,
                overrides=(f"regulator.schedule={schedule}",),
            )
            for base, label in (("ogm", "OGM"), ("agm", "AGM"), ("pmr", "PMR"))
            for schedule, where in (("window", "inside"), ("outside", "outside"))
        ),
        Method(key="inforeg_always", label="InfoReg, every epoch", group="schedule"),
        Method(key="inforeg_outside", label="InfoReg, only outside the window", group="schedule"),
        Method(key="audio_only", label="Audio encoder alone", group="reference"),
        Method(key="video_only", label="Video encoder alone", group="reference"),
    ),
    references={"audio": "audio_only", "video": "video_only"},
    information_methods=("joint", "inforeg"),
    alpha_methods=(
        "inforeg",
        "inforeg_star",
        "inforeg_official",
        "inforeg_always",
        "inforeg_outside",
        "ogm_ge",
    ),
    manifest_options={
        "frames": 3,
        "size": 32,
        "pca_energy_removed": 0.75,
        "samples_per_recording": 2,
        "seed": 0,
        "workers": 2,
    },
    build_options={
        "formats": "ffcv",
        "frame_size": 32,
        "fps": 3,
        "audio_sr": 8000,
        "audio_seconds": 0.15,
        "audio_features": "log_mel",
        "n_mels": 40,
        "n_fft": 256,
        "hop_length": 64,
        "workers": 2,
        "quiet": True,
    },
    setup=AVMNIST_SETUP,
    primary=("joint", "inforeg", "joint_star", "inforeg_star"),
    candidates=(
        Candidate(name="b64", batch_size=64, lr=0.001, epochs=30, step_size=20),
        Candidate(name="b128", batch_size=128, lr=0.002, epochs=30, step_size=20),
        Candidate(name="b256", batch_size=256, lr=0.004, epochs=30, step_size=20),
        # appended after b64 and b128 failed C1 (protocol section 6)
        Candidate(name="b256_lr2", batch_size=256, lr=0.002, epochs=30, step_size=20),
    ),
)

STUDIES = {s.name: s for s in (AVMNIST,)}
