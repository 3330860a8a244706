"""The trainer as a user runs it: `deepspeed` / `torchrun` launches of launch/train.py on CPU.

Each launch trains a tiny model for a couple of epochs on a tiny built synthetic set (2 ranks,
gloo), then the run folder is checked: exit code, metrics.jsonl against its schema and METHOD.md
(`launch.audit`), the report files, and parameters across runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from launch.records import read_records
from launch.train import main as train_main
from studies.audit import audit_run
from tests.conftest import free_port
from tests.launch.conftest import BIN, ROOT, clean_env, run_deepspeed, train_args

TIME_KEYS = {"samples_per_s", "data_wait_frac", "epoch_time_s", "phases", "tflops", "mfu"}


def assert_ok(proc: subprocess.CompletedProcess[str], out: Path) -> list[dict]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert audit_run(out) == []
    for name in ("summary.json", "information.png", "alpha.png", "accuracy.png", "last_model.pt"):
        assert (out / name).is_file(), name
    assert "epoch" in proc.stdout and "information:" in proc.stdout  # the terminal table
    return read_records(out / "metrics.jsonl")


def weights(out: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(out / "last_model.pt", weights_only=True)
    return state


def without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


GREEDY = ["regulator.name=greedy", "model.fusion=mmtm", "regulator.greedy_starting_epoch=0"]
"""Greedy with its windows from the first step (its MMTM gates cut, its state moving)."""


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("method", "stages"),
    [
        (["regulator.name=inforeg", "regulator.schedule=always"], ("zero0", "zero1", "zero2")),
        (GREEDY, ("zero0", "zero1", "zero2")),
    ],
    ids=["inforeg", "greedy"],
)
def test_zero_stages_give_the_same_parameters(
    tiny_shards: Path, tmp_path: Path, method: list[str], stages: tuple[str, ...]
) -> None:
    """A method regulating from the first step in fp32: the ZeRO stages agree."""
    runs = {}
    for zero in stages:
        out = tmp_path / zero
        args = train_args(tiny_shards, out, *method)
        records = assert_ok(run_deepspeed([*args, "run.epochs=2"], zero=zero), out)
        assert any(r.get("regulated.audio") or r.get("regulated.video") for r in records)
        runs[zero] = weights(out)
    for zero in stages[1:]:
        for name, value in runs["zero0"].items():
            # Stated tolerance: 1e-6 absolute + 1e-5 relative (the stages reduce gradients with
            # different collectives; on 2 ranks they were bit-identical when measured).
            torch.testing.assert_close(runs[zero][name], value, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("method", "zero"), [("joint", "zero2,bf16"), ("ogm_ge", "zero2")])
def test_baselines_on_two_ranks_with_zero2(
    tiny_shards: Path, tmp_path: Path, method: str, zero: str
) -> None:
    out = tmp_path / method
    records = assert_ok(
        run_deepspeed(
            [*train_args(tiny_shards, out, f"regulator.name={method}"), "run.epochs=2"],
            zero=zero,
        ),
        out,
    )
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 1]


@pytest.mark.timeout(300)
def test_inforeg_star_under_torchrun(tiny_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "star"
    args = train_args(
        tiny_shards, out, "regulator.name=inforeg", "regulator.unimodal_loss=true", "run.epochs=3"
    )
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())]
    cmd += [str(ROOT / "launch" / "train.py"), "--deepspeed_config"]
    cmd += [str(ROOT / "deepspeed_configs" / "zero1.json"), *args]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=280, env=clean_env()
    )
    records = assert_ok(proc, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["regulator"]["unimodal_loss"] is True
    assert len([r for r in records if r["kind"] == "epoch"]) == 3


@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", [["regulator.name=inforeg"], GREEDY], ids=["inforeg", "greedy"])
def test_killed_run_resumes_to_the_same_result(
    tiny_shards: Path, tmp_path: Path, method: list[str]
) -> None:
    """SIGKILL mid-run, then --resume auto: the same parameters (bit-identical) and metrics."""
    common = [*method, "run.epochs=4", "run.checkpoint_every=1"]
    whole = tmp_path / "whole"
    whole_records = assert_ok(run_deepspeed(train_args(tiny_shards, whole, *common)), whole)

    killed = tmp_path / "killed"
    cmd = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port())]
    cmd += [str(ROOT / "launch" / "train.py"), "--deepspeed_config"]
    cmd += [
        str(ROOT / "deepspeed_configs" / "zero0.json"),
        *train_args(tiny_shards, killed, *common),
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=clean_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    latest = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.is_file() and int(latest.read_text().split("-")[1]) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().split("-")[1])
    total_steps = max(r["step"] for r in whole_records if r["kind"] == "step") + 1
    assert killed_at < total_steps

    resumed = run_deepspeed([*train_args(tiny_shards, killed, *common), "--resume", "auto"])
    assert "resuming from step-" in resumed.stdout
    resumed_records = assert_ok(resumed, killed)
    assert without_time(resumed_records) == without_time(whole_records)
    for name, value in weights(whole).items():
        assert torch.equal(weights(killed)[name], value), name


@pytest.mark.timeout(300)
def test_two_nodes_on_one_machine(tiny_shards: Path, tmp_path: Path) -> None:
    """Two launcher invocations (--num_nodes 2 --node_rank 0|1 --no_ssh), one rank each, as
    `scripts/two_nodes.sh` (the shipped script) starts them."""
    out = tmp_path / "nodes"
    args = train_args(tiny_shards, out, "regulator.name=inforeg", "run.epochs=2")
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "two_nodes.sh"), *args],
        cwd=ROOT,
        env={**clean_env(), "MASTER_PORT": str(free_port())},
        text=True,
        capture_output=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "2 rank(s)" in run.stdout
    assert audit_run(out) == []


def test_bad_configuration_stops_before_training(
    tiny_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["run.epoch=1"], "unknown key(s): run.epoch"),
        (["data.dir=/nowhere"], "data.dir: /nowhere does not exist"),
        (["run.epochs=0"], "run.epochs must be >= 1"),
        (["data.batch_size=4096"], "data (pipeline ffcv"),
        (["model.encoders.depth.kind=cnn"], "not in the dataset"),
    ]
    for overrides, message in cases:
        args = train_args(tiny_shards, tmp_path / "bad", *overrides)
        assert train_main(args) == 2
        assert message in capsys.readouterr().err
    assert (
        train_main([*train_args(tiny_shards, tmp_path / "bad"), "--deepspeed_config", "x.json"])
        == 2
    )
    assert "x.json does not exist" in capsys.readouterr().err
    # a dataset folder built without the pipeline's format
    ffcv_only = tmp_path / "ffcv_only"
    ffcv_only.mkdir()
    info = json.loads((tiny_shards / "dataset.json").read_text())
    info["options"]["formats"] = ["ffcv"]
    (ffcv_only / "dataset.json").write_text(json.dumps(info))
    assert train_main(train_args(ffcv_only, tmp_path / "bad", "data.pipeline=dali")) == 2
    assert "data.pipeline=dali reads the 'dali' format" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.timeout(300)
def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tiny_shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "nan"
    args = train_args(tiny_shards, out, "optim.lr=1e12", "run.epochs=5", "run.checkpoint_every=1")
    proc = subprocess.run(
        [str(BIN / "python"), str(ROOT / "launch" / "train.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=280, env=clean_env(),
    )  # fmt: skip
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-3000:]
    found = re.search(r"non-finite (loss|parameters) at step (\d+)", proc.stderr)
    assert found, proc.stderr[-2000:]
    bad_step = int(found.group(2))
    tag = (out / "checkpoints" / "latest").read_text()
    assert int(tag.split("-")[1]) <= bad_step
    state = torch.load(out / "checkpoints" / tag / "trainer-rank0.pt", weights_only=False)
    assert state["step"] <= bad_step
