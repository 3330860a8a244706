"""A fake machine for the set-up and GPU-check scripts: an `nvidia-smi` that sees a GPU (or
none), a `.venv/bin/python` that runs the real interpreter over a fake `torch` package, and a
`pip` that records what it was asked and "installs" torch by rewriting that package (the CUDA
build from an index URL holding "cu", else the CPU one). Nothing is downloaded."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

FAKE_PIP = """
import pathlib, sys
args = sys.argv[1:]
here = pathlib.Path(sys.argv[0])
log, site = here.with_name("pip.log"), here.parent.parent / "site"
with log.open("a") as f:
    f.write(" ".join(args) + "\\n")
sys.path.insert(0, str(site.parent))
from fake_torch import write_torch, remove_torch
if args[:1] == ["uninstall"] and "torch" in args:
    remove_torch(site)
elif args[:1] == ["install"]:
    for a in args:
        if a.startswith("torch=="):
            url = " ".join(args)
            write_torch(site, a.split("==")[1], cuda="/cu" in url)
"""

FAKE_TORCH = """
import shutil


def write_torch(site, version, cuda):
    pkg = site / "torch"
    pkg.mkdir(parents=True, exist_ok=True)
    local = "+cu130" if cuda else "+cpu"
    (pkg / "__init__.py").write_text(
        f"__version__ = {version + local!r}\\nfrom torch import cuda, version\\n"
    )
    (pkg / "version.py").write_text(f"cuda = {'13.0' if cuda else None!r}\\n")
    (pkg / "cuda.py").write_text(f"def is_available():\\n    return {cuda!r}\\n")


def remove_torch(site):
    shutil.rmtree(site / "torch", ignore_errors=True)
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def fake_venv(root: Path, torch_version: str | None, cuda: bool = False) -> Path:
    """root/venv with bin/python, bin/pip.log, a fake torch (None: none) and a fake DeepSpeed CPU
    op builder in root/venv/site. Returns the venv folder."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    site = venv / "site"
    (venv / "fake_torch.py").write_text(FAKE_TORCH)
    op = site / "deepspeed" / "ops" / "op_builder"
    op.mkdir(parents=True)
    for d in (site / "deepspeed", site / "deepspeed" / "ops", op):
        (d / "__init__.py").write_text("")
    (op / "cpu.py").write_text(
        "class ShareMemCommBuilder:\n    def load(self, verbose=False):\n        return None\n"
    )
    (venv / "bin" / "fake_pip.py").write_text(FAKE_PIP)
    _executable(
        venv / "bin" / "python",
        "#!/usr/bin/env bash\n"
        'here=$(cd "$(dirname "$0")" && pwd)\n'
        'if [[ "$1" == -m && "$2" == pip ]]; then\n'
        f'    exec {sys.executable} "$here/fake_pip.py" "${{@:3}}"\n'
        "fi\n"
        f'PYTHONPATH="$here/../site" exec {sys.executable} "$@"\n',
    )
    if torch_version is not None:
        sys.path.insert(0, str(venv))
        try:
            from fake_torch import write_torch  # type: ignore[import-not-found]
        finally:
            sys.path.remove(str(venv))
            sys.modules.pop("fake_torch", None)
        write_torch(site, torch_version, cuda)
    return venv


def fake_nvidia_smi(root: Path, sees_gpu: bool) -> Path:
    """A folder holding an `nvidia-smi` whose -L lists one H200 (or no device)."""
    bin_dir = root / "smi"
    bin_dir.mkdir(parents=True, exist_ok=True)
    line = "GPU 0: NVIDIA H200 (UUID: GPU-00000000-fake)" if sees_gpu else "No devices were found"
    _executable(bin_dir / "nvidia-smi", f"#!/bin/sh\necho '{line}'\n")
    return bin_dir


def env_with(path_first: Path | None, **extra: str) -> dict[str, str]:
    """This process's environment without a real nvidia-smi's folder in front, plus `extra`."""
    env = {**os.environ, **extra}
    if path_first is not None:
        env["PATH"] = f"{path_first}:{env['PATH']}"
    return env
