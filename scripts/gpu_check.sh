#!/usr/bin/env bash
# The GPU check: everything only a GPU can show, in one call of under 10 minutes.
#
#   bash scripts/gpu_check.sh [OUT_DIR]
#
# 1. installs what the machine lacks from wheels carried in .whl/ (if that folder exists),
# 2. runs the tests marked `gpu` (NCCL, bf16 vs fp32 numerics, SDPA on a fused kernel, a short run),
# 3. benchmarks/train_levers.py: salamandra_2b (full size, local layers, bf16) at seq 4096 and
#    8192 with every speed lever on, next to transformers' LlamaForCausalLM, then each lever off
#    in turn at seq 4096; tokens/s, MFU (ours and PaLM's) and peak memory; at most
#    LEVERS_BUDGET_S seconds (default 330), the runs that did not fit are listed;
# 4. alia-plan's memory estimate for the seq 4096 run.
# Figures go to stdout and OUT_DIR (default: gpu_check_out/): gpu_tests.log, levers.log,
# levers.json, levers.md (rows for docs/performance.md), plan.log.
#
# Wheels: megatron-core, hydra-core, omegaconf and antlr4-python3-runtime are what a bare
# PyTorch GPU image usually lacks; fetch them elsewhere with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       megatron-core==0.19.2 hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
py=${PYTHON:-python3}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/alia-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/alia-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
"$py" -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU visible"; print("gpu:", torch.cuda.get_device_name())' || exit 1

status=0
echo "== tests marked gpu"
"$py" -m pytest -m gpu tests/gpu -q -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log" || status=1

echo "== salamandra_2b, every lever on and each one off (benchmarks/train_levers.py)"
"$py" benchmarks/train_levers.py --out "$out" --budget-s "${LEVERS_BUDGET_S:-330}" || status=1

shape=(+model=salamandra_2b train.seq_length=4096 train.micro_batch_size=1 train.global_batch_size=8
       parallel.distributed_optimizer=false train.recompute=none model.layer_impl=local)

echo "== alia-plan's estimate for the seq 4096 run (one GPU)"
"$py" -m alia_train.cli.plan "${shape[@]}" cluster.nodes=1 cluster.gpus_per_node=1 \
    cluster.gpu_memory_gb="$("$py" -c 'import torch; print(round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))')" \
    2>&1 | tee "$out/plan.log"
exit $status
