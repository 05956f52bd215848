#!/bin/bash
# Score a run's checkpoints with lm-evaluation-harness (alia-eval) on one GPU node.
#   SBATCH_ACCOUNT=<project> SBATCH_PARTITION=acc SBATCH_QOS=acc_xehpc \
#     sbatch scripts/slurm/eval.sh RUN_DIR [alia-eval options, e.g. --tasks iberian --checkpoints latest]
# Without --tasks: $ALIA_EVAL_TASKS, else iberian. Scores are appended to RUN_DIR/evals.jsonl;
# checkpoints already scored with the same tasks and settings are skipped, so the job can follow
# every training job: train_*.sh submit it themselves with ALIA_EVAL_TASKS=<tasks> set
# (--dependency=afterany). The datasets must be in the Hugging Face cache first (compute nodes
# are offline): `HF_DATASETS_OFFLINE=0 alia-eval --download --tasks iberian` on a login node.
# The whole node (4 GPUs) by default: a 2B/7B model runs on one GPU, the 40B (80 GB of bf16
# weights) is split by layers over the node's 4 x 64 GB. For a small model ask for less:
# sbatch --gres=gpu:1 --cpus-per-task=20 scripts/slurm/eval.sh ... (or ALIA_EVAL_SBATCH when
# chained). Site setup, container and offline environment as for training (common.sh).
# See docs/evaluation.md.
#SBATCH --job-name=alia-eval
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=80
#SBATCH --time=08:00:00
#SBATCH --output=%x-%j.out

# sbatch runs a copy of this file from its spool directory: find the checkout's common.sh.
for ALIA_SLURM_DIR in "${ALIA_HOME:-.}/scripts/slurm" "$(dirname -- "${BASH_SOURCE[0]}")" "${SLURM_SUBMIT_DIR:-.}/scripts/slurm"; do
  [[ -f $ALIA_SLURM_DIR/common.sh ]] && break
done
# shellcheck source=scripts/slurm/common.sh
source "$ALIA_SLURM_DIR/common.sh" || {
  echo "alia: cannot find scripts/slurm/common.sh; submit from the alia-train checkout or set ALIA_HOME" >&2
  exit 2
}
alia_eval_main "$@"
