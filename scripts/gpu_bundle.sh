#!/usr/bin/env bash
# The bundle that runs the GPU check on an offline CUDA node whose python3 (3.12) already has a
# CUDA torch, Triton and numpy: made here, on a connected machine, carried there as one file.
#
#   scripts/gpu_bundle.sh [OUT]          # default OUT=dist/gpu-bundle; also OUT.tar
#
# OUT/wheels/ holds this project as a wheel, DeepSpeed (built here from its source release,
# pure Python: its ops are compiled on first use, and the check uses none) and every other
# package the checks import, for CPython 3.12 on manylinux x86-64, at the versions this
# checkout's .venv has (so what the tests ran is what the node runs). torch, Triton and numpy
# are the node's own; DALI and FFCV are not in the bundle (their checks say "not run").
# OUT/gpu_check.sh runs the check from the unpacked bundle. The bundle must stay under 64 MiB;
# its size is printed and checked.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-dist/gpu-bundle}
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || PY=$(command -v python3)
LIMIT_MIB=64
# What the checks import beyond torch, Triton and numpy (bench/, inforeg/, pipelines.contract,
# launch's DeepSpeed glue and its imports), with their own dependencies.
PACKAGES=(
    hjson msgpack ninja packaging psutil py-cpuinfo pydantic pydantic-core annotated-types
    typing-inspection typing-extensions tqdm einops pyyaml
    matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six pillow
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux_2_5_x86_64 manylinux1_x86_64)

version_of() {  # the version this checkout's environment has
    "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"
}

rm -rf "$OUT" "$OUT.tar"
mkdir -p "$OUT/wheels"
pip_quiet=(-q --disable-pip-version-check)

# 1. the project (pure Python)
"$PY" -m pip wheel "${pip_quiet[@]}" --no-deps --no-build-isolation -w "$OUT/wheels" .
# 2. DeepSpeed: a source release only; its build needs torch, hence no build isolation
ds_version=$(version_of deepspeed)
DS_BUILD_OPS=0 "$PY" -m pip wheel "${pip_quiet[@]}" --no-deps --no-build-isolation \
    -w "$OUT/wheels" "deepspeed==$ds_version"
# 3. the rest, as CPython 3.12 manylinux wheels (pure-Python ones fit any platform)
pins=()
for pkg in "${PACKAGES[@]}"; do pins+=("$pkg==$(version_of "$pkg")"); done
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
"$PY" -m pip download "${pip_quiet[@]}" --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${platform_args[@]}" \
    -d "$OUT/wheels" "${pins[@]}"

cp scripts/gpu_check.sh "$OUT/gpu_check.sh"
(cd "$OUT/wheels" && sha256sum ./*.whl | sed 's| \./| |') >"$OUT/SHA256SUMS"
cat >"$OUT/README.txt" <<EOF
InfoReg GPU check bundle ($(git rev-parse --short HEAD 2>/dev/null || echo "no git"), made $(date -u +%F)).
On the GPU node (python3 with a CUDA torch, Triton and numpy; no network needed):
    tar xf gpu-bundle.tar && bash gpu-bundle/gpu_check.sh
Exit 0: every check that ran passed (or no GPU); 1: a check failed, or torch cannot see the GPU.
wheels/: $(ls "$OUT/wheels" | wc -l) wheels, SHA256SUMS beside this file.
EOF
tar -C "$(dirname "$OUT")" -cf "$OUT.tar" "$(basename "$OUT")"

bytes=$(stat -c %s "$OUT.tar")
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "gpu bundle: $OUT.tar, $mib MiB ($(ls "$OUT/wheels" | wc -l) wheels):"
(cd "$OUT/wheels" && ls -S | while read -r w; do printf '  %8s  %s\n' "$(du -h "$w" | cut -f1)" "$w"; done)
if ((bytes >= LIMIT_MIB * 1048576)); then
    echo "gpu bundle: $mib MiB is over the $LIMIT_MIB MiB limit" >&2
    exit 1
fi
