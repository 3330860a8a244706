"""`inforeg-bench regulator` runs and writes its figures (speed is read from its output, never
asserted here)."""

import json

import pytest

from bench.cli import main


@pytest.mark.timeout(120)
def test_regulator_bench_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["regulator", "--params", "300000", "--modalities", "3", "--repeat", "2", "--warmup",
            "1", "--impl", "flat", "foreach", "reference", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "3 synthetic encoders" in text and "% of copy" in text and "x official" in text
    data = json.loads(out.read_text())
    for key in ("impl", "ms_per_call", "gbps", "copy_gbps", "official_ms_per_call"):
        assert data[key] is not None, key
    assert data["impl"] == "flat" and data["modalities"] == 3
    assert [r["impl"] for r in data["results"]] == ["flat", "foreach", "reference"]
    assert all(r["ms_per_call"] > 0 and r["speedup_vs_official"] > 0 for r in data["results"])


def test_regulator_bench_rejects_bad_arguments(capsys):
    assert main(["regulator", "--model", "synthetic"]) == 2
    assert "--params" in capsys.readouterr().out
