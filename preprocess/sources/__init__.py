"""Sources: a dataset's original layout -> manifest rows (`inforeg-preprocess manifest <source>`).

Each source module reads one dataset's own folder structure and writes `manifest.csv` into an output
folder; media paths in it are relative to that folder, so the source data is read in place.
"""

from __future__ import annotations

import os
from pathlib import Path


def relative_to(path: Path, folder: Path) -> str:
    """`path` relative to `folder` (with `..` as needed), POSIX separators, for a manifest cell."""
    return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
