#!/bin/bash
# The merge job scripts/slurm/tokenize.sh submits after its array (--dependency=afterany, so it
# runs even when a task failed): `alia-data merge DIR`. It refuses in one line, exit 2, while a
# task is unfinished; else it writes DIR/data.yaml, DIR/data/<name>.yaml and DIR/stats.json and
# prints the summary and the mixture table. Reads JSON markers only: one CPU, minutes at most.
#SBATCH --job-name=alia-tokenize-merge
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=%x-%j.out

for ALIA_SLURM_DIR in "${ALIA_HOME:-.}/scripts/slurm" "$(dirname -- "${BASH_SOURCE[0]}")" "${SLURM_SUBMIT_DIR:-.}/scripts/slurm"; do
  [[ -f $ALIA_SLURM_DIR/common.sh ]] && break
done
# shellcheck source=scripts/slurm/common.sh
source "$ALIA_SLURM_DIR/common.sh" || {
  echo "alia: cannot find scripts/slurm/common.sh; submit with scripts/slurm/tokenize.sh or set ALIA_HOME" >&2
  exit 2
}
alia_site_setup
export PYTHONUNBUFFERED=1
read -r -a alia_data <<<"${ALIA_DATA_CMD:-alia-data}"
alia_log "merge job $SLURM_JOB_ID: $*"
exec "${alia_data[@]}" merge "$@"
