"""The verdict paragraph says plainly what P1-P3 gave, whatever it is, with the caveat for the
secondary claims; claim rows carry their numbers or why they were not run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from studies.analysis import Analysis, analyse
from studies.avmnist import AVMNIST
from studies.claims import Claim
from studies.markdown import claims_table, header_lines, verdict_lines
from studies.paired import paired
from tests.studies.synthetic import make_run


def base_analysis(tmp: Path) -> Analysis:
    runs = [make_run(tmp, "joint", s, 0.9, {"audio": 0.8, "video": 0.4}) for s in range(3)]
    return analyse(AVMNIST.methods, runs, {}, "video")


def with_primaries(a: Analysis, diffs: list[list[float] | None]) -> Analysis:
    """P1-P3 replaced: per-seed differences (a paired result) or None (not run)."""
    claims = []
    for c in a.claims:
        if c.spec.primary:
            d = diffs[int(c.spec.key[1]) - 1]
            if d is None:
                c = Claim(spec=c.spec, not_run="inforeg: no finished run")
            else:
                c = Claim(
                    spec=c.spec, result=paired(dict(enumerate(d)), dict.fromkeys(range(5), 0.0))
                )
        claims.append(c)
    return replace(a, claims=claims)


def verdict(a: Analysis) -> str:
    return " ".join(" ".join(verdict_lines(a)).split())


def test_the_verdict_states_the_outcome(tmp_path: Path) -> None:
    a = base_analysis(tmp_path)
    up = [0.01, 0.02, 0.03, 0.04, 0.05]  # t = 4.243: holds
    flat = [0.01, -0.01, 0.02, -0.02, 0.005]  # not shown
    down = [-x for x in up]  # reversed
    text = verdict(with_primaries(a, [up, up, up]))
    assert (
        "**The paper's central claims hold on this testbed**: all three primary claims hold."
        in text
    )
    text = verdict(with_primaries(a, [flat, flat, None]))
    assert "**The paper's central claims are not shown on this testbed**" in text
    assert "- **P3** InfoReg* raises fused accuracy over Joint*: **not run** (inforeg: no" in text
    text = verdict(with_primaries(a, [down, up, flat]))
    assert "**Of the paper's three central claims: 1 holds, 1 not shown, 1 reversed.**" in text
    assert "**P1** InfoReg raises fused accuracy over joint training: -3.00 ± 0.71 points" in text
    assert ": **reversed**." in text
    assert "**No primary claim could be tested**" in verdict(with_primaries(a, [None] * 3))
    assert "the verdict above rests on P1-P3" in text


def test_claim_rows(tmp_path: Path) -> None:
    a = with_primaries(base_analysis(tmp_path), [[0.01, 0.02, 0.03, 0.04, 0.05], None, None])
    rows = "\n".join(claims_table(a.claims, a.labels))
    assert (
        "| P1 | InfoReg raises fused accuracy over joint training | InfoReg (paper) vs Joint "
        "training, `acc` | +3.00 ± 0.71 | 4.24 (2.776) | 5 of 5 | **holds** |"
    ) in rows
    assert "| P2 |" in rows and "| – | – | – | not run: inforeg: no finished run |" in rows
    assert rows.count("\n| S") == 17  # every secondary listed, run or not


def test_secondaries_with_one_seed_are_not_counted_as_tested(tmp_path: Path) -> None:
    """A comparison over one common seed has no standard error: counted as not measured, and
    left out of the number the multiple-comparison caveat counts."""
    a = base_analysis(tmp_path)
    one_seed = Claim(spec=a.claims[3].spec, result=paired({0: 0.02}, {0: 0.0}))
    two_seeds = Claim(spec=a.claims[4].spec, result=paired({0: 0.02, 1: 0.01}, {0: 0.0, 1: 0.0}))
    assert not one_seed.spec.primary and not two_seeds.spec.primary
    a = replace(a, claims=[*a.claims[:3], one_seed, two_seeds])
    text = verdict(a)
    assert "(S1-S4, 2 paired comparisons): 1 not shown, 1 not measured." in text
    assert "With 1 comparisons tested at the 5 % level" in text


def test_the_wall_time_says_which_runs_no_recorded_session_holds() -> None:
    session = {"wall_s": 600.0, "trained": {"joint/seed0": 300.0, "joint/seed1": 290.0}}
    meta = {"runs": ["joint/seed0", "joint/seed1"], "sessions": [session], "seeds": 2}
    (recorded,) = [line for line in header_lines(AVMNIST, meta) if "Wall time" in line]
    assert "**10.0 min**" in recorded and "not in that total" not in recorded
    meta["runs"] = [*meta["runs"], "inforeg/seed0"]
    (partial,) = [line for line in header_lines(AVMNIST, meta) if "Wall time" in line]
    assert "**1 of the runs are not in that total**" in partial
