#!/bin/bash
# Tokenize a whole corpus on Slurm: an array of N tasks, then a merge job that depends on them.
#   SBATCH_ACCOUNT=<project> SBATCH_PARTITION=<partition> SBATCH_QOS=<qos> \
#     scripts/slurm/tokenize.sh --tokenizer tok.model --output DIR --tasks N [options] INPUT...
# Run it where sbatch works (a login node), not with sbatch. INPUT: files, directories or globs
# (quoted, alia-data expands them). It checks the request and writes DIR/plan.json (`alia-data
# tokenize --plan`: inputs split by size into N balanced tasks), submits the unfinished tasks as
# an array of scripts/slurm/tokenize_task.sh and the merge (scripts/slurm/tokenize_merge.sh,
# --dependency=afterany on the array), and prints both job ids. Logs: DIR/logs/.
# Resubmitting the same command after tasks failed, timed out or were cancelled submits only the
# unfinished ones, which go on from their last published shard set. See docs/data.md.
#
# Options (besides those three):
#   --lang L | --lang-key F | --lang-from-path RULE, --text-key F, --max-chars N, --set-bytes B,
#   --strict              as for alia-data tokenize
#   --force               replace a plan of other inputs or options in DIR
#   --max-running K       at most K array tasks at once (sbatch --array=...%K)
#   --sbatch OPT          an sbatch option for the array tasks, repeatable: --sbatch=--time=12:00:00
#   --merge-sbatch OPT    an sbatch option for the merge job, repeatable
# Account, partition and QoS are never written here: sbatch takes them from SBATCH_ACCOUNT /
# SBATCH_PARTITION / SBATCH_QOS, or give them with --sbatch (and --merge-sbatch).
# Knobs (environment, passed on to the jobs): ALIA_DATA_CMD (the alia-data command, default
# alia-data, else the checkout's .venv), ALIA_SITE_SETUP (sourced by the jobs, see common.sh).
set -euo pipefail

ALIA_SLURM_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
export ALIA_HOME="${ALIA_HOME:-$(cd -- "$ALIA_SLURM_DIR/../.." && pwd)}"

die() {
  echo "tokenize.sh: error: $*" >&2
  exit 2
}

absolute() {
  if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi
}

tokenizer='' output='' tasks='' max_running='' array=''
force=()
passed=() inputs=() task_sbatch=() merge_sbatch=()
while (($#)); do
  arg=$1
  value=
  if [[ $arg == --*=* ]]; then
    value=${arg#*=}
    arg=${arg%%=*}
  elif [[ $arg == --* && $arg != --strict && $arg != --force ]]; then
    (($# >= 2)) || die "$arg needs a value"
    value=$2
    shift
  fi
  shift
  case $arg in
    --tokenizer) tokenizer=$(absolute "$value") ;;
    --output) output=$(absolute "$value") ;;
    --tasks) tasks=$value ;;
    --force) force=(--force) ;;
    --max-running) max_running=$value ;;
    --sbatch) task_sbatch+=("$value") ;;
    --merge-sbatch) merge_sbatch+=("$value") ;;
    --strict) passed+=(--strict) ;;
    --lang | --lang-key | --lang-from-path | --text-key | --max-chars | --set-bytes) passed+=("$arg" "$value") ;;
    --*) die "unknown option $arg (see the head of $0)" ;;
    *) inputs+=("$(absolute "$arg")") ;;
  esac
done
[[ -n $tokenizer && -n $output && -n $tasks ]] || die "give --tokenizer MODEL --output DIR --tasks N, then the inputs"
((${#inputs[@]})) || die "no inputs: give files, directories or globs after the options"
[[ $tasks =~ ^[1-9][0-9]*$ ]] || die "--tasks $tasks: expected a positive number"

if [[ -z ${ALIA_DATA_CMD:-} ]] && ! command -v alia-data >/dev/null && [[ -x $ALIA_HOME/.venv/bin/alia-data ]]; then
  export ALIA_DATA_CMD=$ALIA_HOME/.venv/bin/alia-data
fi
read -r -a alia_data <<<"${ALIA_DATA_CMD:-alia-data}"
request=(--input "${inputs[@]}" --tokenizer "$tokenizer" --output-dir "$output" --tasks "$tasks" "${passed[@]}")

# The plan: every check before anything is queued (inputs, tokenizer, fields); the unfinished
# tasks come back on stdout as an --array list ("" when all are finished).
todo=$("${alia_data[@]}" tokenize "${request[@]}" --plan "${force[@]}") || exit $?
mkdir -p "$output/logs"

merge_after=()
if [[ -n $todo ]]; then
  array=$(sbatch --parsable --array="$todo${max_running:+%$max_running}" --output="$output/logs/%x-%A_%a.out" \
    "${task_sbatch[@]}" "$ALIA_SLURM_DIR/tokenize_task.sh" "${request[@]}")
  array=${array%%;*}
  echo "submitted array job $array: tasks $todo of $tasks; logs $output/logs/alia-tokenize-${array}_<task>.out"
  merge_after=(--dependency="afterany:$array")
else
  echo "all $tasks tasks finished before; submitting the merge only"
fi
merge=$(sbatch --parsable "${merge_after[@]}" --output="$output/logs/%x-%j.out" "${merge_sbatch[@]}" \
  "$ALIA_SLURM_DIR/tokenize_merge.sh" "$output")
merge=${merge%%;*}
echo "submitted merge job $merge${array:+ (after array job $array)}; log $output/logs/alia-tokenize-merge-$merge.out"
