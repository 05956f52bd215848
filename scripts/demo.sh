#!/usr/bin/env bash
# The README demo: set up .venv, then run the data pipeline and train the tiny model on the
# multilingual sample corpus shipped in the package, on CPU.
#   1. alia-data tokenize  sample corpus -> Megatron indexed shards, one per language
#   2. alia-data mixture   planned language shares (es/ca/eu/gl 2x, code 0.5x)
#   3. alia-train          +model=tiny on those shards (200 steps), run dir runs/demo
#   4. alia-report         plots and report.md in runs/demo/report
# Extra arguments are passed to alia-train (e.g. train.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bin=.venv/bin
sample=src/alia_train/sample_data
run_dir=runs/demo
mkdir -p "$run_dir"

"$bin/alia-data" tokenize --input "$sample/corpus" --tokenizer "$sample/tokenizer.model" \
    --output-prefix "$run_dir/shards/sample"
"$bin/alia-data" mixture "$run_dir/shards/sample.stats.json" --tokens $((200 * 8 * 128))

# The shards as data.sources overrides, read from the stats file tokenize wrote.
sources=$("$bin/python" - "$run_dir/shards/sample.stats.json" <<'PY'
import json, sys
outputs = json.load(open(sys.argv[1]))["outputs"]
print("[" + ",".join(f"{{path:'{o['path']}',lang:{lang}}}" for lang, o in sorted(outputs.items())) + "]")
PY
)
"$bin/alia-train" +model=tiny run.dir="$run_dir" data.use_sample=false "data.sources=$sources" \
    train.eval_interval=50 logging.interval=10 "$@"
"$bin/alia-report" "$run_dir"
