#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the slurm launcher's tests (and for trying
# the launcher without a cluster). Debian / Ubuntu, as root:
#
#   scripts/slurm-local.sh start    install slurm-wlm + munge if missing, configure, start (idempotent)
#   scripts/slurm-local.sh stop     stop slurmctld, slurmd and munged
#   scripts/slurm-local.sh status   exit 0 when the cluster answers and its node takes jobs
#
# One node (this machine, its CPUs and memory), one partition "debug"; state, spool and logs under
# $FAIRBENCH_SLURM_DIR (default /tmp/fairbench-slurm). The configuration goes to
# /etc/slurm/slurm.conf so that sbatch / squeue / scontrol find it without SLURM_CONF; an existing
# slurm.conf that this script did not write is never touched (the script stops instead).
set -euo pipefail

DIR="${FAIRBENCH_SLURM_DIR:-/tmp/fairbench-slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# written by fairbench scripts/slurm-local.sh"

need_root() {
    if [ "$(id -u)" != 0 ]; then echo "slurm-local.sh: run as root (it starts system daemons)" >&2; exit 2; fi
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    echo "installing slurm-wlm and munge (apt)" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
}

configure() {
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        echo "slurm-local.sh: $CONF exists and was not written by this script: not touching a real cluster's configuration" >&2
        exit 2
    fi
    mkdir -p "$DIR/state" "$DIR/spool" /etc/slurm
    local host cpus mem
    host="$(hostname -s)"
    cpus="$(nproc --all)"
    # slurmd's own reading of the memory, less 5% so that the node is never drained for "low memory"
    mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    mem=$(( mem * 95 / 100 ))
    cat > "$CONF" <<EOF
$MARK
ClusterName=fairbench-local
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
# a requeued job waits this long before it may start again (default 120 s); short for tests
AuthInfo=cred_expire=10
# SIGTERM -> SIGKILL (default 30 s); short for tests, long enough for a preempted task to record its requeue
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

running() { # the controller answers and the node is up (idle, mixed or allocated)
    scontrol ping 2>/dev/null | grep -q UP \
        && sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged
}

start() {
    need_root
    if [ -f "$CONF" ] && grep -qF "$MARK" "$CONF" && running; then
        echo "slurm: already running ($CONF, state in $DIR)" >&2
        return
    fi
    install
    configure
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 1 60); do
        if running; then
            scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
            echo "slurm: started ($CONF, state and logs in $DIR)" >&2
            return
        fi
        # a node left "down" by an earlier, stopped instance comes back with RESUME
        scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
        sleep 0.5
    done
    echo "slurm-local.sh: the cluster did not come up in 30 s; logs in $DIR/slurmctld.log and $DIR/slurmd.log" >&2
    exit 1
}

stop_one() { # name pidfile
    local pid
    pid="$(cat "$2" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
    fi
}

stop() {
    need_root
    stop_one slurmd "$DIR/slurmd.pid"
    stop_one slurmctld "$DIR/slurmctld.pid"
    stop_one munged /run/munge/munged.pid
    echo "slurm: stopped" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) running && echo "slurm: up" || { echo "slurm: not running" >&2; exit 1; } ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
