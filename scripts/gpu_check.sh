#!/usr/bin/env bash
# The GPU check: everything only a GPU can show, in one call of under 10 minutes.
#
#   bash scripts/gpu_wheels.sh                    # here, once: .whl/ (what a bare image lacks)
#   bash scripts/gpu_check.sh [OUT_DIR]           # on the GPU machine, carrying .whl/
#   bash scripts/gpu_check.sh --rehearse OUT_DIR  # the same, on the CPU (CI runs it)
#
# 1. refuses at once where torch sees no GPU; installs what the machine lacks from the wheels in
#    .whl/ (--no-index: a bare PyTorch image with torch and numpy only is enough) and checks that
#    everything the steps import is there;
# 2. runs the tests marked `gpu` (NCCL, bf16 vs fp32 numerics, SDPA on a fused kernel, a short
#    run of alia-train with its throughput figures);
# 3. benchmarks/train_levers.py: the salamandra_2b recipe (full size, local layers, bf16) with
#    every speed lever on, next to transformers' LlamaForCausalLM, then each lever off in turn,
#    then seq 8192; tokens/s, MFU (ours and PaLM's) and peak memory, each run's figures written
#    as soon as they are measured, at most LEVERS_BUDGET_S seconds (default 420);
# 4. alia-plan's memory estimate for the lever runs' shape (the same overrides).
# Figures go to stdout and OUT_DIR (default: gpu_check_out/): gpu_tests.log, levers.log,
# levers.json, levers.md (rows for docs/performance.md), plan.log.
#
# --rehearse runs every step above on the CPU: the same scripts, overrides and outputs, with the
# model shrunk in width and depth (and shorter sequences); the tests that need a GPU's kernels or
# NCCL say so and skip. Run it with PYTHON=<a Python with torch and numpy only> to rehearse the
# bare image (tests/gpu/test_rehearsal.py does, from a clean copy of the checkout): then the
# GPU call can only fail on what only a GPU can show.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
rehearse=0
if [ "${1:-}" = "--rehearse" ]; then
    rehearse=1
    shift
fi
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
started=$(date +%s)
note() { echo "== $* ($(($(date +%s) - started)) s)"; }

# torch alone decides whether there is a GPU: asked first, before any install.
if [ "$rehearse" = 1 ]; then
    "$py" -c 'import torch; print("rehearsal on the CPU; torch", torch.__version__)'
else
    "$py" -c '
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA GPU visible to torch {torch.__version__} (built for CUDA {torch.version.cuda}); "
             "an NVIDIA driver older than that CUDA needs hides the GPU: see docs/cluster.md")
print("gpu:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)' || exit 1
fi

if ls .whl/*.whl >/dev/null 2>&1; then
    site=$(mktemp -d "${TMPDIR:-/tmp}/alia-site.XXXXXX")
    trap 'rm -rf "$site"' EXIT  # 240 MB of installed wheels: gone with the check
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || {
        echo "gpu_check: installing .whl/ failed (two versions of one package? run scripts/gpu_wheels.sh again)" >&2
        exit 1
    }
    # Bytecode once, on every core: without it each process of the check compiles megatron and
    # transformers again (seconds per process where PYTHONDONTWRITEBYTECODE is set).
    "$py" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export ALIA_GPU_REHEARSAL=$rehearse

# Every module the steps below import, before any of them starts: a missing wheel is one line
# now, not a traceback minutes in.
"$py" - <<'EOF' || exit 1
import importlib, sys
missing = []
for name in ("torch", "numpy", "megatron.core", "hydra", "omegaconf", "yaml", "sentencepiece", "psutil",
             "pytest", "transformers", "alia_train.cli.train", "alia_train.cli.plan"):
    try:
        importlib.import_module(name)
    except Exception as e:  # ImportError, or a broken install raising something else
        missing.append(f"{name} ({type(e).__name__}: {e})")
if missing:
    sys.exit("gpu_check: cannot import " + "; ".join(missing) + " -- run scripts/gpu_wheels.sh here and carry .whl/")
EOF

status=0
note "tests marked gpu"
"$py" -m pytest -m gpu tests/gpu -q -p no:cacheprovider -p no:xdist 2>&1 | tee "$out/gpu_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

note "salamandra_2b, every lever on and each one off (benchmarks/train_levers.py)"
rehearse_flag=()
[ "$rehearse" = 0 ] || rehearse_flag=(--rehearse)
"$py" benchmarks/train_levers.py --out "$out" --budget-s "${LEVERS_BUDGET_S:-420}" "${rehearse_flag[@]}" || status=1

note "alia-plan's estimate for the lever runs' shape (one device)"
mapfile -t shape < <("$py" benchmarks/train_levers.py --print-shape "${rehearse_flag[@]}")
gib=80
[ "$rehearse" = 1 ] || gib=$("$py" -c 'import torch; print(round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))')
"$py" -m alia_train.cli.plan "${shape[@]}" cluster.nodes=1 cluster.gpus_per_node=1 cluster.gpu_memory_gb="$gib" \
    >"$out/plan.log" 2>&1
plan_status=$?
cat "$out/plan.log"
[ "$plan_status" -eq 0 ] || status=1
note "done, exit $status"
exit $status
