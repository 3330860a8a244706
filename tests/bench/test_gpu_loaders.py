"""The full-node loader checks' pieces on CPU: the dataset they build once per run, DALI's rate
timed inside one epoch after its first batches, and "not run" where a loader is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.gpu_loaders as loaders


def test_a_missing_loader_is_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaders, "installed", lambda module: module != "nvidia.dali")
    for check in (loaders.check_dali_decode, loaders.check_dali_throughput):
        status, figure = check()
        assert status == "not run" and "nvidia.dali not installed" in figure


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dali_rate_inside_one_epoch_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nvidia.dali")
    pytest.importorskip("av")
    monkeypatch.setenv("INFOREG_GPU_CHECK_DATA", str(tmp_path))
    monkeypatch.setattr(loaders, "CLIPS", 48)
    monkeypatch.setattr(loaders, "BATCH", 4)
    data = loaders.data_dir()
    assert (data / "dataset.json").is_file()
    assert loaders.data_dir() == data  # built once, then reused
    rate, batches = loaders.epoch_rate("cpu", workers=1)
    # 48 clips (the test fraction rounds to none): 12 batches of 4, the first 4 not timed
    assert batches == 48 // 4 - loaders.WARM_BATCHES and rate > 0
