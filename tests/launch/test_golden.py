"""The golden run: a fixed tiny config whose every step loss and final weights are checked in.

InfoReg regulating every step, one process, one thread, fp32, on the tiny synthetic set (built
byte-identically for its seed). `data/golden.json` holds the values the trainer produced before
the package re-layout; a refactor that changes any number (an op order, a seed, a default) fails
here loudly. A deliberate change of numbers rewrites that file in the same commit, saying why.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from launch.records import read_run
from launch.train import main as train_main
from tests.launch.conftest import train_args

GOLDEN = Path(__file__).parent / "data" / "golden.json"


def weights_sha256(path: Path) -> str:
    """sha256 over each tensor's name and bytes, in state_dict order."""
    state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
    digest = hashlib.sha256()
    for name, value in state.items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.timeout(300)
def test_golden_losses_and_weights(tiny_shards: Path, tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    out = tmp_path / "golden"
    assert train_main(train_args(tiny_shards, out, *golden["overrides"])) == 0
    losses = [s.loss for s in read_run(out / "metrics.jsonl").steps]
    assert losses == golden["losses"]  # exact: the same ops in the same order
    assert weights_sha256(out / "last_model.pt") == golden["weights_sha256"]
