#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine for the Slurm launcher tests and benchmarks:
# munged, slurmctld and slurmd from Debian's packages (slurmd slurmctld slurm-client munge),
# every file (configuration, key, state, logs, sockets) under one directory.
#
#   source Scripts/slurm-up.sh   # exports SLURM_CONF; then run srun, swift test, ...
#   bash Scripts/slurm-down.sh   # stops the daemons (with the same PP_SLURM_DIR)
#
# PP_SLURM_DIR (default /tmp/pp-slurm) is the directory; PP_SLURM_PORT (default 6817) is
# slurmctld's port, slurmd uses the next one. Must run as root (slurmd starts every step).
# Returns non-zero, with the daemons' logs, when `srun true` does not succeed within 60 s.

pp_slurm_up() {
  local dir="${PP_SLURM_DIR:-/tmp/pp-slurm}"
  local port="${PP_SLURM_PORT:-6817}"
  local host cpus
  host=$(hostname -s)
  cpus=$(nproc --all)
  for program in munged mungekey slurmctld slurmd srun; do
    if ! command -v "$program" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$program" ]; then
      echo "slurm-up: $program is not installed (Debian: slurmd slurmctld slurm-client munge)" >&2
      return 1
    fi
  done
  if [ -e "$dir/slurmctld.pid" ]; then
    echo "slurm-up: $dir is in use; run Scripts/slurm-down.sh first" >&2
    return 1
  fi
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
  # munged refuses a key or socket directory that others may write to.
  chmod 700 "$dir/munge"
  chmod 755 "$dir"
  /usr/sbin/mungekey --create --keyfile="$dir/munge/munge.key" --force 2>/dev/null \
    || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
  chmod 600 "$dir/munge/munge.key"
  /usr/sbin/munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"

  cat >"$dir/slurm.conf" <<EOF
ClusterName=processpool
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# No cgroups in a container: track a step's processes by their parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A job may end a moment after its last step: keep cleaning up quick for the tests.
KillWait=5
NodeName=$host CPUs=$cpus State=UNKNOWN
# Up to 16 one-CPU jobs per core, so the tests may run more workers than this machine has cores.
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:16
EOF
  export SLURM_CONF="$dir/slurm.conf"
  /usr/sbin/slurmctld -D -i -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 &
  /usr/sbin/slurmd -D -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1 &

  local deadline=$((SECONDS + 60))
  until timeout 10 srun --ntasks=1 --time=1 true >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "slurm-up: srun true did not succeed within 60 s; the logs:" >&2
      tail -n 20 "$dir"/*.log "$dir"/*.out "$dir/munge/munged.log" >&2 2>/dev/null
      return 1
    fi
    sleep 1
  done
  echo "slurm-up: Slurm $(srun --version | cut -d' ' -f2) is running on $host ($cpus CPUs), SLURM_CONF=$SLURM_CONF"
}

# Run as a script, not sourced: start the cluster and print how to reach it.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  pp_slurm_up
  echo "export SLURM_CONF=$SLURM_CONF"
else
  pp_slurm_up
fi
