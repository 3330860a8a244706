#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): every GPU path of the project once, on one CUDA device, as
# one table; well under 10 minutes on one GPU. Exit 0 when every check that ran passed, or when
# the machine has no GPU (it says so); 1 when a check failed, or when nvidia-smi lists a GPU that
# torch cannot use (a CPU torch: a GPU node never passes with nothing checked).
#
#   scripts/gpu_check.sh                      # from a checkout: .venv/bin/python, else python3
#   BUNDLE=dist/gpu-bundle scripts/gpu_check.sh
#   bash gpu-bundle/gpu_check.sh              # on an offline node, from the unpacked bundle
#
# With a bundle (scripts/gpu_bundle.sh; BUNDLE, or the folder this script is in when it holds
# wheels/), its wheels are installed into a temporary folder put first on PYTHONPATH, and the
# node's own python3 (PYTHON overrides) runs the check: nothing is installed into the node's
# Python, nothing is fetched. Arguments are passed on (--only NAME,..., --json PATH, --list).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

BUNDLE=${BUNDLE:-}
if [[ -z "$BUNDLE" && -d "$here/wheels" ]]; then
    BUNDLE=$here
fi

if [[ -n "$BUNDLE" ]]; then
    PYTHON=${PYTHON:-$(command -v python3)}
    shopt -s nullglob
    wheels=("$BUNDLE"/wheels/*.whl)
    if ((${#wheels[@]} == 0)); then
        echo "gpu check: no wheels in $BUNDLE/wheels (make the bundle with scripts/gpu_bundle.sh)" >&2
        exit 2
    fi
    site=$(mktemp -d "${TMPDIR:-/tmp}/inforeg-gpu-site.XXXXXX")
    trap 'rm -rf "$site"' EXIT
    if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
        --target "$site" "${wheels[@]}" 2>"$site.pip.log"; then
        # no pip on the node: a wheel is a zip archive laid out for site-packages
        for w in "${wheels[@]}"; do "$PYTHON" -m zipfile -e "$w" "$site" || exit 2; done
    fi
    rm -f "$site.pip.log"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONSAFEPATH=1  # the bundle's code, never a checkout's in the caller's folder
else
    root=$(cd "$here/.." && pwd)
    cd "$root" || exit 2
    PYTHON=${PYTHON:-.venv/bin/python}
    [[ -x "$PYTHON" ]] || PYTHON=$(command -v python3)
    export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi

"$PYTHON" -m bench.gpu_check "$@"
