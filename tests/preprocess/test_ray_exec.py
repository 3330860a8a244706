"""The Ray executor on a local cluster of 2 CPUs (started once for the module): the same bytes as
the local pool, a SIGKILLed worker retried with no sample lost or duplicated, the bench's Ray rows
and merge cost; without Ray the flag exits 2 saying how to install it."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest

from preprocess.cli import main as preprocess_main
from preprocess.ray_exec import LOCAL_OBJECT_STORE_BYTES, MAX_CHUNK, chunk_size
from tests.preprocess.conftest import BUILD_ARGS
from tests.preprocess.test_parts import assert_same_dataset, merge_args, part_args


def ray_build_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    """The per-sample stage on Ray; the assembly inline (one local worker)."""
    args = ["build", "--manifest", str(manifest), "--out", str(out), *BUILD_ARGS]
    return [*args, "--workers", "1", "--executor", "ray", *extra]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[ModuleType]:
    """One local cluster for the module (its start costs seconds); the builds join it."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
    )
    yield ray
    ray.shutdown()


def test_chunks_are_small_and_about_four_per_cpu() -> None:
    assert chunk_size(24, 2) == 3
    assert chunk_size(1, 8) == 1
    assert chunk_size(2_000_000, 64) == MAX_CHUNK


def test_without_ray_the_executor_exits_2_with_the_install_hint(
    synth_raw: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "never"
    assert preprocess_main(ray_build_args(synth_raw, out)) == 2
    err = capsys.readouterr().err
    assert "pip install 'inforeg-trainer[ray]'" in err and "--executor ray needs Ray" in err
    assert not out.exists()


def test_ray_build_equals_the_local_build(
    ray_cluster: ModuleType, synth_raw: Path, synth_built: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    assert preprocess_main(ray_build_args(synth_raw, out)) == 0
    assert_same_dataset(out, synth_built)


def test_a_part_on_ray_and_a_part_on_the_local_pool_merge_into_the_build(
    ray_cluster: ModuleType, synth_raw: Path, synth_built: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    assert preprocess_main(part_args(synth_raw, out, 2, 0, "--executor", "ray")) == 0
    assert preprocess_main(part_args(synth_raw, out, 2, 1)) == 0
    assert preprocess_main(merge_args(out)) == 0
    assert_same_dataset(out, synth_built)


def _kill_first_task_worker(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a chunk of rows (a descendant of this process:
    the local cluster's raylet starts the workers)."""
    while not stop.is_set():
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.cmdline()[:1] == ["ray::_run_chunk"]:
                    proc.kill()
                    killed.append(proc.pid)
                    return
            except psutil.Error:
                continue
        time.sleep(0.002)


@pytest.mark.timeout(300)
def test_a_killed_ray_worker_is_retried_and_no_sample_is_lost_or_duplicated(
    ray_cluster: ModuleType, synth_raw: Path, synth_built: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_task_worker, args=(killed, stop))
    killer.start()
    try:
        assert preprocess_main(ray_build_args(synth_raw, out)) == 0
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1, "no worker was caught running a task"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == "zombie"
    assert_same_dataset(out, synth_built)  # every sample once, the same bytes


def test_bench_reports_ray_rows_and_the_merges_cost(
    ray_cluster: ModuleType, synth_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = tmp_path / "bench.json"
    args = ["bench", "--manifest", str(synth_raw), "--workers", "1", "--frame-size", "32"]
    args += ["--executors", "local,ray", "--merge-parts", "2", "--json", str(figures)]
    assert preprocess_main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("workers  clips  process_s  clips/s")
    assert lines[3].startswith("parts  workers  build_s  parts_s  merge_s  merge/build")
    local, ray, merged = json.loads(figures.read_text())
    assert (local["executor"], ray["executor"]) == ("local", "ray")
    assert local["clips"] == ray["clips"] == 24 and ray["clips_per_s"] > 0 and ray["cpu_s"] > 0
    assert merged["kind"] == "merge" and merged["parts"] == 2 and merged["identical"] is True
    assert merged["merge_s"] > 0 and merged["build_s"] > 0
