#!/usr/bin/env bash
# Smoke test of scripts/ssh-hosts.sh: brings up its own hosts, checks for real
# what the ipyparallel SSH tests will rely on, takes them down and checks that
# nothing is left.
#
#   bash scripts/ssh-hosts-smoke.sh
#
# It uses its own state folder and names (default <repo>/target/ssh-hosts-smoke
# and prefix caiclust-s), so it runs beside hosts brought up by `up`.
#
# Checks:
#   - every host answers `hostname` (its own name) and `hostname -I` (its own
#     address, nothing else) over ssh
#   - a TCP listener on the controller address (root namespace) is reachable
#     from every host, one on 127.0.0.1 of the root namespace is not (the
#     "controller on loopback, engines never connect" failure)
#   - the fixtures' ipyparallel interpreter runs over ssh from the same path
#   - scp through the run's bin/scp wrapper works
#   - hosts reach each other (host 1 reads host 2's sshd banner)
#   - ssh to the run's unreachable address fails within the ConnectTimeout
#   - `cut 2`: ssh to host 2 fails within the ConnectTimeout while its sshd
#     keeps running and host 1 stays reachable; `restore 2` brings it back
#   - `kill 3`: host 3's sshd and a process started there over ssh are gone,
#     ssh to it is refused; `restore 3` restarts its sshd
#   - `down` (twice): no namespace, link, sshd or state folder of the run left
#
# Exits non-zero with a message at the first failed check (and takes the hosts
# down; CAICLUST_SSH_SMOKE_KEEP=1 leaves them up for a look).
#
# Knobs: CAICLUST_SSH_DIR, CAICLUST_SSH_PREFIX (as in ssh-hosts.sh, with the
# defaults above), CAICLUST_VENV_IPP (default <fixtures>/venv-ipp/bin/python).

# A && B || die: die runs when either check fails, as meant. CAICLUST_SSH_*
# come from the run's env.sh.
# shellcheck disable=SC2015,SC2153

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOSTS_SH=$REPO/scripts/ssh-hosts.sh
export CAICLUST_SSH_DIR=${CAICLUST_SSH_DIR:-$REPO/target/ssh-hosts-smoke}
export CAICLUST_SSH_PREFIX=${CAICLUST_SSH_PREFIX:-caiclust-s}
FIX=${CAICLUST_FIXTURES:-$REPO/.fixtures}
VENV_PY=${CAICLUST_VENV_IPP:-$FIX/venv-ipp/bin/python}
N=3
CONNECT_TIMEOUT=5 # the ssh_config's

log() { printf '[ssh-hosts-smoke] %s\n' "$*" >&2; }
die() {
    printf '[ssh-hosts-smoke] FAILED: %s\n' "$*" >&2
    exit 1
}
CHECKS=0
ok() {
    CHECKS=$((CHECKS + 1))
    log "ok: $*"
}

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n env "CAICLUST_SSH_DIR=$CAICLUST_SSH_DIR" "CAICLUST_SSH_PREFIX=$CAICLUST_SSH_PREFIX" \
            "CAICLUST_VENV_IPP=$VENV_PY" "CAICLUST_SSH_SMOKE_KEEP=${CAICLUST_SSH_SMOKE_KEEP:-0}" \
            bash "${BASH_SOURCE[0]}" "$@"
    fi
    die "needs root (or passwordless sudo), like scripts/ssh-hosts.sh"
fi
[ -x "$VENV_PY" ] || die "$VENV_PY missing: run scripts/setup-test-envs.sh (or set CAICLUST_VENV_IPP)"
python3 -c 'import socket' || die "no python3 in the root namespace for the listeners"

# A process that runs: a zombie (killed, not yet reaped by init) does not.
pid_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}
sshd_running_anywhere() {
    local p
    for p in $(pgrep -x sshd || true); do
        pid_running "$p" && return 0
    done
    return 1
}

START=$(date +%s%N)
elapsed_ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
PRIVSEP_BEFORE=$([ -d /run/sshd ] && echo yes || echo no)
LISTENER_PIDS=()
SSHD_PIDS=()
TMP=$(mktemp -d)

cleanup() {
    local rc=$?
    local p
    for p in "${LISTENER_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
    if [ "$rc" != 0 ]; then
        bash "$HOSTS_SH" status >&2 || true
        if [ "${CAICLUST_SSH_SMOKE_KEEP:-0}" = 1 ]; then
            log "hosts left up (CAICLUST_SSH_SMOKE_KEEP=1): bash $HOSTS_SH down (same CAICLUST_SSH_DIR/PREFIX)"
        else
            bash "$HOSTS_SH" down || true
        fi
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
log "install (idempotent)"
bash "$HOSTS_SH" install
bash "$HOSTS_SH" down >/dev/null 2>&1 # a leftover of an interrupted smoke run
t=$(date +%s%N)
bash "$HOSTS_SH" up --hosts "$N" >/dev/null
UP_MS=$(elapsed_ms "$t")
ok "up --hosts $N in ${UP_MS} ms"
# shellcheck source=/dev/null
source "$CAICLUST_SSH_DIR/env.sh"
read -r -a ADDRS <<<"$CAICLUST_SSH_HOSTS"
read -r -a NSS <<<"$CAICLUST_SSH_HOST_NS"
[ ${#ADDRS[@]} = "$N" ] && [ ${#NSS[@]} = "$N" ] || die "env.sh names ${#ADDRS[@]} hosts, not $N"
for f in "$CAICLUST_SSH_KEY" "$CAICLUST_SSH_CONFIG" "$CAICLUST_SSH_BIN/ssh" "$CAICLUST_SSH_BIN/scp"; do
    [ -e "$f" ] || die "env.sh names $f, which does not exist"
done
for i in $(seq 1 "$N"); do
    SSHD_PIDS+=("$(cat "$CAICLUST_SSH_DIR/h$i/sshd.pid")")
done
CTRL=$CAICLUST_SSH_CONTROLLER_IP
hssh() { # index, command...: ssh to host <index> with the run's config
    local i=$1
    shift
    ssh -F "$CAICLUST_SSH_CONFIG" "root@${ADDRS[i - 1]}" "$@" </dev/null
}

# ---------------------------------------------------------------------------
# Each host is itself.
for i in $(seq 1 "$N"); do
    name=$(hssh "$i" hostname) || die "host $i: ssh ${ADDRS[i - 1]} hostname failed"
    [ "$name" = "${NSS[i - 1]}" ] || die "host $i: hostname says '$name', expected ${NSS[i - 1]}"
    addrs=$(hssh "$i" hostname -I) || die "host $i: ssh hostname -I failed"
    [ "${addrs//[[:space:]]/}" = "${ADDRS[i - 1]}" ] ||
        die "host $i: hostname -I says '$addrs', expected only ${ADDRS[i - 1]}"
    global=$(hssh "$i" ip -4 -o addr show scope global | awk '{print $4}')
    [ "$global" = "${ADDRS[i - 1]}/24" ] || die "host $i: ip -4 addr shows '$global'"
done
ok "every host has its own hostname and only its own address (${ADDRS[*]})"

# ---------------------------------------------------------------------------
# Listeners in the root namespace: the controller address and loopback.
cat >"$TMP/listen.py" <<'EOF'
import socket, sys
ip, portfile = sys.argv[1], sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, 0))
s.listen(64)
with open(portfile + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
import os
os.rename(portfile + ".tmp", portfile)
while True:
    c, _ = s.accept()
    c.sendall(b"caiclust-smoke " + ip.encode() + b"\n")
    c.close()
EOF
python3 "$TMP/listen.py" "$CTRL" "$TMP/port-ctrl" </dev/null >/dev/null 2>"$TMP/listen-ctrl.err" &
LISTENER_PIDS+=($!)
python3 "$TMP/listen.py" 127.0.0.1 "$TMP/port-lo" </dev/null >/dev/null 2>"$TMP/listen-lo.err" &
LISTENER_PIDS+=($!)
deadline=$(($(date +%s) + 10))
while [ ! -f "$TMP/port-ctrl" ] || [ ! -f "$TMP/port-lo" ]; do
    [ "$(date +%s)" -lt "$deadline" ] ||
        die "listeners did not start: $(cat "$TMP"/listen-*.err)"
    sleep 0.05 # poll interval
done
PORT_CTRL=$(cat "$TMP/port-ctrl")
PORT_LO=$(cat "$TMP/port-lo")

# The probe, run with the fixtures' interpreter (given by its path) in every
# host: prints one verdict per target.
PROBE='
import socket, sys
for spec in sys.argv[1:]:
    ip, port = spec.rsplit(":", 1)
    try:
        c = socket.create_connection((ip, int(port)), timeout=3)
        data = c.recv(100).decode().strip()
        print(spec, "connected", repr(data))
    except ConnectionRefusedError:
        print(spec, "refused")
    except OSError as e:
        print(spec, "error", type(e).__name__, e)
'
# Both reachable from the root namespace itself (else the check below proves
# nothing).
root_out=$(python3 -c "$PROBE" "$CTRL:$PORT_CTRL" "127.0.0.1:$PORT_LO")
grep -q "^$CTRL:$PORT_CTRL connected" <<<"$root_out" && grep -q "^127.0.0.1:$PORT_LO connected" <<<"$root_out" ||
    die "the listeners are not reachable from the root namespace: $root_out"
for i in $(seq 1 "$N"); do
    out=$(hssh "$i" "$VENV_PY" -c "$(printf '%q' "$PROBE")" "$CTRL:$PORT_CTRL" "127.0.0.1:$PORT_LO") ||
        die "host $i: the probe failed over ssh: $out"
    grep -q "^$CTRL:$PORT_CTRL connected 'caiclust-smoke $CTRL'" <<<"$out" ||
        die "host $i: cannot reach the controller address $CTRL:$PORT_CTRL: $out"
    grep -q "^127.0.0.1:$PORT_LO refused" <<<"$out" ||
        die "host $i: 127.0.0.1:$PORT_LO should be the host's own loopback (refused): $out"
done
ok "every host reaches $CTRL:$PORT_CTRL in the root namespace; 127.0.0.1:$PORT_LO (root loopback) is refused there"

# ---------------------------------------------------------------------------
# The same interpreter path over ssh (shared filesystem).
for i in $(seq 1 "$N"); do
    out=$(hssh "$i" "$VENV_PY" -c "$(printf '%q' 'import ipyparallel, sys; print(sys.executable, ipyparallel.__version__)')") ||
        die "host $i: $VENV_PY cannot import ipyparallel over ssh: $out"
    [ "${out%% *}" = "$VENV_PY" ] || die "host $i: sys.executable is '${out%% *}', expected $VENV_PY"
done
ok "$VENV_PY imports ipyparallel ${out##* } on every host"

# scp (ipyparallel's SSH launcher copies connection files with it) through
# the run's wrapper.
"$CAICLUST_SSH_BIN/scp" -q "$TMP/listen.py" "root@${ADDRS[0]}:$TMP/scp-copy.py" </dev/null ||
    die "scp to host 1 failed"
cmp -s "$TMP/listen.py" "$TMP/scp-copy.py" || die "scp to host 1 copied something else"
ok "scp through $CAICLUST_SSH_BIN/scp works"

# Hosts reach each other.
out=$(hssh 1 "$VENV_PY" -c "$(printf '%q' "$PROBE")" "${ADDRS[1]}:22")
grep -q "^${ADDRS[1]}:22 connected 'SSH-2.0-" <<<"$out" || die "host 1 cannot reach host 2's sshd: $out"
ok "host 1 reads host 2's sshd banner (${ADDRS[1]}:22)"

# An address on the subnet that no host has.
t=$(date +%s%N)
if ssh -F "$CAICLUST_SSH_CONFIG" "root@$CAICLUST_SSH_UNREACHABLE_IP" true </dev/null 2>"$TMP/unreach.err"; then
    die "ssh to the unreachable address $CAICLUST_SSH_UNREACHABLE_IP worked"
fi
ms=$(elapsed_ms "$t")
[ "$ms" -le $(((CONNECT_TIMEOUT + 2) * 1000)) ] || die "ssh to $CAICLUST_SSH_UNREACHABLE_IP took ${ms} ms to fail"
ok "ssh to $CAICLUST_SSH_UNREACHABLE_IP fails in ${ms} ms: $(tr -d '\r' <"$TMP/unreach.err" | tail -n 1)"

# ---------------------------------------------------------------------------
# cut 2: unreachable, still running.
bash "$HOSTS_SH" cut 2
t=$(date +%s%N)
if hssh 2 true 2>"$TMP/cut.err"; then
    die "ssh to host 2 still works after cut"
fi
ms=$(elapsed_ms "$t")
[ "$ms" -le $(((CONNECT_TIMEOUT + 2) * 1000)) ] || die "ssh to the cut host 2 took ${ms} ms to fail"
pid_running "${SSHD_PIDS[1]}" || die "cut killed host 2's sshd (pid ${SSHD_PIDS[1]})"
hssh 1 true || die "host 1 unreachable while host 2 is cut"
ok "cut 2: ssh fails in ${ms} ms ($(tr -d '\r' <"$TMP/cut.err" | tail -n 1)), its sshd ${SSHD_PIDS[1]} still runs, host 1 fine"
bash "$HOSTS_SH" restore 2
hssh 2 true || die "host 2 not back after restore"
ok "restore 2: ssh works again"

# ---------------------------------------------------------------------------
# kill 3: everything of host 3 gone, a process started over ssh included.
bg=$(hssh 3 'setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!')
pid_running "$bg" || die "the process started in host 3 over ssh (pid '$bg') does not run"
ip netns pids "${NSS[2]}" | grep -qx "$bg" || die "pid $bg is not in ${NSS[2]}"
bash "$HOSTS_SH" kill 3
pid_running "${SSHD_PIDS[2]}" && die "host 3's sshd (pid ${SSHD_PIDS[2]}) survived kill"
pid_running "$bg" && die "host 3's process $bg survived kill"
[ -z "$(ip netns pids "${NSS[2]}")" ] || die "processes left in ${NSS[2]}: $(ip netns pids "${NSS[2]}" | tr '\n' ' ')"
t=$(date +%s%N)
if hssh 3 true 2>"$TMP/kill.err"; then
    die "ssh to host 3 still works after kill"
fi
ms=$(elapsed_ms "$t")
grep -qi refused "$TMP/kill.err" || die "ssh to the killed host 3: expected 'Connection refused', got: $(cat "$TMP/kill.err")"
hssh 1 true && hssh 2 true || die "hosts 1 and 2 unreachable after host 3 was killed"
ok "kill 3: its sshd ${SSHD_PIDS[2]} and process $bg gone, ssh refused in ${ms} ms, hosts 1-2 fine"
bash "$HOSTS_SH" restore 3
hssh 3 true || die "host 3 not back after restore"
SSHD_PIDS+=("$(cat "$CAICLUST_SSH_DIR/h3/sshd.pid")")
ok "restore 3: a new sshd (${SSHD_PIDS[-1]}), ssh works again"

# ---------------------------------------------------------------------------
# down, twice; nothing left.
for p in "${LISTENER_PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
done
LISTENER_PIDS=()
t=$(date +%s%N)
bash "$HOSTS_SH" down
DOWN_MS=$(elapsed_ms "$t")
bash "$HOSTS_SH" down || die "a second down failed"
left=$(ip netns list | awk '{print $1}' | grep -E "^$CAICLUST_SSH_PREFIX-h[0-9]+$" || true)
[ -z "$left" ] || die "namespaces left after down: $left"
left=$(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^$CAICLUST_SSH_PREFIX-(br|v[0-9]+|p[0-9]+)$" || true)
[ -z "$left" ] || die "links left after down: $left"
for p in "${SSHD_PIDS[@]}"; do
    pid_running "$p" && die "sshd $p still runs after down"
done
left=$(pgrep -f "sshd .*-f $CAICLUST_SSH_DIR/" || true)
[ -z "$left" ] || die "sshd processes of the run left: $left"
[ ! -e "$CAICLUST_SSH_DIR" ] || die "$CAICLUST_SSH_DIR left after down"
if ip -4 -o addr show | grep -q " ${CTRL}/"; then die "address $CTRL left after down"; fi
privsep_after=$([ -d /run/sshd ] && echo yes || echo no)
if [ "$PRIVSEP_BEFORE" = no ] && [ "$privsep_after" = yes ] && ! sshd_running_anywhere; then
    die "/run/sshd was created and left behind"
fi
ok "down in ${DOWN_MS} ms (and again): no namespace, link, address, sshd or state folder left; /run/sshd before: $PRIVSEP_BEFORE, after: $privsep_after"

log "all $CHECKS checks passed in $(($(elapsed_ms "$START") / 1000)) s (up: ${UP_MS} ms)"
