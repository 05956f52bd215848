#!/bin/bash
# One task of the array scripts/slurm/tokenize.sh submits (not submitted by hand): `alia-data
# tokenize ARGS --task $SLURM_ARRAY_TASK_ID` with every CPU the job has on its node. It writes
# the task's shard sets one after the other, each published atomically, then its completion
# marker. SIGTERM (scancel, the time limit) drops the set being written; the published ones
# stay, and a resubmission of tokenize.sh goes on from there. Headers: one whole node per task;
# override them with tokenize.sh --sbatch=OPT (e.g. --sbatch=--time=12:00:00).
#SBATCH --job-name=alia-tokenize
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --exclusive
#SBATCH --time=1-00:00:00
#SBATCH --output=%x-%A_%a.out

# sbatch runs a copy of this file from its spool directory: find the checkout's common.sh.
for ALIA_SLURM_DIR in "${ALIA_HOME:-.}/scripts/slurm" "$(dirname -- "${BASH_SOURCE[0]}")" "${SLURM_SUBMIT_DIR:-.}/scripts/slurm"; do
  [[ -f $ALIA_SLURM_DIR/common.sh ]] && break
done
# shellcheck source=scripts/slurm/common.sh
source "$ALIA_SLURM_DIR/common.sh" || {
  echo "alia: cannot find scripts/slurm/common.sh; submit with scripts/slurm/tokenize.sh or set ALIA_HOME" >&2
  exit 2
}
: "${SLURM_ARRAY_TASK_ID:?submit me with scripts/slurm/tokenize.sh}"
alia_site_setup
# Compute nodes have no internet; datasets must not try it.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" PYTHONUNBUFFERED=1

read -r -a alia_data <<<"${ALIA_DATA_CMD:-alia-data}"
workers=()
[[ -z ${SLURM_CPUS_ON_NODE:-} ]] || workers=(--workers "$SLURM_CPUS_ON_NODE")
alia_log "task $SLURM_ARRAY_TASK_ID of array job $SLURM_ARRAY_JOB_ID (job $SLURM_JOB_ID) on $(hostname), ${SLURM_CPUS_ON_NODE:-all} CPUs"
# exec: SIGTERM reaches alia-data itself, which drops the set it was writing and exits 130.
exec "${alia_data[@]}" tokenize "${workers[@]}" "$@" --task "$SLURM_ARRAY_TASK_ID"
