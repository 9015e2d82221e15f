#!/usr/bin/env bash
# A single-node SLURM cluster on this machine for testing the workflow's SLURM path:
# munge + slurmctld + slurmd, a `cpu` partition and an `h100` partition whose GPUs are GRES
# backed by character devices (so --gres=gpu requests are scheduled, CUDA_VISIBLE_DEVICES set).
#   cluster.sh up     install packages if missing, write the config, start what is not running
#   cluster.sh down   stop only the daemons this script started (by their pid files)
# Exit 3 when packages are missing and cannot be installed. Idempotent both ways.
set -euo pipefail
STATE=${GPIC_SLURM_STATE:-/tmp/gpic-slurm}
CONF=/etc/slurm/slurm.conf   # the plugin's job steps drop SLURM_CONF: it must live here
GPUS=4

log() { echo "cluster: $*" >&2; }

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null && return 0
  log "installing munge and slurm (Debian packages)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge slurmctld slurmd slurm-client; } >"$STATE/apt.log" 2>&1; then
    log "cannot install munge/slurm packages here (see $STATE/apt.log)"
    exit 3
  fi
}

write_config() {
  mkdir -p "$STATE"/{ctld,spool,dev} /etc/slurm /run/munge
  chmod 755 /run/munge
  for i in $(seq 0 $((GPUS - 1))); do
    [ -c "$STATE/dev/nvidia$i" ] || mknod "$STATE/dev/nvidia$i" c 1 3
  done
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 85 / 100 ))
  cat >"$CONF" <<CONF
# Written by profiles/slurm-local/cluster.sh: a one-node test cluster.
ClusterName=gpic-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No slurmdbd: the workflow profile polls squeue, so finished jobs must stay visible a while.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
# Without a default, a job that does not ask for memory takes the whole node.
DefMemPerCPU=1000
ReturnToService=2
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=h100 Nodes=localhost MaxTime=INFINITE State=UP
CONF
  echo "NodeName=localhost Name=gpu File=$STATE/dev/nvidia[0-$((GPUS - 1))]" >/etc/slurm/gres.conf
  if [ ! -f "$STATE/munge.key" ]; then
    head -c 1024 /dev/urandom >"$STATE/munge.key"
    chmod 400 "$STATE/munge.key"   # munged as root wants a root-owned key
  fi
}

up() {
  mkdir -p "$STATE"
  install
  write_config
  running "$STATE/munged.pid" || { munged --force --key-file="$STATE/munge.key" --pid-file="$STATE/munged.pid"; log "munged started"; }
  running "$STATE/slurmctld.pid" || { slurmctld; log "slurmctld started"; }
  running "$STATE/slurmd.pid" || { slurmd -N localhost; log "slurmd started"; }
  for _ in $(seq 60); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1 || true)
    case "$state" in
      idle*|mixed*|allocated*) log "node $state"; sinfo; return 0 ;;
      drain*|down*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  log "node did not become ready; see $STATE/*.log"
  exit 1
}

down() {
  for daemon in slurmd slurmctld munged; do
    if running "$STATE/$daemon.pid"; then
      kill "$(cat "$STATE/$daemon.pid")" && log "$daemon stopped"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
