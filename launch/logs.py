"""Run logs on rank 0: ``metrics.jsonl`` (its schema: `launch.records`), TensorBoard, a bar.

On resume, the file is cut back to its length when the checkpoint was taken, so records written
after that point by the killed run are not duplicated; TensorBoard purges the same steps.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from launch.records import Record, dumps


class RunLog:
    """Writes on rank 0 only; a no-op elsewhere."""

    def __init__(self, out_dir: Path, is_main: bool, resume_offset: int | None, resume_step: int):
        self.is_main = is_main
        self.path = out_dir / "metrics.jsonl"
        self._file = None
        self._tb: Any = None
        self._bar: Any = None
        if not is_main:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume_offset is None:
            self.path.write_text("")
        else:
            with self.path.open("r+b") as f:
                f.truncate(resume_offset)
        self._file = self.path.open("a", encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(
            str(out_dir / "tensorboard"), purge_step=resume_step if resume_offset else None
        )

    def offset(self) -> int:
        """Bytes of metrics.jsonl written so far (stored in checkpoints)."""
        if self._file is None:
            return 0
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def write(self, record: Record, tb_step: int) -> None:
        if self._file is None:
            return
        self._file.write(dumps(record) + "\n")
        self._file.flush()
        flat = record.to_json()
        kind = flat["kind"]
        for key, value in flat.items():
            if isinstance(value, dict):  # phases: one scalar each, step/phases/<phase>
                for name, v in value.items():
                    self._scalar(f"{kind}/{key}/{name}", v, tb_step)
            elif key not in ("kind", "epoch", "step"):
                self._scalar(f"{kind}/{key}", value, tb_step)

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            return
        self._tb.add_scalar(tag, float(value), step)

    def progress(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        if self.is_main and enabled:
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def show_rate(self, samples_per_s: float | None) -> None:
        """The bar's samples/s: the last step record's (all ranks), shown beside batches/s."""
        if self._bar is not None and samples_per_s is not None:
            self._bar.set_postfix(samples_per_s=f"{samples_per_s:.1f}", refresh=False)

    def end_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self.end_progress()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
