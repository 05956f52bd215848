#!/usr/bin/env bash
# Best effort: install Debian's slurm-wlm and munge so that tests/slurm/test_real_slurm.py can
# run a one-node Slurm. Never fails: without root, apt-get or the package mirror, those tests
# skip and say why. The daemons are not started here (the tests start their own, on their own
# ports and sockets, and stop them).
set -u
have_slurm() {
  local tool
  for tool in slurmctld slurmd munged sbatch; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || return 1
  done
}
have_slurm && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_slurm: not root or no apt-get: the real-Slurm tests will skip" >&2
  exit 0
fi
log="${TMPDIR:-/tmp}/alia-install-slurm.log"
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
if timeout 300 apt-get update >"$log" 2>&1 &&
  timeout 600 apt-get install -y --no-install-recommends slurm-wlm munge >>"$log" 2>&1; then
  echo "install_slurm: slurm-wlm and munge installed in $((SECONDS - start)) s" >&2
else
  echo "install_slurm: could not install slurm-wlm / munge (see $log): the real-Slurm tests will skip" >&2
fi
exit 0
