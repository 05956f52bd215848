# shellcheck shell=bash
# The part of train_2b.sh / train_7b.sh / train_40b.sh that every model shares. Sourced by
# them, then `alia_slurm_main "$@"` runs the job. Read docs/cluster.md first.
#
# What a job does:
#   1. site setup (modules / venv / container: the one marked block below);
#   2. the NCCL / CUDA / offline environment of the BSC launchers;
#   3. MASTER_ADDR / MASTER_PORT from the job's node list and id;
#   4. `srun` one alia-train task per GPU, with the job's --cpus-per-task (rank, world and local
#      rank come from SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID), Hydra overrides passed
#      through;
#   5. signals (docs/cluster.md, "Signals"): SIGUSR1 (Slurm's --signal=B:USR1@<grace>, sent to
#      this batch shell only) is forwarded to the srun step: the training saves a checkpoint at
#      the next step boundary and exits with 75 (EXIT_RESUME). A USR1 that comes before the
#      step has started is handed to it in ALIA_STOP_SIGNAL; one in the step's first
#      ALIA_SIGNAL_SETTLE_S seconds is forwarded once they are over, when the tasks have their
#      handlers. SIGTERM (scancel, the time limit, preemption) reaches every process of the
#      step from Slurm itself and is not forwarded (srun would abort the step): the training
#      saves a checkpoint if there is time and exits with 143 (EXIT_STOPPED);
#   6. on 75 the job requeues itself (`scontrol requeue`), unless this shell got SIGTERM (a
#      cancelled job stays cancelled): the requeued run resumes from the run directory's
#      latest checkpoint.
#
# Knobs (environment):
#   ALIA_SITE_SETUP   file sourced for modules / venv (site setup block)
#   ALIA_CONTAINER    Singularity/Apptainer image to run alia-train in (`singularity exec --nv`)
#   ALIA_TRAIN_CMD    the training command (default: alia-train)
#   ALIA_CLUSTER      the cluster config group when no cluster=... override is given
#                     (default: marenostrum5)
#   ALIA_REQUEUE      1 (default): requeue on exit 75; 0: leave resuming to a singleton chain
#   ALIA_MAX_REQUEUES stop requeueing after this many restarts (default 100)
#   ALIA_SIGNAL_SETTLE_S  hold a USR1 that comes this soon after the step started, until the
#                     tasks have installed their handlers (default 20)
#   ALIA_USR1_LEAD_S  the lead of the header's --signal=B:USR1@<lead> (default 600); set it when
#                     overriding --signal on the sbatch command line
#   ALIA_MIN_TRAIN_S  a USR1 from the time limit sooner than this after the start means --time
#                     is too short for the warning: no requeue, exit 2 (default 300)
#   ALIA_EVAL_TASKS   set (e.g. iberian, or local): each training job submits scripts/slurm/eval.sh
#                     for its run directory with --tasks $ALIA_EVAL_TASKS, to start when the job
#                     has ended, however it ended (--dependency=afterany); docs/evaluation.md
#   ALIA_EVAL_SBATCH  extra sbatch options for that eval job (e.g. "--gres=gpu:1 --time=2:00:00")
#   ALIA_EVAL_ARGS    extra alia-eval options for it (e.g. "--limit 500")
#   ALIA_EVAL_CMD     the eval command in eval.sh (default: alia-eval)

set -euo pipefail

readonly ALIA_EXIT_RESUME=75  # checkpoint saved on USR1: requeue
readonly ALIA_EXIT_STOPPED=143 # checkpoint saved on TERM: stop for good
readonly ALIA_EXIT_CONFIG=2    # the job's own settings are wrong (its --time, below)

alia_log() {
  printf '[alia-slurm %s] %s\n' "$(date '+%F %T')" "$*"
}

alia_site_setup() {
  # ======================== SITE SETUP: modules, venv or container ========================
  # The one place for what a site needs before `alia-train` is on PATH. Either point
  # ALIA_SITE_SETUP at a file of your own (nothing here to edit), or edit this block, e.g. for
  # MareNostrum 5:
  #   module purge && module load <python/cuda/nccl modules of your project>
  #   source /gpfs/projects/<project>/venvs/alia-train/bin/activate
  # For a container, set ALIA_CONTAINER=/path/to/alia-train.sif instead.
  if [[ -n ${ALIA_SITE_SETUP:-} ]]; then
    # shellcheck source=/dev/null
    source "$ALIA_SITE_SETUP"
  fi
  # ======================== END SITE SETUP ================================================
  alia_checkout_venv
}

# Without a site setup, use the checkout's own .venv (what scripts/setup.sh creates) when
# alia-train is not on PATH: `sbatch scripts/slurm/train_2b.sh` works from a fresh checkout.
alia_checkout_venv() {
  local venv
  venv="$(cd -- "$ALIA_SLURM_DIR/../.." && pwd)/.venv"
  if [[ -z ${ALIA_CONTAINER:-} && -z ${ALIA_TRAIN_CMD:-} && -x $venv/bin/alia-train ]] &&
    ! command -v alia-train >/dev/null; then
    alia_log "alia-train is not on PATH: using the checkout's $venv"
    export PATH="$venv/bin:$PATH"
  fi
}

alia_environment() {
  # From the BSC launchers (docs/cluster.md); a site may pre-set any of them.
  export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"
  export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
  export NCCL_IB_TIMEOUT="${NCCL_IB_TIMEOUT:-70}"
  export NCCL_IB_HCA="${NCCL_IB_HCA:-mlx5}"
  export NCCL_IB_RETRY_CNT="${NCCL_IB_RETRY_CNT:-40}"
  export TORCH_NCCL_AVOID_RECORD_STREAMS="${TORCH_NCCL_AVOID_RECORD_STREAMS:-1}"
  # Compute nodes have no internet.
  export WANDB_MODE="${WANDB_MODE:-offline}"
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
  export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
  export HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
  # Each task picks its GPU itself (by SLURM_LOCALID, or the only one it sees); Slurm's CPU
  # binding would fight the data workers.
  export SLURM_CPU_BIND=none
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
  export PYTHONUNBUFFERED=1
}

alia_rendezvous() {
  local hosts
  mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
  export MASTER_ADDR="${MASTER_ADDR:-${hosts[0]}}"
  # Derived from the job id (as alia_train.parallel.launch_env.slurm_master_port does), so that
  # two jobs sharing a node do not collide, and a requeued job gets the same port; 10000-29999
  # is below the kernel's ephemeral ports (32768-60999), which any outgoing connection may hold.
  export MASTER_PORT="${MASTER_PORT:-$((10000 + SLURM_JOB_ID % 20000))}"
}

alia_tasks_per_node() {
  if [[ -n ${SLURM_NTASKS_PER_NODE:-} ]]; then
    echo "${SLURM_NTASKS_PER_NODE%%(*}"
  else
    echo $((SLURM_NTASKS / SLURM_JOB_NUM_NODES))
  fi
}

# Fills the array ALIA_ARGS: the recipe's model and cluster unless the user chose others, the
# job's shape, then the user's overrides (last, so they win).
alia_hydra_args() {
  local arg has_model=0 has_cluster=0
  for arg in "$@"; do
    case $arg in
      model=* | +model=* | ++model=*) has_model=1 ;;
      cluster=* | +cluster=* | ++cluster=*) has_cluster=1 ;;
    esac
  done
  ALIA_ARGS=()
  ((has_model)) || ALIA_ARGS+=("+model=$ALIA_MODEL")
  ((has_cluster)) || ALIA_ARGS+=("cluster=${ALIA_CLUSTER:-marenostrum5}")
  ALIA_ARGS+=("cluster.nodes=$SLURM_JOB_NUM_NODES" "cluster.gpus_per_node=$(alia_tasks_per_node)")
  ALIA_ARGS+=("$@")
}

# The run directory the Hydra arguments in ALIA_ARGS name, absolute (the job runs in the submit
# directory): run.dir, else runs/<run.name>, else runs/<model name> (the schema's defaults). A
# run.dir with a ${...} interpolation is not resolved here: give it plainly to chain evals.
alia_run_dir() {
  local arg dir='' name='' model='' model_name=''
  for arg in "${ALIA_ARGS[@]}"; do
    arg=${arg#+}
    arg=${arg#+}
    case $arg in
      run.dir=*) dir=${arg#run.dir=} ;;
      run.name=*) name=${arg#run.name=} ;;
      model.name=*) model_name=${arg#model.name=} ;;
      model=*) model=${arg#model=} ;;
    esac
  done
  dir=${dir:-runs/${name:-${model_name:-$model}}}
  [[ $dir == /* ]] || dir="$PWD/$dir"
  echo "$dir"
}

# Runs a command without this job's SLURM_* variables (SLURM_CONF kept): an sbatch from inside a
# job would otherwise hand them to the new job.
alia_without_job_env() {
  (
    local var
    for var in $(compgen -e); do
      if [[ $var == SLURM_* && $var != SLURM_CONF ]]; then unset "$var"; fi
    done
    "$@"
  )
}

# With ALIA_EVAL_TASKS set: submit the eval of this run's checkpoints, to start once this job has
# ended (afterany: completed, failed, timed out, cancelled or requeued). A failed submission is
# logged and the training goes on.
alia_chain_eval() {
  [[ -n ${ALIA_EVAL_TASKS:-} ]] || return 0
  local run_dir out extra=() eval_args=()
  run_dir=$(alia_run_dir)
  read -r -a extra <<<"${ALIA_EVAL_SBATCH:-}"
  read -r -a eval_args <<<"${ALIA_EVAL_ARGS:-}"
  if out=$(ALIA_HOME="$(cd -- "$ALIA_SLURM_DIR/../.." && pwd)" alia_without_job_env sbatch --parsable \
    --dependency="afterany:$SLURM_JOB_ID" "${extra[@]}" "$ALIA_SLURM_DIR/eval.sh" "$run_dir" \
    --tasks "$ALIA_EVAL_TASKS" "${eval_args[@]}" 2>&1); then
    alia_log "chained eval job ${out%%;*} (afterany:$SLURM_JOB_ID): alia-eval $run_dir --tasks $ALIA_EVAL_TASKS ${eval_args[*]}"
  else
    alia_log "WARNING: the chained eval job was not submitted (the training goes on): $out"
  fi
}

# eval.sh: alia-eval RUN_DIR [options] on this one node (its GPUs; a model too large for one GPU
# is split over them by alia-eval itself, one process). Without --tasks: ALIA_EVAL_TASKS, else
# iberian. Datasets must be in the Hugging Face cache already: compute nodes are offline
# (alia_environment), and a missing one is one line naming the download command.
alia_eval_main() {
  : "${SLURM_JOB_ID:?run me with sbatch}"
  if (($# < 1)) || [[ $1 == -* ]]; then
    echo "eval.sh: error: usage: sbatch scripts/slurm/eval.sh RUN_DIR [alia-eval options]" >&2
    return "$ALIA_EXIT_CONFIG"
  fi
  alia_site_setup
  alia_environment
  local arg has_tasks=0 launcher=() eval_cmd=() args=("$@")
  for arg in "$@"; do
    [[ $arg != --tasks && $arg != --tasks=* ]] || has_tasks=1
  done
  ((has_tasks)) || args+=(--tasks "${ALIA_EVAL_TASKS:-iberian}")
  if [[ -n ${ALIA_CONTAINER:-} ]]; then
    launcher=(singularity exec --nv "$ALIA_CONTAINER")
  fi
  read -r -a eval_cmd <<<"${ALIA_EVAL_CMD:-alia-eval}"
  alia_log "job $SLURM_JOB_ID (${SLURM_JOB_NAME:-}) on $(hostname): ${launcher[*]} ${eval_cmd[*]} ${args[*]}"
  local rc=0
  "${launcher[@]}" "${eval_cmd[@]}" "${args[@]}" || rc=$?
  alia_log "alia-eval ended with exit code $rc"
  return "$rc"
}

ALIA_STEP_PID=
ALIA_STEP_STARTED=
ALIA_PENDING_SIGNAL=
ALIA_GOT_TERM=0
ALIA_USR1_AT=   # seconds after the job started that the first USR1 came
ALIA_USR1_LEFT= # and the seconds the job then had left (empty: unknown)

# Trapped SIGTERM (scancel, the time limit, preemption): Slurm sends it to every process of the
# job itself. Not forwarded: srun takes SIGTERM as "abort the step", and a second one as "kill
# it now" (SIGKILL, no checkpoint).
alia_note_term() {
  ALIA_GOT_TERM=1
  alia_log "got SIGTERM (scancel, time limit or preemption): the training saves a checkpoint if there is time and stops; no requeue"
}

# Trapped SIGUSR1: forwarded to the srun step (srun passes it to every process of the step).
alia_forward_signal() {
  local sig=$1
  alia_log "got SIG$sig: asking the training to checkpoint at the next step boundary, then requeue"
  if [[ $sig == USR1 && -z $ALIA_USR1_AT ]]; then
    ALIA_USR1_AT=$SECONDS
    ALIA_USR1_LEFT=$(alia_time_left_s)
  fi
  if [[ -z $ALIA_STEP_PID ]]; then
    # Before the step: handed to it in its environment (ALIA_STOP_SIGNAL), no signal needed.
    ALIA_PENDING_SIGNAL=$sig
    return 0
  fi
  alia_signal_step "$sig"
}

alia_signal_step() {
  local sig=$1 age settle=${ALIA_SIGNAL_SETTLE_S:-20}
  age=$((SECONDS - ALIA_STEP_STARTED))
  if ((age < settle)); then
    # The tasks may not have their handlers yet, and would die of the signal.
    alia_log "the step started ${age}s ago: forwarding SIG$sig in $((settle - age))s, once the tasks can take it"
    sleep "$((settle - age))"
  fi
  kill -s "$sig" "$ALIA_STEP_PID" 2>/dev/null || true
}

# Slurm's KillWait (seconds between SIGTERM and SIGKILL): the training warns when its saves
# take longer. Best effort.
alia_kill_wait() {
  local seconds
  seconds=$(scontrol show config 2>/dev/null | awk '$1 == "KillWait" {print $3}') || true
  [[ -z $seconds ]] || export ALIA_KILL_WAIT_S=$seconds
}

# Waits for the srun step; a trapped signal interrupts `wait` (status > 128) while the step runs
# on, so wait again until the step itself has ended. Sets ALIA_STEP_RC.
alia_wait_step() {
  local pid=$1 status again
  while :; do
    status=0
    wait "$pid" || status=$?
    ((status > 128)) || break
    if kill -0 "$pid" 2>/dev/null; then
      continue
    fi
    # Ended just as the signal came (bash still holds its status), or died of a signal.
    again=0
    wait "$pid" 2>/dev/null || again=$?
    ((again == 127)) || status=$again
    break
  done
  ALIA_STEP_RC=$status
}

# Seconds before the job's time limit (squeue's %L: [D-]HH:MM:SS, MM:SS or SS); nothing when
# unknown or unlimited.
alia_time_left_s() {
  local left days=0 h=0 m=0 s=0 parts
  left=$(squeue -h -j "$SLURM_JOB_ID" -o %L 2>/dev/null) || return 0
  left=${left//[[:space:]]/}
  [[ $left =~ ^(([0-9]+)-)?([0-9]+)(:([0-9]+))?(:([0-9]+))?$ ]] || return 0
  [[ -z ${BASH_REMATCH[2]} ]] || days=${BASH_REMATCH[2]}
  IFS=: read -r -a parts <<<"${left#*-}"
  case ${#parts[@]} in
    3) h=${parts[0]} m=${parts[1]} s=${parts[2]} ;;
    2) m=${parts[0]} s=${parts[1]} ;;
    1) s=${parts[0]} ;;
  esac
  echo $((((10#$days * 24 + 10#$h) * 60 + 10#$m) * 60 + 10#$s))
}

# True when the USR1 was Slurm's timed warning arriving right at the start: the job's --time is
# not much longer than the warning's lead (--signal=B:USR1@<lead>, ALIA_USR1_LEAD_S, the
# headers' 600), so every requeued job would be warned at once, checkpoint and requeue again,
# forever. A USR1 sent by hand early in a long job has much time left and is not this.
alia_time_limit_too_short() {
  local min_run=${ALIA_MIN_TRAIN_S:-300} lead=${ALIA_USR1_LEAD_S:-600}
  [[ -n $ALIA_USR1_AT && -n $ALIA_USR1_LEFT ]] || return 1
  ((ALIA_USR1_AT < min_run && ALIA_USR1_LEFT < min_run + lead))
}

alia_requeue() {
  local restarts=${SLURM_RESTART_COUNT:-0} max=${ALIA_MAX_REQUEUES:-100}
  if alia_time_limit_too_short; then
    alia_log "checkpoint saved; not requeueing: SIGUSR1 came ${ALIA_USR1_AT}s after the job started, with ${ALIA_USR1_LEFT}s left before its time limit: the job's --time leaves no time to train after Slurm's USR1 warning (--signal=B:USR1@${ALIA_USR1_LEAD_S:-600}), so every requeue would stop at once again. Submit again with a --time well above the warning, or a shorter warning; it resumes from the checkpoint"
    return "$ALIA_EXIT_CONFIG"
  fi
  if ((ALIA_GOT_TERM)); then
    alia_log "checkpoint saved; not requeueing: this job got SIGTERM (cancelled, timed out or preempted)"
    return "$ALIA_EXIT_RESUME"
  fi
  if [[ ${ALIA_REQUEUE:-1} != 1 ]]; then
    alia_log "checkpoint saved; ALIA_REQUEUE=${ALIA_REQUEUE}: leaving the resume to the next job of the chain"
    return 0
  fi
  if ((restarts >= max)); then
    alia_log "checkpoint saved but not requeueing: already restarted $restarts times (ALIA_MAX_REQUEUES=$max); resubmit the same command to continue, it resumes from the checkpoint"
    return "$ALIA_EXIT_RESUME"
  fi
  alia_log "checkpoint saved; requeueing job $SLURM_JOB_ID (restart $((restarts + 1)))"
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    alia_log "scontrol requeue failed: resubmit the same command by hand; it resumes from the latest checkpoint"
    return "$ALIA_EXIT_RESUME"
  fi
  return 0
}

alia_slurm_main() {
  # Traps first: a USR1 or TERM during the set-up must not kill this shell.
  trap 'alia_forward_signal USR1' USR1
  trap alia_note_term TERM
  : "${ALIA_MODEL:?the train_*.sh script sets ALIA_MODEL}"
  : "${SLURM_JOB_ID:?run me with sbatch}"
  alia_site_setup
  alia_environment
  alia_rendezvous
  alia_kill_wait
  alia_hydra_args "$@"
  alia_chain_eval

  local launcher=() train_cmd=()
  if [[ -n ${ALIA_CONTAINER:-} ]]; then
    launcher=(singularity exec --nv "$ALIA_CONTAINER")
  fi
  read -r -a train_cmd <<<"${ALIA_TRAIN_CMD:-alia-train}"

  alia_log "job $SLURM_JOB_ID (${SLURM_JOB_NAME:-}) restart ${SLURM_RESTART_COUNT:-0}: ${SLURM_JOB_NUM_NODES} node(s) x $(alia_tasks_per_node) task(s), nodes $SLURM_JOB_NODELIST, master $MASTER_ADDR:$MASTER_PORT"
  local cmd=("${launcher[@]}" "${train_cmd[@]}" "${ALIA_ARGS[@]}")
  alia_log "command: ${cmd[*]}"

  if ((ALIA_GOT_TERM)); then
    alia_log "not starting the training: the job got SIGTERM first"
    return "$ALIA_EXIT_STOPPED"
  fi
  if [[ -n $ALIA_PENDING_SIGNAL ]]; then
    alia_log "passing SIG$ALIA_PENDING_SIGNAL (received before the step started) to the training"
    export ALIA_STOP_SIGNAL=$ALIA_PENDING_SIGNAL
  fi
  # --kill-on-bad-exit=0: ranks leaving with 75 after a checkpoint must not have srun kill the
  # others (srun would then report a signal instead of 75). --wait bounds a hang after one rank
  # has ended. Since Slurm 22.05 srun no longer inherits the job's --cpus-per-task: without it
  # the step is sized for one CPU per task, under tasks running OMP_NUM_THREADS threads.
  local step_opts=(--kill-on-bad-exit=0 --wait=300 --cpu-bind=none)
  [[ -z ${SLURM_CPUS_PER_TASK:-} ]] || step_opts+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
  ALIA_STEP_STARTED=$SECONDS
  srun "${step_opts[@]}" "${cmd[@]}" &
  ALIA_STEP_PID=$!
  # A signal trapped after the export above but before ALIA_STEP_PID was set.
  if [[ -n $ALIA_PENDING_SIGNAL && $ALIA_PENDING_SIGNAL != "${ALIA_STOP_SIGNAL:-}" ]]; then
    alia_signal_step "$ALIA_PENDING_SIGNAL"
  fi
  alia_wait_step "$ALIA_STEP_PID"
  alia_log "training step ended with exit code $ALIA_STEP_RC"

  case $ALIA_STEP_RC in
    "$ALIA_EXIT_RESUME")
      local rc=0
      alia_requeue || rc=$?
      return "$rc"
      ;;
    "$ALIA_EXIT_STOPPED")
      alia_log "the training stopped on SIGTERM (after its checkpoint, if it had started training); not requeueing: resubmit the same command to continue"
      ;;
  esac
  return "$ALIA_STEP_RC"
}
