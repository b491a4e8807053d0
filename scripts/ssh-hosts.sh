#!/usr/bin/env bash
# Real SSH hosts for the tests (issue #15 point 2): sshd runs in two or more
# network namespaces, each with its own address, with keys made for the run.
#
#   bash scripts/ssh-hosts.sh install          # openssh-server (+ iproute2), not started
#   bash scripts/ssh-hosts.sh up [--hosts N]   # N hosts (default 2), waits until ssh works
#   bash scripts/ssh-hosts.sh status
#   bash scripts/ssh-hosts.sh cut I            # host I's link down (host keeps running)
#   bash scripts/ssh-hosts.sh kill I           # every process of host I killed, sshd included
#   bash scripts/ssh-hosts.sh restore I        # link up again, sshd restarted if it was killed
#   bash scripts/ssh-hosts.sh down             # everything removed (safe to repeat)
#
# Layout (subnet S, by default 10.231.0, the first free 10.<231..254>.0/24):
#
#   root namespace        bridge <prefix>-br, S.1/24: the controller's address,
#                         reachable from every host
#   host I                network namespace <prefix>-h<I> (and its own UTS
#                         namespace: `hostname` says <prefix>-h<I>), eth0 =
#                         S.(10+I)/24, the peer of veth <prefix>-v<I> (a port
#                         of the bridge), lo up, default route via S.1; its
#                         sshd listens on S.(10+I):22. Hosts reach each other
#                         over the bridge. 127.0.0.1 in a host is the host's
#                         own loopback, not the root namespace's.
#
# The filesystem is shared (the same paths work over ssh); login is root with
# the run's key only.
#
# State, all under ${CAICLUST_SSH_DIR:-<repo>/target/ssh-hosts}:
#   id_ed25519{,.pub}     the client key pair of the run
#   authorized_keys       its public key
#   ssh_config            IdentityFile, User root, BatchMode, no host key
#                         prompts, private known_hosts, ConnectTimeout 5
#   bin/ssh, bin/scp      ssh/scp with -F ssh_config (put bin on PATH, or
#                         give them to ipyparallel's SSH launcher)
#   h<I>/                 host I: sshd_config, host key, pid file, sshd.log
#   env.sh                exports CAICLUST_SSH_* (source it), hosts.json
#   resources             what `up` created, written before it is created,
#                         for `down`
#
# Nothing system-wide changes for good: no file under /etc/ssh, no service
# enabled or started, no sysctl. /run/sshd (sshd's privilege separation
# folder) is created when missing and removed by `down` then (unless
# another sshd still runs). `ip netns` itself keeps /run/netns.
#
# Knobs (environment):
#   CAICLUST_SSH_DIR       state folder (default <repo>/target/ssh-hosts)
#   CAICLUST_SSH_PREFIX    name prefix of namespaces and links (default
#                          caiclust; at most 10 of [a-z0-9-])
#   CAICLUST_SSH_SUBNET    first three octets, e.g. 10.231.0 (default: the
#                          first free 10.<231..254>.0/24)
#   CAICLUST_SSH_UP_TIMEOUT seconds `up`/`restore` wait for ssh (default 30)
#   CAICLUST_SKIP_APT=1    `install` fails instead of installing
#
# Run as root or with passwordless sudo (the script re-runs itself with it).

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$REPO/scripts/ssh-hosts.sh
STATE=${CAICLUST_SSH_DIR:-$REPO/target/ssh-hosts}
PREFIX=${CAICLUST_SSH_PREFIX:-caiclust}
UP_TIMEOUT=${CAICLUST_SSH_UP_TIMEOUT:-30}
SSHD=/usr/sbin/sshd
POLICY_RC=/usr/sbin/policy-rc.d
PRIVSEP_DIR=/run/sshd
case $STATE in /*) ;; *) STATE=$PWD/$STATE ;; esac

log() { printf '[ssh-hosts] %s\n' "$*" >&2; }
die() {
    printf '[ssh-hosts] ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,12p' "$SELF" | sed 's/^# \{0,1\}//'
    exit 2
}

[[ $PREFIX =~ ^[a-z0-9][a-z0-9-]{0,9}$ ]] ||
    die "CAICLUST_SSH_PREFIX='$PREFIX': at most 10 of [a-z0-9-] (link names are limited to 15 characters)"

BRIDGE=$PREFIX-br
ns_name() { printf '%s-h%s' "$PREFIX" "$1"; }
veth_name() { printf '%s-v%s' "$PREFIX" "$1"; }
peer_name() { printf '%s-p%s' "$PREFIX" "$1"; }

# ---------------------------------------------------------------------------
# Privileges: everything here needs root (netns, links, sshd as root).
# ---------------------------------------------------------------------------
become_root() {
    [ "$(id -u)" = 0 ] && return 0
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n env "CAICLUST_SSH_DIR=$STATE" "CAICLUST_SSH_PREFIX=$PREFIX" \
            "CAICLUST_SSH_SUBNET=${CAICLUST_SSH_SUBNET:-}" "CAICLUST_SSH_UP_TIMEOUT=$UP_TIMEOUT" \
            "CAICLUST_SKIP_APT=${CAICLUST_SKIP_APT:-0}" "CAICLUST_SSH_OWNER=$(id -u):$(id -g)" \
            bash "$SELF" "$@"
    fi
    die "needs root (or passwordless sudo): network namespaces, links and sshd"
}

deb_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------
POLICY_BACKUP=""
POLICY_EXISTED=0
restore_policy_rc() {
    if [ "$POLICY_EXISTED" = 1 ]; then
        cat "$POLICY_BACKUP" >"$POLICY_RC"
        rm -f "$POLICY_BACKUP"
    else
        rm -f "$POLICY_RC"
    fi
}

cmd_install() {
    local pkgs=()
    deb_installed openssh-server && [ -x "$SSHD" ] || pkgs+=(openssh-server)
    command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
    if [ ${#pkgs[@]} = 0 ]; then
        log "install: openssh-server and iproute2 already there ($("$SSHD" -V 2>&1 | head -n 1))"
        return 0
    fi
    [ "${CAICLUST_SKIP_APT:-0}" != 1 ] || die "Debian packages missing: ${pkgs[*]} (and CAICLUST_SKIP_APT=1)"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install ${pkgs[*]} by hand"
    local fresh_sshd=0
    deb_installed openssh-server || fresh_sshd=1

    # No service may start during the install: invoke-rc.d asks policy-rc.d,
    # and 101 means "action forbidden".
    if [ -e "$POLICY_RC" ]; then
        POLICY_EXISTED=1
        POLICY_BACKUP=$(mktemp)
        cat "$POLICY_RC" >"$POLICY_BACKUP"
    fi
    trap restore_policy_rc EXIT
    printf '#!/bin/sh\n# temporary, scripts/ssh-hosts.sh install\nexit 101\n' >"$POLICY_RC"
    chmod 0755 "$POLICY_RC"

    log "apt: installing ${pkgs[*]} (services not started: $POLICY_RC exits 101)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
        --no-install-recommends "${pkgs[@]}"

    restore_policy_rc
    trap - EXIT

    # The package enables its service at boot; the tests start their own
    # sshd, so the system one is left disabled (as if never enabled).
    if [ "$fresh_sshd" = 1 ]; then
        if command -v deb-systemd-helper >/dev/null 2>&1; then
            deb-systemd-helper disable ssh.service ssh.socket >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/ssh ]; then
            update-rc.d ssh disable >/dev/null 2>&1 || true
        fi
        log "install: system ssh service left disabled and not started"
    fi
    [ -x "$SSHD" ] || die "$SSHD missing after the install"
    log "install: done ($("$SSHD" -V 2>&1 | head -n 1))"
}

# ---------------------------------------------------------------------------
# State helpers
# ---------------------------------------------------------------------------
lock_state() {
    mkdir -p "$(dirname "$STATE")"
    # One lock for every run on the machine: names and subnets are global.
    local lockdir=/run/lock
    [ -d "$lockdir" ] && [ -w "$lockdir" ] || lockdir=/tmp
    exec 9>"$lockdir/caiclust-ssh-hosts.lock"
    flock 9
}

# Appends a resource line ("ns NAME", "link NAME", "dir PATH") before the
# resource is made, so that `down` removes it even after a half-done `up`.
record() { printf '%s\n' "$*" >>"$STATE/resources"; }

host_count() { cat "$STATE/hosts" 2>/dev/null || echo 0; }
subnet() { cat "$STATE/subnet"; }
host_addr() { printf '%s.%s' "$(subnet)" $((10 + $1)); }

check_index() {
    local n
    n=$(host_count)
    [ "$n" -gt 0 ] || die "no hosts are up ($STATE/hosts missing): run 'up' first"
    if ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt "$n" ]; then
        die "host '$1': expected 1..$n"
    fi
}

ssh_q() { # addr, timeout, command...
    local addr=$1 to=$2
    shift 2
    ssh -F "$STATE/ssh_config" -o ConnectTimeout="$to" "root@$addr" "$@"
}

sshd_pid() { cat "$STATE/h$1/sshd.pid" 2>/dev/null || true; }
# A process that runs: a zombie (killed, not yet reaped by init) does not.
pid_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}
# Any sshd on the machine that runs (ours are killed by then; zombies
# waiting for init do not count).
sshd_running_anywhere() {
    local p
    for p in $(pgrep -x sshd || true); do
        pid_running "$p" && return 0
    done
    return 1
}
sshd_alive() {
    local pid
    pid=$(sshd_pid "$1")
    [ -n "$pid" ] && pid_running "$pid"
}

# ---------------------------------------------------------------------------
# Subnet choice: a /24 that overlaps no address or route of the root
# namespace (other test rigs on the machine make their own).
# ---------------------------------------------------------------------------
ip2int() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

subnet_free() { # "10.231.0"
    local lo hi net len base size
    lo=$(ip2int "$1.0")
    hi=$((lo + 255))
    while read -r net; do
        [ -n "$net" ] || continue
        case $net in */*) len=${net#*/} net=${net%/*} ;; *) len=32 ;; esac
        [[ $net =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || continue
        [ "$len" -gt 0 ] || continue # default routes
        size=$((1 << (32 - len)))
        base=$(($(ip2int "$net") & ~(size - 1) & 0xffffffff))
        if [ "$base" -le "$hi" ] && [ $((base + size - 1)) -ge "$lo" ]; then
            return 1
        fi
    done < <(
        ip -4 -o addr show | awk '{print $4}'
        ip -4 route show table all | awk '$1 != "default" && $1 != "broadcast" && $1 != "local" {print $1} $1 == "local" || $1 == "broadcast" {print $2}'
    )
    return 0
}

pick_subnet() {
    if [ -n "${CAICLUST_SSH_SUBNET:-}" ]; then
        [[ $CAICLUST_SSH_SUBNET =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
            die "CAICLUST_SSH_SUBNET='$CAICLUST_SSH_SUBNET': expected three octets, e.g. 10.231.0"
        subnet_free "$CAICLUST_SSH_SUBNET" ||
            die "CAICLUST_SSH_SUBNET=$CAICLUST_SSH_SUBNET.0/24 overlaps an address or route already there (ip -4 addr; ip -4 route)"
        echo "$CAICLUST_SSH_SUBNET"
        return
    fi
    local b
    for b in $(seq 231 254); do
        if subnet_free "10.$b.0"; then
            echo "10.$b.0"
            return
        fi
    done
    die "no free 10.<231..254>.0/24 subnet: set CAICLUST_SSH_SUBNET"
}

# ---------------------------------------------------------------------------
# sshd of one host
# ---------------------------------------------------------------------------
start_sshd() { # i
    local i=$1 ns dir
    ns=$(ns_name "$i")
    dir=$STATE/h$i
    rm -f "$dir/sshd.pid" "$dir/sshd.pidfile"
    # setsid: its own session, so that a caller killing its process group
    # does not take the hosts with it; nothing inherited but the log. Its
    # own UTS namespace gives the host its own hostname. Every exec in the
    # chain replaces the process: $! is sshd's pid.
    # shellcheck disable=SC2016 # sh's own arguments
    setsid ip netns exec "$ns" unshare --uts \
        sh -c 'hostname "$1" && exec "$2" -D -e -f "$3"' sh "$ns" "$SSHD" "$dir/sshd_config" \
        </dev/null >>"$dir/sshd.log" 2>&1 &
    echo $! >"$dir/sshd.pid"
    disown # no "Killed" job notice when `down` ends it
}

# Waits until `ssh root@<host> true` works for every host given (indexes),
# failing early when an sshd died.
wait_ssh() {
    local deadline pending next i addr
    deadline=$(($(date +%s) + UP_TIMEOUT))
    pending=("$@")
    while [ ${#pending[@]} -gt 0 ]; do
        next=()
        for i in "${pending[@]}"; do
            addr=$(host_addr "$i")
            if ssh_q "$addr" 2 true </dev/null >/dev/null 2>"$STATE/h$i/ssh-wait.err"; then
                log "host $i ($addr): ssh works"
            else
                if ! sshd_alive "$i"; then
                    log "host $i: sshd exited; its log:"
                    tail -n 20 "$STATE/h$i/sshd.log" >&2 || true
                    return 1
                fi
                next+=("$i")
            fi
        done
        pending=("${next[@]}")
        [ ${#pending[@]} -gt 0 ] || break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            for i in "${pending[@]}"; do
                log "host $i ($(host_addr "$i")): no ssh after ${UP_TIMEOUT}s: $(tail -n 1 "$STATE/h$i/ssh-wait.err")"
                tail -n 5 "$STATE/h$i/sshd.log" >&2 || true
            done
            return 1
        fi
        sleep 0.2 # poll interval
    done
}

# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------
cmd_up() {
    local n=2
    while [ $# -gt 0 ]; do
        case $1 in
        --hosts) [ $# -ge 2 ] || die "--hosts needs a number"; n=$2; shift 2 ;;
        --hosts=*) n=${1#--hosts=}; shift ;;
        *) die "up: unknown argument '$1'" ;;
        esac
    done
    if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 200 ]; then
        die "--hosts $n: expected 1..200"
    fi
    [ -x "$SSHD" ] || die "$SSHD not found: run 'bash scripts/ssh-hosts.sh install' first"
    local tool
    for tool in ip ssh ssh-keygen unshare setsid flock; do
        command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (ip: iproute2, ssh: openssh-client, unshare/setsid/flock: util-linux)"
    done

    lock_state
    if [ -f "$STATE/resources" ]; then
        local have
        have=$(host_count)
        if [ "$have" = "$n" ] && [ -f "$STATE/env.sh" ]; then
            local all_ok=1 i
            for i in $(seq 1 "$n"); do
                ssh_q "$(host_addr "$i")" 2 true </dev/null >/dev/null 2>&1 || all_ok=0
            done
            if [ "$all_ok" = 1 ]; then
                log "up: already up ($n hosts): $STATE/env.sh"
                return 0
            fi
        fi
        die "$STATE already holds a run ($have hosts, not all reachable or not $n): run 'down' first"
    fi

    local start i ns veth peer addr sub
    start=$(date +%s%N)
    # Names are global: another run (another worktree, another prefix?) must
    # not be taken over.
    ip link show "$BRIDGE" >/dev/null 2>&1 &&
        die "link $BRIDGE exists but is not in $STATE: another run uses prefix '$PREFIX' (set CAICLUST_SSH_PREFIX, or 'down' with its CAICLUST_SSH_DIR)"
    for i in $(seq 1 "$n"); do
        ns=$(ns_name "$i")
        [ ! -e "/run/netns/$ns" ] ||
            die "network namespace $ns exists but is not in $STATE: another run uses prefix '$PREFIX' (set CAICLUST_SSH_PREFIX)"
        ip link show "$(veth_name "$i")" >/dev/null 2>&1 && die "link $(veth_name "$i") already exists"
    done
    sub=$(pick_subnet)

    rm -rf "$STATE"
    mkdir -p "$STATE/bin"
    STATE=$(cd "$STATE" && pwd)
    : >"$STATE/resources"
    # From here on a failure (die included) takes everything down again.
    # shellcheck disable=SC2154 # rc is assigned in the trap
    trap 'rc=$?; if [ $rc != 0 ]; then log "up failed: taking down what was made"; do_down || true; fi' EXIT
    echo "$sub" >"$STATE/subnet"
    echo "$n" >"$STATE/hosts"
    echo "$PREFIX" >"$STATE/prefix"

    # Keys of the run.
    ssh-keygen -q -t ed25519 -N '' -C "caiclust-ssh-hosts client" -f "$STATE/id_ed25519"
    cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
    : >"$STATE/known_hosts"

    # sshd's privilege separation folder.
    if [ ! -d "$PRIVSEP_DIR" ]; then
        record "dir $PRIVSEP_DIR"
        mkdir -m 0755 "$PRIVSEP_DIR"
    fi

    # The bridge: one address of the root namespace every host reaches.
    record "link $BRIDGE"
    ip link add name "$BRIDGE" type bridge forward_delay 0 stp_state 0
    ip addr add "$sub.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up

    for i in $(seq 1 "$n"); do
        ns=$(ns_name "$i")
        veth=$(veth_name "$i")
        peer=$(peer_name "$i")
        addr=$(host_addr "$i")
        record "ns $ns"
        ip netns add "$ns"
        record "link $veth"
        ip link add "$veth" type veth peer name "$peer"
        ip link set "$peer" netns "$ns"
        ip -n "$ns" link set "$peer" name eth0
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via "$sub.1"
        ip link set "$veth" master "$BRIDGE"
        ip link set "$veth" up

        mkdir -p "$STATE/h$i"
        ssh-keygen -q -t ed25519 -N '' -C "caiclust-ssh-hosts $ns" -f "$STATE/h$i/ssh_host_ed25519_key"
        cat >"$STATE/h$i/sshd_config" <<EOF
# Generated by scripts/ssh-hosts.sh for host $i ($ns): nothing from /etc/ssh.
ListenAddress $addr
Port 22
HostKey $STATE/h$i/ssh_host_ed25519_key
PidFile $STATE/h$i/sshd.pidfile
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
EOF
        "$SSHD" -t -f "$STATE/h$i/sshd_config" || die "sshd -t rejects $STATE/h$i/sshd_config"
    done

    cat >"$STATE/ssh_config" <<EOF
# Generated by scripts/ssh-hosts.sh: ssh -F $STATE/ssh_config root@<host>
Host *
    User root
    IdentityFile $STATE/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile $STATE/known_hosts
    GlobalKnownHostsFile /dev/null
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
EOF
    local w
    for w in ssh scp; do
        cat >"$STATE/bin/$w" <<EOF
#!/bin/sh
# $w with the run's config (scripts/ssh-hosts.sh)
exec $w -F '$STATE/ssh_config' "\$@"
EOF
        chmod 0755 "$STATE/bin/$w"
    done

    for i in $(seq 1 "$n"); do
        start_sshd "$i"
    done
    wait_ssh $(seq 1 "$n") || die "the hosts did not come up (logs in $STATE/h*/sshd.log)"

    write_env
    if [ -n "${CAICLUST_SSH_OWNER:-}" ]; then
        chown -R "$CAICLUST_SSH_OWNER" "$STATE"
    fi
    trap - EXIT
    local ms=$((($(date +%s%N) - start) / 1000000))
    log "up: $n hosts in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s; source $STATE/env.sh"
    cat "$STATE/env.sh"
}

write_env() {
    local n addrs="" nss="" i sub
    n=$(host_count)
    sub=$(subnet)
    for i in $(seq 1 "$n"); do
        addrs+="${addrs:+ }$(host_addr "$i")"
        nss+="${nss:+ }$(ns_name "$i")"
    done
    cat >"$STATE/env.sh" <<EOF
# Generated by scripts/ssh-hosts.sh up: source it.
export CAICLUST_SSH_DIR='$STATE'
export CAICLUST_SSH_HOSTS='$addrs'
export CAICLUST_SSH_HOST_NS='$nss'
export CAICLUST_SSH_HOST_NAMES='$nss'
export CAICLUST_SSH_USER='root'
export CAICLUST_SSH_KEY='$STATE/id_ed25519'
export CAICLUST_SSH_CONFIG='$STATE/ssh_config'
export CAICLUST_SSH_KNOWN_HOSTS='$STATE/known_hosts'
export CAICLUST_SSH_BIN='$STATE/bin'
export CAICLUST_SSH_CONTROLLER_IP='$sub.1'
export CAICLUST_SSH_SUBNET='$sub.0/24'
export CAICLUST_SSH_UNREACHABLE_IP='$sub.250'
export CAICLUST_SSH_SCRIPT='$SELF'
EOF
    {
        printf '{\n  "dir": "%s",\n  "controller_ip": "%s.1",\n  "subnet": "%s.0/24",\n' "$STATE" "$sub" "$sub"
        printf '  "unreachable_ip": "%s.250",\n  "user": "root",\n  "key": "%s/id_ed25519",\n' "$sub" "$STATE"
        printf '  "ssh_config": "%s/ssh_config",\n  "bin": "%s/bin",\n  "script": "%s",\n  "hosts": [\n' \
            "$STATE" "$STATE" "$SELF"
        for i in $(seq 1 "$n"); do
            printf '    {"index": %s, "addr": "%s", "netns": "%s", "hostname": "%s", "veth": "%s"}%s\n' \
                "$i" "$(host_addr "$i")" "$(ns_name "$i")" "$(ns_name "$i")" "$(veth_name "$i")" \
                "$([ "$i" = "$n" ] || echo ,)"
        done
        printf '  ]\n}\n'
    } >"$STATE/hosts.json"
}

# ---------------------------------------------------------------------------
# kill / cut / restore
# ---------------------------------------------------------------------------
kill_ns() { # ns: SIGKILL to every process in it until none is left
    local ns=$1 pids deadline
    [ -e "/run/netns/$ns" ] || return 0
    deadline=$(($(date +%s) + 10))
    while :; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || return 0
        # shellcheck disable=SC2086 # one pid per word
        kill -KILL $pids 2>/dev/null || true
        [ "$(date +%s)" -lt "$deadline" ] || die "processes of $ns survive SIGKILL: $pids"
        sleep 0.05 # poll interval
    done
}

cmd_kill() {
    [ $# = 1 ] || die "usage: kill I"
    lock_state
    check_index "$1"
    local ns
    ns=$(ns_name "$1")
    log "kill: every process of host $1 ($ns): $(ip netns pids "$ns" | tr '\n' ' ')"
    kill_ns "$ns"
}

cmd_cut() {
    [ $# = 1 ] || die "usage: cut I"
    lock_state
    check_index "$1"
    ip link set "$(veth_name "$1")" down
    log "cut: host $1 ($(host_addr "$1")) unreachable: link $(veth_name "$1") down; its processes keep running"
}

cmd_restore() {
    [ $# = 1 ] || die "usage: restore I"
    lock_state
    check_index "$1"
    ip link set "$(veth_name "$1")" up
    if ! sshd_alive "$1"; then
        log "restore: host $1: sshd restarted"
        start_sshd "$1"
    fi
    wait_ssh "$1" || die "host $1 did not come back"
}

# ---------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------
cmd_status() {
    local n i ns state pid alive reach
    n=$(host_count)
    if [ "$n" = 0 ]; then
        log "status: down (no run in $STATE)"
        return 0
    fi
    printf 'state %s, subnet %s.0/24, controller %s.1, bridge %s: %s\n' "$STATE" "$(subnet)" "$(subnet)" \
        "$BRIDGE" "$(ip link show "$BRIDGE" 2>/dev/null | grep -q ',UP' && echo up || echo missing/down)"
    for i in $(seq 1 "$n"); do
        ns=$(ns_name "$i")
        state=$(ip -o link show "$(veth_name "$i")" 2>/dev/null | grep -o 'state [A-Z]*' || echo 'missing')
        pid=$(sshd_pid "$i")
        alive=$(sshd_alive "$i" && echo running || echo dead)
        reach=$(ssh_q "$(host_addr "$i")" 2 true </dev/null >/dev/null 2>&1 && echo ok || echo failing)
        printf 'host %s  %-15s %-14s link %-12s sshd %s (%s)  processes %s  ssh %s\n' "$i" "$(host_addr "$i")" \
            "$ns" "${state#state }" "${pid:-?}" "$alive" "$(ip netns pids "$ns" 2>/dev/null | wc -l)" "$reach"
    done
}

# ---------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------
do_down() {
    [ -f "$STATE/resources" ] || return 0
    local kind name lines=()
    mapfile -t lines <"$STATE/resources"
    # Processes first (sshd and whatever runs in a host), then the rest in
    # reverse order of creation.
    for ((k = ${#lines[@]} - 1; k >= 0; k--)); do
        read -r kind name <<<"${lines[k]}"
        [ "$kind" = ns ] && kill_ns "$name"
    done
    for ((k = ${#lines[@]} - 1; k >= 0; k--)); do
        read -r kind name <<<"${lines[k]}"
        case $kind in
        ns)
            if [ -e "/run/netns/$name" ]; then
                ip netns del "$name"
            fi
            ;;
        link)
            # (a veth also goes away with its namespace)
            if ip link show "$name" >/dev/null 2>&1; then
                ip link del "$name" 2>/dev/null || ! ip link show "$name" >/dev/null 2>&1 ||
                    die "down: cannot delete link $name"
            fi
            ;;
        dir)
            # Another sshd may still use it (say another run of this script).
            if [ -d "$name" ]; then
                if sshd_running_anywhere; then
                    log "down: $name kept: another sshd runs"
                else
                    rmdir "$name" 2>/dev/null || log "down: $name kept: not empty"
                fi
            fi
            ;;
        esac
    done
    rm -rf "$STATE"
}

cmd_down() {
    lock_state
    if [ ! -f "$STATE/resources" ]; then
        log "down: nothing to do (no run in $STATE)"
        rm -rf "$STATE"
        return 0
    fi
    do_down
    log "down: done (namespaces, links, sshd and $STATE removed)"
}

# ---------------------------------------------------------------------------
[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
install | up | down | cut | kill | restore | status) become_root "$cmd" "$@" ;;
-h | --help | help) usage ;;
*) die "unknown subcommand '$cmd' (install, up, down, status, cut, kill, restore)" ;;
esac
case $cmd in
install) cmd_install "$@" ;;
up) cmd_up "$@" ;;
down) cmd_down "$@" ;;
cut) cmd_cut "$@" ;;
kill) cmd_kill "$@" ;;
restore) cmd_restore "$@" ;;
status) cmd_status "$@" ;;
esac
