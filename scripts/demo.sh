#!/usr/bin/env bash
# The README demo: set up .venv (the runtime only, no test tools), then run the data pipeline
# and train the tiny model on the multilingual sample corpus shipped in the package, on CPU.
#   1. alia-data tokenize  sample corpus -> Megatron indexed shards, one per language
#   2. alia-data mixture   planned language shares (es/ca/eu/gl 2x, code 0.5x)
#   3. alia-train          +model=tiny on those shards (200 steps), run dir runs/demo; the shards'
#                          data config (PREFIX.data.yaml) is selected with --config-dir, data=NAME
#   4. alia-report         plots and report.md in runs/demo/report
# Extra arguments are passed to alia-train (e.g. train.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh  # no extras: the demo needs none
bin=.venv/bin
sample=src/alia_train/sample_data
run_dir=runs/demo
mkdir -p "$run_dir"

"$bin/alia-data" tokenize --input "$sample/corpus" --tokenizer "$sample/tokenizer.model" \
    --output-prefix "$run_dir/shards/sample"
# tokenize wrote the shards as a data config too: use it as a config group of our own.
mkdir -p "$run_dir/confs/data"
cp "$run_dir/shards/sample.data.yaml" "$run_dir/confs/data/demo_shards.yaml"
"$bin/alia-data" mixture --config-dir "$run_dir/confs" data=demo_shards --tokens $((200 * 8 * 128))
"$bin/alia-train" --config-dir "$run_dir/confs" +model=tiny data=demo_shards "data.split='95,5,0'" \
    run.dir="$run_dir" train.eval_interval=50 logging.interval=10 "$@"
"$bin/alia-report" "$run_dir"
