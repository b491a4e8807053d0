#!/usr/bin/env bash
# A private, throw-away Slurm cluster on this machine, for the tests that need
# a real Slurm (issue #15): Debian's slurmctld, slurmd and munged, run with
# their own configuration, key, sockets, ports, spool, state and logs, all in
# one state folder. Nothing system-wide is configured or enabled.
#
#   bash scripts/slurm.sh install          # Debian packages (root or sudo -n)
#   bash scripts/slurm.sh up [--nodes N]   # start the cluster, wait for idle
#   bash scripts/slurm.sh status           # sinfo + squeue
#   bash scripts/slurm.sh smoke            # scripts/slurm-smoke.sh
#   bash scripts/slurm.sh down             # stop everything, leave no process
#
# Clients then need only the configuration:
#
#   source target/slurm/env.sh             # exports SLURM_CONF (and more)
#   sbatch --wrap hostname
#
# The state folder is ${CAICLUST_SLURM_DIR:-<repo>/target/slurm}:
#
#   munge/munge.key      the run's own munge key (0400), munged.{socket,pid,log,seed}
#   slurm.conf           the cluster's configuration (SLURM_CONF)
#   state/               StateSaveLocation of slurmctld
#   spool/<node>/        SlurmdSpoolDir of each slurmd
#   log/, run/           logs and pid files of every daemon
#   netns                the network namespaces made by `up` (for `down`)
#   env.sh               for the clients: SLURM_CONF, CAICLUST_SLURM_* (among
#                        them CAICLUST_SLURM_HOST_ADDR, where jobs reach this
#                        machine: with N >= 2, 127.0.0.1 in a job is its node's
#                        own loopback)
#
# Nodes: one node (`--nodes 1`, the default) is a slurmd on 127.0.0.1 in the
# machine's own network. With N >= 2 each node is a slurmd in a network
# namespace of its own (Debian's slurmd is not built with
# --enable-multiple-slurmd), joined by a private bridge with addresses in
# 10.<a>.<b>.0/24; slurmctld listens on the bridge's address. This needs root
# (CAP_NET_ADMIN). The slurmds enter their namespace with `nsenter --net`
# (not `ip netns exec`, which remounts /sys: slurmd 22.05 initialises its
# cgroup plugin even with proctrack/linuxproc and task/none, and fails without
# /sys/fs/cgroup). Every node declares this machine's real CPU count and
# memory, so N nodes share the same cores (oversubscribed on purpose).
#
# No cgroups, no accounting: ProctrackType=proctrack/linuxproc,
# TaskPlugin=task/none, AccountingStorageType=accounting_storage/none.
# A job asking for more CPUs than the cluster has is not refused: it stays
# PENDING with reason PartitionConfig (EnforcePartLimits=NO, the default).
#
# Knobs (environment):
#   CAICLUST_SLURM_DIR       the state folder (default <repo>/target/slurm)
#   CAICLUST_SLURM_TIMEOUT   seconds `up` waits for idle nodes (default 90)
#   CAICLUST_SKIP_APT=1      `install` never installs (fails if missing)

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${CAICLUST_SLURM_DIR:-$REPO/target/slurm}
TIMEOUT=${CAICLUST_SLURM_TIMEOUT:-90}
PARTITION=debug

# iproute2: the network namespaces of --nodes N >= 2.
DEB_PACKAGES=(munge slurmctld slurmd slurm-client iproute2)
POLICY=/usr/sbin/policy-rc.d

log() { printf '[slurm] %s\n' "$*"; }
die() { printf '[slurm] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------
SUDO=()
can_admin() {
    if [ "$(id -u)" = 0 ]; then
        SUDO=()
        return 0
    fi
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
        return 0
    fi
    return 1
}

deb_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

unit_enabled() {
    command -v deb-systemd-helper >/dev/null 2>&1 &&
        "${SUDO[@]}" env DPKG_MAINTSCRIPT_PACKAGE="${1%.service}" deb-systemd-helper --quiet is-enabled "$1" >/dev/null 2>&1
}

POLICY_BACKUP=""
POLICY_MADE=0
# Puts back the policy-rc.d that was there before the install (or removes
# ours when there was none).
restore_policy() {
    if [ -n "$POLICY_BACKUP" ]; then
        "${SUDO[@]}" mv -f "$POLICY_BACKUP" "$POLICY"
        POLICY_BACKUP=""
    elif [ "$POLICY_MADE" = 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
        POLICY_MADE=0
    fi
}

cmd_install() {
    { [ -r /etc/debian_version ] && command -v dpkg-query >/dev/null 2>&1; } ||
        die "install: only Debian/Ubuntu (apt) is supported; install ${DEB_PACKAGES[*]} yourself"
    local missing=() p
    for p in "${DEB_PACKAGES[@]}"; do
        deb_installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} = 0 ]; then
        log "install: ${DEB_PACKAGES[*]} already installed"
        return 0
    fi
    [ "${CAICLUST_SKIP_APT:-0}" = 1 ] &&
        die "Debian packages missing: ${missing[*]} (and CAICLUST_SKIP_APT=1)"
    can_admin || die "Debian packages missing: ${missing[*]}; run as root (or with passwordless sudo) once"

    # The packages' maintainer scripts must not start (or enable) munge,
    # slurmctld or slurmd: policy-rc.d answering 101 ("action forbidden")
    # for the time of the install only.
    [ ! -e "$POLICY.caiclust-orig" ] ||
        die "$POLICY.caiclust-orig exists (an interrupted install?): move it back to $POLICY first"
    if [ -e "$POLICY" ]; then
        # Set aside as it is (same file, same times), put back afterwards.
        "${SUDO[@]}" mv "$POLICY" "$POLICY.caiclust-orig"
        POLICY_BACKUP=$POLICY.caiclust-orig
    else
        POLICY_MADE=1
    fi
    trap restore_policy EXIT
    printf '#!/bin/sh\n# caiclust scripts/slurm.sh install: no service starts\nexit 101\n' |
        "${SUDO[@]}" tee "$POLICY.caiclust-new" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY.caiclust-new"
    "${SUDO[@]}" mv -f "$POLICY.caiclust-new" "$POLICY"

    # Their postinst also enables the units (symlinks for systemd): the
    # ones enabled by this install are disabled again afterwards.
    local units=(munge.service slurmctld.service slurmd.service) u enabled_before=()
    for u in "${units[@]}"; do
        unit_enabled "$u" && enabled_before+=("$u")
    done

    log "apt: installing ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
    restore_policy
    trap - EXIT

    for u in "${units[@]}"; do
        case " ${enabled_before[*]} " in *" $u "*) continue ;; esac
        if unit_enabled "$u"; then
            log "install: disabling $u (enabled by its package's install)"
            "${SUDO[@]}" env DPKG_MAINTSCRIPT_PACKAGE="${u%.service}" deb-systemd-helper disable "$u" || log "warning: cannot disable $u"
        fi
    done

    # Packages that start their daemon without invoke-rc.d would be caught
    # here: nothing of theirs may run now (ours run from the state folder).
    local pid
    for pid in $(pgrep -x munged || true) $(pgrep -x slurmctld || true) $(pgrep -x slurmd || true); do
        if ! { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -q '^CAICLUST_SLURM_DAEMON='; then
            log "warning: a system daemon runs after the install: $(ps -o pid=,args= -p "$pid" || true)"
        fi
    done
    log "install: done ($(dpkg-query -W -f='${Version}' slurmctld))"
}

require_tools() {
    local t
    for t in munged slurmctld slurmd sinfo squeue scancel; do
        command -v "$t" >/dev/null 2>&1 ||
            die "$t not found; run: bash scripts/slurm.sh install"
    done
}

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

# Short names for this state folder's namespaces and links (Linux interface
# names are at most 15 characters), and its private /24.
net_ids() {
    local h
    h=$(printf '%s' "$DIR" | md5sum | cut -c1-6)
    TAG=csl$h
    BRIDGE=${TAG}br
    # 10.<a>.<b>.0/24 with a in 200..249 and b in 0..255 from the hash.
    NET=10.$((200 + 0x${h:0:2} % 50)).$((0x${h:2:2})).
}

port_busy() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && return 0
        return 1
    fi
    # /proc/net/tcp{,6}: local address column, port in hex.
    local hex
    hex=$(printf ':%04X ' "$port")
    grep -q "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Two free consecutive ports from 6817 upwards (slurmctld, slurmd).
pick_ports() {
    local p=6817
    while [ $p -lt 7817 ]; do
        if ! port_busy $p && ! port_busy $((p + 1)); then
            CTLD_PORT=$p
            SLURMD_PORT=$((p + 1))
            return 0
        fi
        p=$((p + 2))
    done
    die "no two free consecutive ports in 6817..7817"
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# A live process started by `up` from this state folder (not a recycled pid).
our_pid() {
    pid_alive "${1:-}" &&
        { tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null | grep -qxF "CAICLUST_SLURM_DAEMON=$DIR"
}

read_pid() {
    if [ -s "$1" ]; then tr -dc '0-9' <"$1"; fi
}

# Stops the processes of pid files (name=file ...): TERM to all, then KILL
# to those still there after a deadline.
stop_pidfiles() {
    local spec name file pid pids=() deadline
    for spec in "$@"; do
        name=${spec%%=*}
        file=${spec#*=}
        pid=$(read_pid "$file")
        if pid_alive "$pid" && ! our_pid "$pid"; then
            log "down: $file names pid $pid, which is not ours: left alone"
        elif pid_alive "$pid"; then
            log "down: stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$file"
    done
    deadline=$(($(date +%s) + 15))
    for pid in ${pids[@]+"${pids[@]}"}; do
        while pid_alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do
            sleep 0.1
        done
        if pid_alive "$pid"; then
            log "down: pid $pid ignored TERM; KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# Processes that carry this state folder's daemon tag in their environment:
# every daemon `up` starts, and what they start themselves (slurmstepd).
# (Clients and jobs do not carry it: env.sh does not export it.)
tagged_pids() {
    local f pid
    for f in /proc/[0-9]*/environ; do
        pid=${f#/proc/}
        pid=${pid%/environ}
        [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] && continue
        if { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qxF "CAICLUST_SLURM_DAEMON=$DIR"; then
            printf '%s\n' "$pid"
        fi
    done
}

# Clients of this cluster still waiting for it (an srun whose node died):
# srun, salloc, sattach and sbcast processes with our SLURM_CONF.
client_pids() {
    local f pid comm
    for f in /proc/[0-9]*/environ; do
        pid=${f#/proc/}
        pid=${pid%/environ}
        comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        case $comm in srun | salloc | sattach | sbcast) ;; *) continue ;; esac
        if { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qxF "SLURM_CONF=$DIR/slurm.conf"; then
            printf '%s\n' "$pid"
        fi
    done
}

tails() {
    local f
    for f in "$DIR"/log/*.log "$DIR"/munge/munged.log; do
        [ -e "$f" ] || continue
        printf '\n===== %s (last 25 lines)\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}

clients_env() {
    export SLURM_CONF=$DIR/slurm.conf
}

# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------
cmd_up() {
    local nodes=1
    while [ $# -gt 0 ]; do
        case $1 in
            --nodes) [ $# -ge 2 ] || die "--nodes needs a number"; nodes=$2; shift 2 ;;
            --nodes=*) nodes=${1#--nodes=}; shift ;;
            -h|--help) usage 0 ;;
            *) die "up: unknown argument $1" ;;
        esac
    done
    case $nodes in '' | *[!0-9]* | 0) die "--nodes must be a positive integer, not '$nodes'" ;; esac
    [ "$nodes" -le 64 ] || die "--nodes $nodes: at most 64"
    require_tools

    if [ -d "$DIR" ]; then DIR=$(cd "$DIR" && pwd); fi
    if our_pid "$(read_pid "$DIR/run/slurmctld.pid")"; then
        die "a cluster already runs from $DIR; run: bash scripts/slurm.sh down"
    fi
    if [ "$nodes" -ge 2 ]; then
        [ "$(id -u)" = 0 ] || die "--nodes $nodes needs root (one network namespace per node)"
        command -v ip >/dev/null 2>&1 || die "--nodes $nodes needs iproute2 (ip)"
    fi

    local start
    start=$(date +%s)
    # Whatever a previous run left (its slurmctld is gone: checked above).
    if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -e "$DIR/.caiclust-slurm" ] &&
        ! grep -qs '^# Written by scripts/slurm.sh' "$DIR/slurm.conf"; then
        die "$DIR is not empty and was not made by this script; choose another CAICLUST_SLURM_DIR"
    fi
    cmd_down quiet
    rm -rf "$DIR"
    mkdir -p "$DIR"/{munge,state,spool,log,run}
    DIR=$(cd "$DIR" && pwd)
    : >"$DIR/.caiclust-slurm"
    # A failure from here on stops what was started (the logs stay).
    trap up_failed EXIT
    # munged wants its socket folder searchable by all, writable by us only.
    chmod 0755 "$DIR/munge"
    # Every daemon started from here on carries the tag (see tagged_pids).
    export CAICLUST_SLURM_DAEMON=$DIR

    local host user ncpu mem_mb
    host=$(hostname -s)
    user=$(id -un)
    ncpu=$(nproc)
    # RealMemory a little under MemTotal: slurmd drains a node that reports
    # less than its configuration.
    mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.95 }' /proc/meminfo)

    # -- munge ---------------------------------------------------------------
    local M=$DIR/munge
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$M/munge.key" --force >/dev/null
    else
        dd if=/dev/urandom of="$M/munge.key" bs=1 count=1024 status=none
    fi
    chmod 0400 "$M/munge.key"
    log "up: munged (socket $M/munged.socket)"
    munged --socket="$M/munged.socket" --pid-file="$M/munged.pid" \
        --key-file="$M/munge.key" --log-file="$M/munged.log" \
        --seed-file="$M/munged.seed" --num-threads=2 ||
        { tails; die "munged did not start"; }
    wait_for "munged socket" 10 test -S "$M/munged.socket" || { tails; die "munged has no socket"; }

    # -- network -------------------------------------------------------------
    local ctld_addr=127.0.0.1 addrs=() i
    pick_ports
    if [ "$nodes" -ge 2 ]; then
        net_ids
        ctld_addr=${NET}1
        : >"$DIR/netns"
        ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE (CAP_NET_ADMIN?)"
        printf 'link %s\n' "$BRIDGE" >>"$DIR/netns"
        ip addr add "$ctld_addr/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
        for i in $(seq 1 "$nodes"); do
            local ns=${TAG}n$i veth=${TAG}v$i
            ip netns add "$ns" || die "cannot create network namespace $ns"
            printf 'netns %s\n' "$ns" >>"$DIR/netns"
            ip link add "$veth" type veth peer name "${veth}p"
            printf 'link %s\n' "$veth" >>"$DIR/netns"
            ip link set "${veth}p" netns "$ns"
            ip link set "$veth" master "$BRIDGE"
            ip link set "$veth" up
            ip -n "$ns" link set lo up
            ip -n "$ns" link set "${veth}p" name eth0
            ip -n "$ns" addr add "${NET}$((i + 1))/24" dev eth0
            ip -n "$ns" link set eth0 up
            addrs+=("${NET}$((i + 1))")
        done
    else
        addrs=(127.0.0.1)
    fi

    # -- configuration -------------------------------------------------------
    {
        cat <<EOF
# Written by scripts/slurm.sh up ($(date -u +%FT%TZ)), for $DIR.
ClusterName=caiclust
SlurmctldHost=$host($ctld_addr)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$M/munged.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
PropagateResourceLimits=NONE
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=30
TreeWidth=64
MailProg=/bin/true
EOF
        for i in $(seq 1 "$nodes"); do
            printf 'NodeName=node%s NodeHostname=%s NodeAddr=%s CPUs=%s RealMemory=%s State=UNKNOWN\n' \
                "$i" "$host" "${addrs[$((i - 1))]}" "$ncpu" "$mem_mb"
        done
        printf 'PartitionName=%s Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n' "$PARTITION"
    } >"$DIR/slurm.conf"
    clients_env

    # -- daemons -------------------------------------------------------------
    log "up: slurmctld (port $CTLD_PORT on $ctld_addr)"
    slurmctld -f "$DIR/slurm.conf" -i || { tails; die "slurmctld did not start"; }
    for i in $(seq 1 "$nodes"); do
        mkdir -p "$DIR/spool/node$i"
        log "up: slurmd node$i on ${addrs[$((i - 1))]}:$SLURMD_PORT"
        if [ "$nodes" -ge 2 ]; then
            # nsenter --net, not `ip netns exec`: that one remounts /sys, and
            # slurmd (22.05) wants the cgroup mount under /sys/fs/cgroup.
            nsenter --net="/run/netns/${TAG}n$i" slurmd -f "$DIR/slurm.conf" -N "node$i" ||
                { tails; die "slurmd node$i did not start"; }
        else
            slurmd -f "$DIR/slurm.conf" -N "node$i" || { tails; die "slurmd node$i did not start"; }
        fi
    done

    write_env "$nodes" "$ctld_addr"

    # -- wait for idle -------------------------------------------------------
    if ! wait_for "$nodes idle node(s)" "$TIMEOUT" all_idle "$nodes"; then
        sinfo -N 2>&1 | sed 's/^/[slurm]   /' >&2 || true
        tails
        die "the nodes are not idle after ${TIMEOUT}s (logs above; bash scripts/slurm.sh down cleans up)"
    fi
    trap - EXIT
    sinfo -N | sed 's/^/[slurm]   /'
    log "up: $nodes node(s) idle after $(($(date +%s) - start))s; source $DIR/env.sh"
}

up_failed() {
    local rc=$?
    trap - EXIT
    [ "$rc" = 0 ] && return 0
    log "up failed: stopping what it started (logs kept in $DIR/log, $DIR/munge)"
    cmd_down quiet || true
    exit "$rc"
}

all_idle() {
    local want=$1 n
    n=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 == "idle"' | sort -u | wc -l)
    [ "$n" -ge "$want" ]
}

# wait_for <what> <seconds> <command...>: polls the command until it succeeds
# or the deadline passes.
wait_for() {
    local what=$1 secs=$2 deadline
    shift 2
    deadline=$(($(date +%s) + secs))
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "timed out (${secs}s) waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

write_env() {
    cat >"$DIR/env.sh" <<EOF
# Written by scripts/slurm.sh up: source it to use the private cluster.
export SLURM_CONF='$DIR/slurm.conf'
export CAICLUST_SLURM_DIR='$DIR'
export CAICLUST_SLURM_NODES=$1
export CAICLUST_SLURM_PARTITION=$PARTITION
export CAICLUST_SLURM_CPUS_PER_NODE=$(nproc)
# The address at which jobs reach this machine (a controller a job's tasks
# connect to listens there): 127.0.0.1 with one node, the bridge's address
# when the nodes are network namespaces (there 127.0.0.1, and the hostname,
# which /etc/hosts may map to 127.0.0.1, are the node's own loopback).
export CAICLUST_SLURM_HOST_ADDR=$2
EOF
}

# ---------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------
cmd_down() {
    local quiet=${1:-}
    if [ ! -d "$DIR" ]; then
        [ -n "$quiet" ] || log "down: nothing to do ($DIR does not exist)"
        return 0
    fi
    DIR=$(cd "$DIR" && pwd)
    local f pid name
    if [ -f "$DIR/slurm.conf" ] && our_pid "$(read_pid "$DIR/run/slurmctld.pid")" &&
        command -v scancel >/dev/null 2>&1; then
        clients_env
        log "down: scancel all jobs"
        timeout 20 scancel --quiet --user="$(id -un)" 2>/dev/null || true
        wait_for "an empty queue" 15 queue_empty || true
    fi
    local specs=()
    for f in "$DIR"/run/slurmd-*.pid; do
        [ -e "$f" ] || continue
        name=${f##*/}
        specs+=("${name%.pid}=$f")
    done
    # The slurmds and slurmctld together (each takes a second or two), then
    # munged, which they use until the end.
    stop_pidfiles ${specs[@]+"${specs[@]}"} "slurmctld=$DIR/run/slurmctld.pid"
    stop_pidfiles "munged=$DIR/munge/munged.pid"

    # What the daemons left behind: slurmstepd (carrying the tag in its
    # environment), anything still inside our namespaces, and clients still
    # waiting for this cluster.
    local left=()
    mapfile -t left < <(tagged_pids; client_pids)
    if [ -f "$DIR/netns" ]; then
        local kind name
        while read -r kind name; do
            [ "$kind" = netns ] || continue
            ip netns list 2>/dev/null | grep -qw "^$name" || continue
            mapfile -t -O "${#left[@]}" left < <(ip netns pids "$name" 2>/dev/null || true)
        done <"$DIR/netns"
    fi
    if [ ${#left[@]} -gt 0 ]; then
        log "down: killing leftover processes ${left[*]}"
        kill -KILL "${left[@]}" 2>/dev/null || true
        for pid in "${left[@]}"; do
            wait_for "pid $pid to exit" 10 pid_gone "$pid" || true
        done
    fi

    if [ -f "$DIR/netns" ]; then
        local kind name
        # The links first (a veth's peer goes with it), then the namespaces.
        while read -r kind name; do
            [ "$kind" = link ] || continue
            ip link show "$name" >/dev/null 2>&1 || continue
            ip link delete "$name" 2>/dev/null || ! ip link show "$name" >/dev/null 2>&1 ||
                log "warning: cannot delete link $name"
        done <"$DIR/netns"
        while read -r kind name; do
            [ "$kind" = netns ] || continue
            ip netns list 2>/dev/null | grep -qw "^$name" || continue
            log "down: deleting network namespace $name"
            ip netns delete "$name" || log "warning: cannot delete network namespace $name"
        done <"$DIR/netns"
        rm -f "$DIR/netns"
    fi

    mapfile -t left < <(tagged_pids)
    [ ${#left[@]} = 0 ] || die "down: processes still running: ${left[*]}"
    [ -n "$quiet" ] || log "down: done (state kept in $DIR for the logs)"
}

pid_gone() { ! pid_alive "$1"; }

queue_empty() { [ -z "$(squeue -h -o %i 2>/dev/null)" ]; }

# ---------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------
cmd_status() {
    [ -f "$DIR/slurm.conf" ] || die "no cluster in $DIR; run: bash scripts/slurm.sh up"
    DIR=$(cd "$DIR" && pwd)
    require_tools
    clients_env
    our_pid "$(read_pid "$DIR/run/slurmctld.pid")" ||
        die "status: no cluster runs from $DIR (slurmctld is not running)"
    local ok=0 f name
    for f in "$DIR/munge/munged.pid" "$DIR/run/slurmctld.pid" "$DIR"/run/slurmd-*.pid; do
        [ -e "$f" ] || continue
        name=${f##*/}
        if our_pid "$(read_pid "$f")"; then
            log "status: ${name%.pid} runs (pid $(read_pid "$f"))"
        else
            log "status: ${name%.pid} is NOT running"
            ok=1
        fi
    done
    echo "== sinfo -N"
    sinfo -N || ok=1
    echo "== squeue"
    squeue || ok=1
    return $ok
}

# ---------------------------------------------------------------------------
case ${1:-} in
    install) shift; cmd_install "$@" ;;
    up) shift; cmd_up "$@" ;;
    down) shift; [ $# = 0 ] || die "down takes no argument"; cmd_down ;;
    status) shift; cmd_status ;;
    smoke) shift; exec bash "$REPO/scripts/slurm-smoke.sh" "$@" ;;
    -h | --help | help) usage 0 ;;
    *) usage 2 >&2 ;;
esac
