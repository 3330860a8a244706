"""The protocol's claims on synthetic runs: which comparisons, paired by seed, "not run" kept
with its reason, the dose-response correlation and the ranking, worked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from studies.analysis import analyse, weak_modality
from studies.avmnist import AVMNIST
from studies.claims import (
    NOT_RUN,
    claim_specs,
    dose_response,
    evaluate_claims,
    ranking,
)
from studies.paired import HOLDS, NOT_SHOWN
from studies.results import Run, by_method
from tests.studies.synthetic import make_run

LABELS = {m.key: m.label for m in AVMNIST.methods}


def test_the_protocol_claims_in_order() -> None:
    specs = {s.key: s for s in claim_specs("video", LABELS)}
    assert list(specs)[:3] == ["P1", "P2", "P3"] and len(specs) == 3 + 5 + 3 + 8 + 1
    assert all(specs[k].primary for k in ("P1", "P2", "P3"))
    assert not any(s.primary for k, s in specs.items() if k.startswith("S"))
    p2 = specs["P2"]
    assert (p2.metric, p2.better, p2.worse) == ("acc.video", "inforeg", "joint")
    assert (specs["P3"].better, specs["P3"].worse) == ("inforeg_star", "joint_star")
    assert [k for k in specs if k.startswith("S1.")] == [
        "S1.ogm", "S1.ogm_ge", "S1.greedy", "S1.pmr", "S1.agm"
    ]  # fmt: skip
    assert (specs["S2.official"].better, specs["S2.official"].worse) == (
        "inforeg_official",
        "joint_star",
    )
    # Table 4's run keys: OGM / AGM / PMR always = their Table 2 run; InfoReg window = its own
    pairs = {k: (s.better, s.worse) for k, s in specs.items() if k.startswith("S3.")}
    assert pairs["S3.ogm.outside"] == ("ogm_window", "ogm_outside")
    assert pairs["S3.ogm.always"] == ("ogm_window", "ogm")
    assert pairs["S3.pmr.always"] == ("pmr_window", "pmr")
    assert pairs["S3.inforeg.outside"] == ("inforeg", "inforeg_outside")
    assert pairs["S3.inforeg.always"] == ("inforeg", "inforeg_always")
    assert specs["S4"].metric == "trace_mean.video"


def five_seeds(tmp: Path, method: str, accs: list[float], video: float = 0.4) -> list[Run]:
    return [make_run(tmp, method, s, a, {"audio": 0.8, "video": video}) for s, a in enumerate(accs)]


def test_claims_paired_by_seed_and_not_run_kept(tmp_path: Path) -> None:
    joint = [0.90, 0.88, 0.91, 0.87, 0.89]
    runs = five_seeds(tmp_path, "joint", joint)
    # InfoReg ahead of joint by 1, 2, 3, 4, 5 points in seeds 0-4 (t = 4.243 > 2.776)
    runs += five_seeds(tmp_path, "inforeg", [a + 0.01 * (s + 1) for s, a in enumerate(joint)])
    runs += five_seeds(tmp_path, "ogm", joint)
    groups = by_method(runs)
    specs = claim_specs("video", LABELS)
    claims = {c.spec.key: c for c in evaluate_claims(specs, groups, {"greedy": "ValueError: x"})}
    p1 = claims["P1"]
    assert p1.result is not None and p1.verdict == HOLDS
    assert p1.result.diffs == pytest.approx((0.01, 0.02, 0.03, 0.04, 0.05))
    assert p1.result.t == pytest.approx(4.243, abs=1e-3) and p1.result.wins == 5
    assert claims["P2"].verdict == NOT_SHOWN  # same video branch: every difference 0
    assert claims["S1.ogm"].verdict == HOLDS
    assert claims["S1.greedy"].verdict == NOT_RUN and claims["S1.greedy"].result is None
    assert claims["S1.greedy"].not_run == "greedy: ValueError: x"
    assert claims["P3"].not_run == ("inforeg_star: no finished run; joint_star: no finished run")
    assert len(claims) == 20  # nothing dropped


def dose_runs(tmp: Path, gains: dict[str, list[float]], regulated: dict[str, int]) -> list[Run]:
    """joint at video 0.40 in every seed; each method's video branch 0.40 + gain per seed,
    regulating audio in its first `regulated[method]` epochs."""
    runs = []
    for method, per_seed in gains.items():
        for seed, gain in enumerate(per_seed):
            reg = {"audio": range(regulated[method])}
            runs.append(
                make_run(tmp, method, seed, 0.9 + gain, {"audio": 0.8, "video": 0.4 + gain},
                         epochs=3, regulated=reg)
            )  # fmt: skip
    return runs


def test_dose_response_spearman_overall_and_per_seed(tmp_path: Path) -> None:
    # x = regulated epochs: joint 0, inforeg 2, inforeg_always 3 (in both seeds)
    # points x [0, 2, 3, 0, 2, 3], y [0, .02, .03, 0, .01, .04]: ranks x [1.5, 3.5, 5.5] x 2,
    # ranks y [1.5, 4, 5, 1.5, 3, 6]; deviations from 3.5: dx [-2, 0, 2, -2, 0, 2],
    # dy [-2, .5, 1.5, -2, -.5, 2.5]: sxy 16, sxx 16, syy 17 -> rho = 16 / sqrt(16 * 17)
    gains = {"joint": [0.0, 0.0], "inforeg": [0.02, 0.01], "inforeg_always": [0.03, 0.04]}
    runs = dose_runs(tmp_path, gains, {"joint": 0, "inforeg": 2, "inforeg_always": 3})
    series = ["joint", "inforeg", "inforeg_always"]
    d = dose_response(series, by_method(runs), "video", "audio", {})
    assert d.rho == pytest.approx(16 / math.sqrt(16 * 17))
    assert d.rho_fused == d.rho  # here the fused gain equals the video-branch gain
    assert d.per_seed == {0: pytest.approx(1.0), 1: pytest.approx(1.0)}
    assert d.needed == 2 and d.positive_seeds == 2 and d.verdict == HOLDS
    assert d.methods == ("joint", "inforeg", "inforeg_always") and d.not_run == ""
    # part of the series is not the protocol's test: not run, the missing member named
    part = dose_response(["joint", "inforeg_k0.08", *series[1:]], by_method(runs), "video",
                         "audio", {"inforeg_k0.08": "not planned"})  # fmt: skip
    assert part.verdict == NOT_RUN and part.not_run == "inforeg_k0.08: not planned"
    assert [(p.method, p.regulated) for p in d.points[:3]] == [
        ("joint", 0), ("joint", 0), ("inforeg", 2)
    ]  # fmt: skip
    assert d.points[2].weak_gain == pytest.approx(0.02)
    assert d.points[2].fused_gain == pytest.approx(0.02)


def test_dose_response_needs_four_of_five_seeds(tmp_path: Path) -> None:
    # x [0, 1, 2, 3] in each seed; seeds 0-2 rise monotonically (rho 1); seeds 3-4 have
    # y [0, .03, .02, -.01]: y ranks [2, 4, 3, 1], d = [-1, -2, 0, 3], rho = 1 - 6*14/60 = -0.4
    up, down = [0.0, 0.01, 0.02, 0.03], [0.0, 0.03, 0.02, -0.01]
    per_seed = [up, up, up, down, down]
    methods = ["joint", "inforeg_k0.08", "inforeg", "inforeg_always"]
    gains = {m: [seed[i] for seed in per_seed] for i, m in enumerate(methods)}
    runs = dose_runs(tmp_path, gains, dict(zip(methods, range(4), strict=True)))
    d = dose_response(methods, by_method(runs), "video", "audio", {})
    assert [d.per_seed[s] for s in range(5)] == pytest.approx([1, 1, 1, -0.4, -0.4])
    assert d.needed == 4 and d.positive_seeds == 3 and d.verdict == NOT_SHOWN
    without = dose_response(["joint", "inforeg"], {}, "video", "audio", {"joint": "failed"})
    assert without.verdict == NOT_RUN and "joint: failed" in without.not_run


def test_ranking_against_the_paper_by_hand(tmp_path: Path) -> None:
    ours = {"joint": 0.90, "ogm": 0.92, "agm": 0.91, "inforeg": 0.93, "inforeg_star": 0.94,
            "gblending": 0.95}  # fmt: skip
    runs = [make_run(tmp_path, k, 0, v, {"audio": 0.8, "video": 0.4}) for k, v in ours.items()]
    paper = {"joint": 66.61, "ogm": 68.70, "agm": 69.71, "inforeg": 71.90, "inforeg_star": 75.71}
    r = ranking([*ours, "mmpareto"], by_method(runs), paper)
    assert [k for k, _ in r.ours] == ["gblending", "inforeg_star", "inforeg", "ogm", "agm", "joint"]
    assert [k for k, _, _ in r.compared] == ["inforeg_star", "inforeg", "ogm", "agm", "joint"]
    # our ranks [5, 4, 3, 2, 1], the paper's [5, 4, 2, 3, 1]: sum d^2 = 2, 1 - 6*2/(5*24) = 0.9
    assert r.rho == pytest.approx(0.9)


def test_analyse_picks_the_weak_modality_from_joint(tmp_path: Path) -> None:
    runs = five_seeds(tmp_path, "joint", [0.9] * 5, video=0.4)
    runs += five_seeds(tmp_path, "inforeg", [0.91] * 5, video=0.5)
    groups = by_method(runs)
    assert weak_modality(groups, ["audio", "video"], "audio") == "video"
    assert weak_modality({}, ["audio", "video"], "video") == "video"
    a = analyse(AVMNIST.methods, runs, {"greedy": "ValueError: x"}, "video")
    assert (a.weak, a.strong) == ("video", "audio")
    assert {c.spec.key: c.verdict for c in a.claims}["P2"] == HOLDS
    assert a.not_run == {"greedy": "ValueError: x"}
    assert a.dose.verdict == NOT_RUN and "inforeg_always" in a.dose.not_run  # series incomplete
    with pytest.raises(ValueError, match="no finished run of a trained"):
        analyse(AVMNIST.methods, [], {}, "video")


def test_dose_response_uses_only_seeds_with_the_whole_series(tmp_path: Path) -> None:
    # inforeg_always ran in seed 0 only: seed 1 has two levels (rho +-1 by construction), so
    # only seed 0 is complete, and one complete seed is not enough to test
    gains = {"joint": [0.0, 0.0], "inforeg": [0.02, 0.01], "inforeg_always": [0.03]}
    runs = dose_runs(tmp_path, gains, {"joint": 0, "inforeg": 2, "inforeg_always": 3})
    d = dose_response(["joint", "inforeg", "inforeg_always"], by_method(runs), "video", "audio", {})
    assert d.verdict == NOT_RUN and "finished in 1 seed(s)" in d.not_run
