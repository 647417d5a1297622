#!/usr/bin/env bash
# slurm-localhost-stop.sh - stop what scripts/slurm-localhost.sh started.
#
# Cancels every remaining job (so job processes do not outlive slurmd), then stops
# slurmd, slurmctld, slurmdbd, mariadbd and munged by their pid files. munged is
# stopped only when slurm-localhost.sh started it. Safe to run when nothing runs.
#   --purge   also delete SLURM_LOCAL_DIR (job state, spool, logs, accounting data)
set -uo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-localhost}
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

# stop NAME PIDFILE: SIGTERM, up to 10 s grace, then SIGKILL; only if the pid is NAME
stop() {
  local pid
  [ -s "$2" ] || return 0
  pid=$(cat "$2" 2>/dev/null) || return 0
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qx "$1" "/proc/$pid/comm" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    echo "stopped $1 (pid $pid)"
  fi
  rm -f "$2"
}

if [ -s "$DIR/pids/slurmctld.pid" ] && command -v squeue >/dev/null; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086  # one job id per word
    scancel $jobs 2>/dev/null
    for _ in $(seq 100); do
      [ -z "$(squeue -h 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
fi
stop slurmd "$DIR/pids/slurmd.pid"
stop slurmctld "$DIR/pids/slurmctld.pid"
stop slurmdbd "$DIR/pids/slurmdbd.pid"
stop mariadbd "$DIR/mysql-run/mysqld.pid"
stop munged "$DIR/pids/munged.pid"

if [ "${1:-}" = "--purge" ]; then
  rm -rf "$DIR"
  echo "removed $DIR"
fi
echo "slurm stopped"
