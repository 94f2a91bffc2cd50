#!/usr/bin/env bash
# Stops the cluster Scripts/slurm-up.sh started (same PP_SLURM_DIR): cancels what is still
# queued, then ends slurmd, slurmctld and munged by the pids they recorded, and removes the
# directory. Safe to run when nothing is running.
dir="${PP_SLURM_DIR:-/tmp/pp-slurm}"
[ -d "$dir" ] || exit 0
if [ -f "$dir/slurm.conf" ] && [ -f "$dir/slurmctld.pid" ]; then
  SLURM_CONF="$dir/slurm.conf" timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
fi
for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
done
rm -rf "$dir"
