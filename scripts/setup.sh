#!/usr/bin/env bash
# Idempotent set-up: Debian packages, .venv, torch (explicitly), the project and its pinned stack,
# DeepSpeed's CPU communication op pre-built. A second run checks a stamp and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
TORCH_VERSION=2.13.0
# ffcv compiles against OpenCV and libjpeg-turbo (found through pkg-config), ffcv and DeepSpeed's CPU op
# need a C++ compiler and Python's headers; the venv needs Debian's venv module.
APT_PACKAGES=(pkg-config libturbojpeg0-dev libopencv-dev build-essential python3-dev python3-venv)
STAMP="$VENV/.setup-stamp"

# The torch build this machine needs: CUDA where an NVIDIA driver sees a GPU, else CPU. It is part
# of the stamp, so a set-up done before the driver was visible (or on a CPU node sharing this
# .venv) never passes for a GPU one.
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    TORCH_VARIANT=cuda
else
    TORCH_VARIANT=cpu
fi

want_stamp() {
    { cat pyproject.toml scripts/setup.sh; echo "torch: $TORCH_VARIANT"; } | sha256sum | cut -d' ' -f1
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(want_stamp)" ]]; then
    echo "setup: up to date ($VENV)"
    exit 0
fi

# 1. Debian packages (APT_PACKAGES above).
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. The virtual environment.
if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null || PYTHON=python3
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools wheel

# 3. torch first and explicitly: the CPU wheel where no NVIDIA driver sees a GPU, else the CUDA build
#    (TORCH_INDEX_URL, default https://download.pytorch.org/whl/cu130, selects the wheel index;
#    TORCH_CPU_INDEX_URL the CPU one). An installed torch counts only if it is the pinned version
#    AND, on a GPU machine, a CUDA build: pip itself takes 2.13.0+cpu as satisfying torch==2.13.0.
have_torch() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$TORCH_VARIANT" 2>/dev/null <<'PY'
import sys
import torch
version, variant = sys.argv[1:]
same = torch.__version__.split("+")[0] == version
sys.exit(0 if same and (variant == "cpu" or torch.version.cuda is not None) else 1)
PY
}
if ! have_torch; then
    if [[ "$TORCH_VARIANT" == cuda ]]; then
        # whatever build an earlier set-up left (a +cpu wheel of the pinned version) goes first
        "$VENV/bin/python" -m pip uninstall -y -q torch 2>/dev/null || true
        "${PIP[@]}" "torch==$TORCH_VERSION" --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu130}"
        have_torch || { echo "setup: a GPU is visible but the torch installed is not a CUDA build" \
            "(TORCH_INDEX_URL=${TORCH_INDEX_URL:-default})" >&2; exit 1; }
    else
        # PyPI's default Linux torch wheel is the CUDA build (several GB); PyTorch's CPU index holds
        # the CPU wheel (2.13.0+cpu, preferred by pip over 2.13.0). Where that index is unreachable
        # (a mirror-only network), pip's configured sources decide, e.g. a local CPU wheel.
        cpu_index="${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
        if "$VENV/bin/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
            "$cpu_index/torch/" 2>/dev/null; then
            "${PIP[@]}" "torch==$TORCH_VERSION" --extra-index-url "$cpu_index"
        else
            "${PIP[@]}" "torch==$TORCH_VERSION"
        fi
    fi
fi

# 4. The project, editable, with the pinned stack, the dev tools and Ray (the preprocessing's
#    optional executor).
"${PIP[@]}" -e ".[dev,ray]"

# 5. DeepSpeed JIT-compiles its shared-memory communication op on the first initialize of a CPU run
#    (~20-100 s); build it once here so tests and the demo load it from the extension cache.
"$VENV/bin/python" - <<'PY'
import time
import torch
t = time.time()
if not torch.cuda.is_available():
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder
    ShareMemCommBuilder().load(verbose=False)
print(f"setup: DeepSpeed CPU ops ready ({time.time() - t:.1f} s)")
PY

want_stamp >"$STAMP"
echo "setup: done ($VENV)"
