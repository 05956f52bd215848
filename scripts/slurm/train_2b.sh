#!/bin/bash
# Pretrain salamandra-2b (TP1, GBS 512 x 8192) on 64 nodes of 4 GPUs: the published layout.
#   SBATCH_ACCOUNT=<project> SBATCH_PARTITION=acc SBATCH_QOS=acc_xehpc \
#     sbatch scripts/slurm/train_2b.sh [Hydra overrides, e.g. train.steps=1000 data=my_mix]
# Submit from the alia-train checkout (or set ALIA_HOME). Account, partition and QoS are never
# written here: sbatch takes them from SBATCH_ACCOUNT / SBATCH_PARTITION / SBATCH_QOS or -A/-p/-q.
# Any header can be overridden on the sbatch command line (--nodes, --time, ...). The log goes
# to <job name>-<job id>.out in the submit directory (Slurm creates no directories: for
# --output=logs/%x-%j.out, mkdir logs first).
# See docs/cluster.md (signals, requeue, the run-directory lock, alia-plan).
#SBATCH --job-name=alia-2b
#SBATCH --nodes=64
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=20
#SBATCH --exclusive
#SBATCH --time=3-00:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

ALIA_MODEL=salamandra_2b

# sbatch runs a copy of this file from its spool directory: find the checkout's common.sh.
for ALIA_SLURM_DIR in "${ALIA_HOME:-.}/scripts/slurm" "$(dirname -- "${BASH_SOURCE[0]}")" "${SLURM_SUBMIT_DIR:-.}/scripts/slurm"; do
  [[ -f $ALIA_SLURM_DIR/common.sh ]] && break
done
# shellcheck source=scripts/slurm/common.sh
source "$ALIA_SLURM_DIR/common.sh" || {
  echo "alia: cannot find scripts/slurm/common.sh; submit from the alia-train checkout or set ALIA_HOME" >&2
  exit 2
}
alia_slurm_main "$@"
