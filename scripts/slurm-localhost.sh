#!/usr/bin/env bash
# slurm-localhost.sh - start a real single-node Slurm cluster on 127.0.0.1.
#
# Used by .ci/run for the Slurm backend's end-to-end tests and by developers who
# want a Slurm to try the gateway against. Installs Debian's Slurm daemons and
# munge when they are missing, writes /etc/slurm/slurm.conf for this host (every
# address is the loopback one), starts munged, slurmctld and slurmd, and waits
# (with a deadline) until `sinfo` reports the node usable. Idempotent: run it
# again while everything is up and it only re-checks; after
# scripts/slurm-localhost-stop.sh it starts everything again.
#
# Must run as root (Debian 12 tested, no systemd needed). Environment knobs:
#   SLURM_LOCAL_DIR   state, spool, logs, pid files   (default /tmp/slurm-localhost)
#   SLURM_CPUS        CPUs the node advertises        (default: nproc, at least 8 -
#                     deliberately more than the hardware so a scheduler and several
#                     1-core workers fit on a 2-core CI machine)
#   SLURM_MEM_MB      memory the node advertises, MB  (default: total memory)
#   SLURM_TIMEOUT     seconds to wait for the node    (default 60)
#   SLURM_ACCOUNTING  1 = also MariaDB + slurmdbd so `sacct` works (default 0)
#   SLURM_DB_PORT     MariaDB port on 127.0.0.1       (default 3307)
#   SLURM_USERS       local users to create, e.g. "alice bob" (default none)
#   SLURM_SMOKE       1 = run one job through srun before reporting ready (default 1)
# Prints "slurm ready" on success; on failure prints the daemons' log tails, exits 1.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-localhost}
TIMEOUT=${SLURM_TIMEOUT:-60}
ACCOUNTING=${SLURM_ACCOUNTING:-0}
DB_PORT=${SLURM_DB_PORT:-3307}
SMOKE=${SLURM_SMOKE:-1}
CLUSTER_NAME=localhost-ci
NODE=$(hostname -s)
CONF=/etc/slurm/slurm.conf   # the default path, so callers with a reset env (sudo) find it
DBD_CONF=/etc/slurm/slurmdbd.conf
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

say() { printf '[slurm-localhost] %s\n' "$*" >&2; }
fail() {
  say "ERROR: $*"
  for f in "$DIR"/log/*.log; do
    [ -f "$f" ] && { say "--- last lines of $f"; tail -n 20 "$f" >&2; }
  done
  exit 1
}
# running PIDFILE NAME: true when the pid in PIDFILE is a live process called NAME
running() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qx "$2" "/proc/$pid/comm" 2>/dev/null
}
# wait_for SECONDS COMMAND...: poll COMMAND every 0.1 s until it succeeds or time runs out
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

[ "$(id -u)" = 0 ] || { echo "slurm-localhost.sh must run as root" >&2; exit 1; }

# --- 1. packages -----------------------------------------------------------------------
# slurmctld + slurmd + slurm-client are what the slurm-wlm metapackage pulls in that we
# use; installing them alone avoids ~35 unneeded packages.
missing=()
[ -x /usr/sbin/slurmctld ] || missing+=(slurmctld)
[ -x /usr/sbin/slurmd ] || missing+=(slurmd)
[ -x /usr/bin/sbatch ] || missing+=(slurm-client)
[ -x /usr/sbin/munged ] || missing+=(munge)
if [ "$ACCOUNTING" = 1 ]; then
  [ -x /usr/sbin/slurmdbd ] || missing+=(slurmdbd)
  [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # keep the packages' maintainer scripts from starting daemons with their own config
  policy_added=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  apt_log=/tmp/slurm-localhost-apt.log
  install() { apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"; }
  if ! install >"$apt_log" 2>&1; then
    apt-get -o DPkg::Lock::Timeout=600 update >>"$apt_log" 2>&1
    install >>"$apt_log" 2>&1 || { [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d; tail -n 30 "$apt_log" >&2; exit 1; }
  fi
  [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$DIR"/state "$DIR"/spool "$DIR"/log "$DIR"/pids
for user in ${SLURM_USERS:-}; do
  id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
done

# --- 2. munge (authentication between the Slurm commands and daemons) -------------------
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  mungekey --create --keyfile=/etc/munge/munge.key --force
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
# no systemd here: create the runtime directories it would have created
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge
munge_ok() { munge -n | unmunge; }
if ! munge_ok >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
  cp /run/munge/munged.pid "$DIR/pids/munged.pid" # tells the stop script that we own it
  wait_for 10 munge_ok || fail "munged does not answer"
fi

# --- 3. slurm.conf -------------------------------------------------------------------
CPUS=${SLURM_CPUS:-$(n=$(nproc); [ "$n" -lt 8 ] && n=8; echo "$n")}
MEM_MB=${SLURM_MEM_MB:-$(free -m | awk '/^Mem:/ {print $2}')}
if [ "$ACCOUNTING" = 1 ]; then
  accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
else
  accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
# Choices that matter (each found the hard way):
# - SlurmctldHost/NodeAddr 127.0.0.1: all traffic stays on loopback (the daemons still
#   listen on every interface; Slurm 22.05 has no bind-address setting).
# - DefMemPerCPU: without it a job with no --mem gets the whole node, one job at a time.
# - batch_sched_delay=0, sched_min_interval=0: otherwise each job waits 1-3 s to start.
# - config_overrides: lets the node advertise more CPUs than it has without being drained.
# - MinJobAge=300: finished jobs stay visible to squeue for 5 minutes (their final state).
# - linuxproc/task none: no dependency on the cgroup layout of whatever machine CI uses.
config=$(cat <<CONF
# written by scripts/slurm-localhost.sh; rewritten when the script's settings change
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=300
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/pids/slurmctld.pid
SlurmdPidFile=$DIR/pids/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
$accounting
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)
mkdir -p /etc/slurm
config_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$config" ]; then
  printf '%s\n' "$config" >"$CONF"
  chmod 644 "$CONF"
  config_changed=1
fi

# --- 4. accounting (optional): MariaDB on 127.0.0.1 + slurmdbd -----------------------------
if [ "$ACCOUNTING" = 1 ]; then
  db_dir="$DIR/mysql"
  db_run="$DIR/mysql-run" # mysql-owned: mariadbd cannot write into root's directories
  mkdir -p "$db_dir" "$db_run"
  chown mysql:mysql "$db_dir" "$db_run"
  if [ ! -d "$db_dir/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$db_dir" --skip-test-db \
      >"$DIR/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
  fi
  db_sql() { mariadb -S "$db_run/mysqld.sock" -uroot -e "$1"; }
  if ! running "$db_run/mysqld.pid" mariadbd; then
    say "starting mariadbd on 127.0.0.1:$DB_PORT"
    setsid mariadbd --user=mysql --datadir="$db_dir" --socket="$db_run/mysqld.sock" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$db_run/mysqld.pid" \
      --log-error="$db_run/mysqld.log" --skip-log-bin </dev/null >/dev/null 2>&1 &
    wait_for "$TIMEOUT" db_sql 'select 1' || fail "mariadbd did not start"
  fi
  db_sql "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || fail "cannot create the slurm DB user"
  cat >"$DBD_CONF" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$DIR/pids/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$DBD_CONF" # slurmdbd refuses a config others can read
  if ! running "$DIR/pids/slurmdbd.pid" slurmdbd; then
    say "starting slurmdbd"
    /usr/sbin/slurmdbd || fail "slurmdbd failed to start"
    wait_for "$TIMEOUT" sacctmgr -n show cluster || fail "slurmdbd does not answer"
  fi
  if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER_NAME"; then
    sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null || fail "sacctmgr add cluster failed"
  fi
fi

# --- 5. slurmctld + slurmd --------------------------------------------------------------
stop_daemon() { # stop_daemon NAME: SIGTERM by pid file, wait for it to go
  local pidfile="$DIR/pids/$1.pid" pid
  running "$pidfile" "$1" || return 0
  pid=$(cat "$pidfile")
  kill "$pid"
  wait_for 10 sh -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
}
if [ "$config_changed" = 1 ] && running "$DIR/pids/slurmctld.pid" slurmctld; then
  say "configuration changed: restarting slurmd and slurmctld"
  stop_daemon slurmd
  stop_daemon slurmctld
fi
if ! running "$DIR/pids/slurmctld.pid" slurmctld; then
  say "starting slurmctld"
  /usr/sbin/slurmctld || fail "slurmctld failed to start"
fi
if ! running "$DIR/pids/slurmd.pid" slurmd; then
  say "starting slurmd"
  /usr/sbin/slurmd -N "$NODE" || fail "slurmd failed to start"
fi

node_state=""
deadline=$((SECONDS + TIMEOUT))
while :; do
  node_state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null || true)
  case "$node_state" in
    idle | mixed | allocated | completing) break ;;
    # a node that was down when slurmctld last saw it stays down until resumed
    down* | drain* | fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
  esac
  [ "$SECONDS" -lt "$deadline" ] || fail "node $NODE is '${node_state:-unknown}' after ${TIMEOUT} s"
  sleep 0.1
done

# --- 6. smoke job -----------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
  out=$(timeout "$TIMEOUT" srun --quiet -N1 -n1 -t 1 hostname 2>&1) || fail "smoke job failed: $out"
  [ "$out" = "$(hostname)" ] || [ "$out" = "$NODE" ] || fail "smoke job printed '$out'"
fi

echo "slurm ready"
