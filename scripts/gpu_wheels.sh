#!/usr/bin/env bash
# Fill .whl/ with every wheel the GPU check (scripts/gpu_check.sh) needs beyond torch and numpy,
# for the GPU machine: CPython 3.12, Linux x86_64 (manylinux). A bare PyTorch GPU image has
# torch and numpy only, and often no network: gpu_check.sh installs these with --no-index.
#
#   bash scripts/gpu_wheels.sh [DIR]          # default DIR: .whl
#
# What: the requirements of the check's own imports (megatron-core, hydra-core, sentencepiece,
# psutil, PyYAML, pytest, and transformers for the baseline), with everything they need, minus
# torch, numpy and what they need. The list and versions come from this checkout's .venv
# (scripts/setup.sh dev), so the GPU runs the versions the CPU suite tested. Wheels the registry
# lacks (antlr4-python3-runtime ships a source archive only) are built here: pure Python.
# The result is ~30 MB, under the device tool's 64 MiB for what a call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
py=${ALIA_VENV_PYTHON:-.venv/bin/python}
if [ ! -x "$py" ]; then
    echo "gpu_wheels: $py not found; run 'bash scripts/setup.sh dev' first (the versions come from it)" >&2
    exit 1
fi
mkdir -p "$dir"
rm -f "$dir"/*.whl

# name==version of each distribution to carry, from the venv's metadata.
mapfile -t pins < <("$py" - <<'EOF'
import sys

sys.path.insert(0, "scripts/ci")
from bare_torch_python import closure  # torch and numpy with what they require: the bare image

ROOTS = ["megatron-core", "hydra-core", "sentencepiece", "psutil", "pyyaml", "pytest", "transformers"]
bare = {dist.metadata["Name"].lower() for dist in closure()}
for dist in sorted(closure(ROOTS), key=lambda d: d.metadata["Name"].lower()):
    if dist.metadata["Name"].lower() not in bare:
        print(f"{dist.metadata['Name']}=={dist.version}")
EOF
)

platforms=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
    manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
    platforms+=(--platform "$p")
done
for pin in "${pins[@]}"; do
    if ! "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --abi cp312 --abi abi3 --abi none "${platforms[@]}" -d "$dir" "$pin" 2>/dev/null; then
        # No wheel on the registry: build one here (pure-Python projects only; a compiled one
        # built here would not match the GPU machine, so it is refused below).
        "$py" -m pip wheel -q --no-deps -w "$dir" "$pin" 2>/dev/null || {
            echo "gpu_wheels: no wheel for $pin and none could be built" >&2
            exit 1
        }
    fi
done
for whl in "$dir"/*.whl; do
    case $(basename "$whl") in
        *-none-any.whl | *cp312*manylinux*x86_64*.whl | *abi3*manylinux*x86_64*.whl) ;;
        *) echo "gpu_wheels: $(basename "$whl") is not for CPython 3.12 on Linux x86_64" >&2; exit 1 ;;
    esac
done
echo "gpu_wheels: ${#pins[@]} wheels in $dir ($(du -sh "$dir" | cut -f1)): ${pins[*]}"
