#!/usr/bin/env bash
# Benchmark: `caiclust probe` (static, reads binaries) against
# `python -m threadpoolctl -i numpy scipy sklearn cv2` (imports everything),
# on the PyPI fixture venv, side by side in one hyperfine run.
#
#   bash scripts/bench-probe.sh
#
# Not part of the test suite. Exits non-zero when the target is missed:
# caiclust probe (cached interpreter query, default output and --json) and
# caiclust-check (probe, rules and report, human and SARIF output) must each
# take at most BENCH_TARGET (0.1) of threadpoolctl's mean wall time.
#
# What it does:
#   1. checks hyperfine (installs the Debian package when root, else fails)
#      and the fixture venv (built by scripts/setup-test-envs.sh);
#   2. cargo build --release -p caiclust-cli (caiclust and caiclust-check);
#   3. waits (bounded) for the 1-minute load average to settle, and records it
#      and the CPU time other processes used while each phase ran;
#   4. warm page cache: one hyperfine run with every row (warmup + runs);
#   5. cold page cache: drops the page cache before every run (root only;
#      recorded as "not permitted" otherwise);
#   6. prints the machine, the versions, the tables and the ratios.
#
# Results go to ${BENCH_OUT:-<target dir>/bench-probe}/: warm.md, warm.json,
# cold.md, cold.json, summary.txt (everything printed at the end).
#
# The caiclust interpreter-query cache lives in a private folder
# (XDG_CACHE_HOME=$BENCH_OUT/xdg-cache) so the run starts from a known state;
# "cached" rows are filled by the warmup, "no cache" rows set
# CAICLUST_NO_CACHE=1.
#
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some machines for old OpenBLAS
# builds) slow a current numpy down: they are unset for this script's
# commands only, and the OpenBLAS kernel threadpoolctl then reports is
# recorded.
#
# Knobs (environment):
#   BENCH_RUNS=20  BENCH_WARMUP=3   warm-cache runs and warmups per row
#   BENCH_COLD_RUNS=5                cold-cache runs per row (0 = skip)
#   BENCH_TARGET=0.1                 max ratio caiclust/threadpoolctl
#   BENCH_MAX_LOAD=0.5               1-min load to wait for before measuring
#   BENCH_LOAD_WAIT=300              seconds to wait for it at most
#   BENCH_MAX_FOREIGN=0.10           CPU share (of one core) other processes
#                                    may use during a phase before the summary
#                                    warns that the numbers are disturbed
#   BENCH_OUT                        results folder
#   CAICLUST_FIXTURES                fixture folder (default <repo>/.fixtures)

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

RUNS=${BENCH_RUNS:-20}
WARMUP=${BENCH_WARMUP:-3}
COLD_RUNS=${BENCH_COLD_RUNS:-5}
TARGET=${BENCH_TARGET:-0.1}
MAX_LOAD=${BENCH_MAX_LOAD:-0.5}
LOAD_WAIT=${BENCH_LOAD_WAIT:-300}
MAX_FOREIGN=${BENCH_MAX_FOREIGN:-0.10}

FIX=${CAICLUST_FIXTURES:-$REPO/.fixtures}
VENV=$FIX/venv-pypi
PY=$VENV/bin/python
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BIN=$TARGET_DIR/release/caiclust
OUT=${BENCH_OUT:-$TARGET_DIR/bench-probe}

die() { echo "bench-probe: $*" >&2; exit 2; }
log() { echo "=== $*" >&2; }

# --- 1. prerequisites --------------------------------------------------------

if ! command -v hyperfine >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing hyperfine (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o Dpkg::Use-Pty=0 --no-install-recommends hyperfine
    else
        die "hyperfine is not installed and this is not root on Debian/Ubuntu: install it (apt-get install hyperfine, or cargo install hyperfine) and rerun"
    fi
fi
command -v hyperfine >/dev/null 2>&1 || die "hyperfine still missing after apt-get install"

[ -x "$PY" ] || die "no fixture venv at $VENV: run 'bash scripts/setup-test-envs.sh' first"
"$PY" -c 'import threadpoolctl' 2>/dev/null \
    || die "threadpoolctl is not importable in $VENV: rerun 'bash scripts/setup-test-envs.sh'"
SITE=$("$PY" -c 'import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))')
[ -d "$SITE" ] || die "site-packages not found ($SITE)"

# A Python to read hyperfine's JSON: the system one, else the venv's.
JPY=$(command -v python3 || echo "$PY")

# --- 2. build ----------------------------------------------------------------

log "cargo build --release -p caiclust-cli"
cargo build --release -p caiclust-cli
[ -x "$BIN" ] || die "release binary not found at $BIN"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export XDG_CACHE_HOME=$OUT/xdg-cache
unset CAICLUST_CACHE_DIR  # (it would take precedence)
rm -rf "$XDG_CACHE_HOME"
mkdir -p "$XDG_CACHE_HOME"
unset CAICLUST_NO_CACHE

ORIG_CORETYPE=${OPENBLAS_CORETYPE-<unset>}
ORIG_L2=${OPENBLAS_L2_SIZE-<unset>}
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

# --- 3. load -----------------------------------------------------------------

load1() { cut -d' ' -f1 /proc/loadavg; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
busy_procs() {
    ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | awk '$1 >= 5 { printf "%s(%s%%) ", $2, $1 }' | head -c 300 || true
}

# CPU used by processes other than this script's children while a phase ran:
# the system's busy time (/proc/stat) less our children's user+system time
# (bash `times`). Steal time (the hypervisor giving the CPU to someone else)
# is reported on its own.
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
sys_cpu() { awk -v hz="$HZ" '/^cpu / { printf "%.2f %.2f\n", ($2 + $3 + $4 + $7 + $8) / hz, $9 / hz }' /proc/stat; }
# `times` must run in this shell, not in a $(...) subshell (whose children
# are not ours): its output goes through a file.
child_cpu() {
    times >"$OUT/.times"
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.2f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$OUT/.times"
}
now() { date +%s.%N; }
phase_start() {
    read -r P_BUSY P_STEAL < <(sys_cpu)
    child_cpu >"$OUT/.child0"
    P_T=$(now)
}
# Sets PHASE_MSG to "other processes used ..."; prefixes it with WARNING
# when they used more than BENCH_MAX_FOREIGN of one core.
phase_end() {
    local busy steal t
    read -r busy steal < <(sys_cpu)
    t=$(now)
    child_cpu >"$OUT/.child1"
    if PHASE_MSG=$(awk -v b0="$P_BUSY" -v b1="$busy" -v s0="$P_STEAL" -v s1="$steal" \
        -v c0="$(cat "$OUT/.child0")" -v c1="$(cat "$OUT/.child1")" \
        -v t0="$P_T" -v t1="$t" -v max="$MAX_FOREIGN" 'BEGIN {
        wall = t1 - t0; other = (b1 - b0) - (c1 - c0); if (other < 0) other = 0
        printf "other processes used %.1f CPU-s in %.0f s (%.0f%% of one core); steal %.1f s; this benchmark %.1f CPU-s",
            other, wall, 100 * other / wall, s1 - s0, c1 - c0
        exit !(other / wall <= max) }'); then
        :
    else
        PHASE_MSG="WARNING: $PHASE_MSG. Rerun when the machine is quiet."
    fi
    rm -f "$OUT/.times" "$OUT/.child0" "$OUT/.child1"
}

waited=0
while above "$(load1)" "$MAX_LOAD" && [ "$waited" -lt "$LOAD_WAIT" ]; do
    [ "$waited" = 0 ] && log "load $(load1) > $MAX_LOAD: waiting up to ${LOAD_WAIT}s (busy: $(busy_procs))"
    sleep 10
    waited=$((waited + 10))
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
LOAD_NOTE=""
if above "$(load1)" "$MAX_LOAD"; then
    LOAD_NOTE="WARNING: load still $(load1) > $MAX_LOAD after ${waited}s; busy: $(busy_procs). Rerun when the machine is quiet."
    log "$LOAD_NOTE"
fi

# --- 4. warm page cache ------------------------------------------------------

TPC_ALL="$PY -m threadpoolctl -i numpy scipy sklearn cv2"
TPC_NUMPY="$PY -m threadpoolctl -i numpy"
PROBE="$BIN probe --python $PY"
# caiclust-check as CI runs it: probe plus rules, with the start method the
# recommendation gives (exit status 0; with fork it would be 1, an error).
CHECK="$TARGET_DIR/release/caiclust-check --python $PY --start-method forkserver"

# Row order matters: the summary reads results by index.
NAMES=(
    "caiclust probe (cached)"
    "caiclust probe --json (cached)"
    "caiclust probe (no cache)"
    "caiclust probe --json (no cache)"
    "caiclust probe --tree site-packages"
    "threadpoolctl -i numpy scipy sklearn cv2"
    "threadpoolctl -i numpy"
    "caiclust-check --python (cached)"
    "caiclust-check --python --format sarif (cached)"
)
CMDS=(
    "$PROBE"
    "$PROBE --json"
    "env CAICLUST_NO_CACHE=1 $PROBE"
    "env CAICLUST_NO_CACHE=1 $PROBE --json"
    "$BIN probe --tree $SITE"
    "$TPC_ALL"
    "$TPC_NUMPY"
    "$CHECK"
    "$CHECK --format sarif"
)

# Sanity: every command works, and the cache gets filled.
for c in "${CMDS[@]}"; do
    $c >/dev/null || die "command failed: $c"
done
ls "$XDG_CACHE_HOME"/caiclust/*.json >/dev/null 2>&1 \
    || die "no cache file under $XDG_CACHE_HOME/caiclust after a probe: the cached rows would not be cached"

# Which OpenBLAS kernel threadpoolctl sees (with the variables unset).
KERNELS=$($TPC_ALL 2>/dev/null | "$JPY" -c '
import json, sys
seen = []
for m in json.load(sys.stdin):
    if m.get("internal_api") == "openblas":
        seen.append("%s %s: %s" % (m.get("prefix"), m.get("version"), m.get("architecture")))
print("; ".join(seen) or "none")')

hf_args=(-N --style basic)
named=()
for i in "${!CMDS[@]}"; do named+=(-n "${NAMES[$i]}" "${CMDS[$i]}"); done

log "warm page cache: $WARMUP warmups + $RUNS runs per row (load $(cut -d' ' -f1-3 /proc/loadavg))"
phase_start
hyperfine "${hf_args[@]}" --warmup "$WARMUP" --runs "$RUNS" \
    --export-markdown "$OUT/warm.md" --export-json "$OUT/warm.json" "${named[@]}"
phase_end
FOREIGN_WARM=$PHASE_MSG
LOAD_WARM_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 5. cold page cache ------------------------------------------------------

COLD_NOTE=""
FOREIGN_COLD="-"
drop_caches() { sync && echo 3 >/proc/sys/vm/drop_caches; }
if [ "$COLD_RUNS" = 0 ]; then
    COLD_NOTE="skipped (BENCH_COLD_RUNS=0)"
elif ! (drop_caches) 2>/dev/null; then
    COLD_NOTE="not measured: dropping the page cache (echo 3 > /proc/sys/vm/drop_caches) is not permitted here (uid $(id -u))"
else
    log "cold page cache: drop_caches before each of $COLD_RUNS runs per row"
    cold_named=(
        -n "${NAMES[0]}" "${CMDS[0]}"
        -n "${NAMES[2]}" "${CMDS[2]}"
        -n "${NAMES[4]}" "${CMDS[4]}"
        -n "${NAMES[5]}" "${CMDS[5]}"
    )
    phase_start
    hyperfine "${hf_args[@]}" --runs "$COLD_RUNS" \
        --prepare "sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'" \
        --export-markdown "$OUT/cold.md" --export-json "$OUT/cold.json" "${cold_named[@]}"
    phase_end
    FOREIGN_COLD=$PHASE_MSG
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 6. summary --------------------------------------------------------------

pkg_versions=$("$PY" - <<'EOF'
from importlib.metadata import version, PackageNotFoundError
out = []
for d in ["numpy", "scipy", "scikit-learn", "opencv-python-headless", "opencv-python", "threadpoolctl"]:
    try:
        out.append("%s %s" % (d, version(d)))
    except PackageNotFoundError:
        pass
print(", ".join(out))
EOF
)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --no-ext-diff --quiet HEAD -- 2>/dev/null; then rev="$rev (+ uncommitted changes)"; fi

{
    echo "## Machine"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), nproc $(nproc)"
    echo "- Memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    # shellcheck source=/dev/null
    echo "- OS: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "- Load (1/5/15 min): start $LOAD_START; after warm runs $LOAD_WARM_END; end $LOAD_END (includes this benchmark's own processes)"
    echo "- During the warm runs: $FOREIGN_WARM"
    echo "- During the cold runs: $FOREIGN_COLD"
    [ -n "$LOAD_NOTE" ] && echo "- $LOAD_NOTE"
    echo
    echo "## Versions"
    echo "- caiclust: $rev ($("$BIN" --version 2>/dev/null || echo '?'))"
    echo "- Python: $("$PY" -c 'import sys, platform; print(platform.python_implementation(), sys.version.split()[0])')"
    echo "- venv packages: $pkg_versions"
    echo "- hyperfine: $(hyperfine --version | awk '{print $2}')"
    echo "- OPENBLAS_CORETYPE=$ORIG_CORETYPE, OPENBLAS_L2_SIZE=$ORIG_L2 in the caller's environment (unset for the benchmark)"
    echo "- OpenBLAS kernels threadpoolctl reports: $KERNELS"
    echo
    echo "## Warm page cache ($WARMUP warmups, $RUNS runs)"
    echo
    cat "$OUT/warm.md"
    echo
    echo "## Cold page cache"
    echo
    if [ -f "$OUT/cold.json" ] && [ -z "$COLD_NOTE" ]; then
        echo "drop_caches before every run, $COLD_RUNS runs, no warmup:"
        echo
        cat "$OUT/cold.md"
    else
        echo "$COLD_NOTE"
    fi
    echo
    echo "## Ratios (mean wall time / threadpoolctl -i numpy scipy sklearn cv2)"
    echo
} >"$OUT/summary.txt"

set +e
"$JPY" - "$OUT/warm.json" "$OUT/cold.json" "$TARGET" >>"$OUT/summary.txt" <<'EOF'
import json, os, sys
warm_path, cold_path, target = sys.argv[1], sys.argv[2], float(sys.argv[3])

def load(path):
    with open(path) as f:
        return json.load(f)["results"]

def row(r, base):
    return "| %-40s | %8.1f ms | %8.1f ms | %6.3f | %5.1fx |" % (
        r["command"], r["mean"] * 1e3, r["median"] * 1e3,
        r["mean"] / base["mean"], base["mean"] / r["mean"])

warm = load(warm_path)
base = warm[5]  # threadpoolctl -i numpy scipy sklearn cv2
def header():
    print("| %-40s | %11s | %11s | %6s | %6s |" % ("command", "mean", "median", "ratio", "faster"))
    print("|%s|%s|%s|%s|%s|" % ("-" * 42, "-" * 13, "-" * 13, "-" * 8, "-" * 8))

header()
for r in warm:
    print(row(r, base))
if os.path.exists(cold_path):
    cold = load(cold_path)
    cbase = cold[3]
    print()
    print("Cold page cache (ratio to cold threadpoolctl):")
    print()
    header()
    for r in cold:
        print(row(r, cbase))

gated = [warm[0], warm[1]]  # cached, default output and --json
worst = max(r["mean"] / base["mean"] for r in gated)
print()
ok = worst <= target
print("Target: cached caiclust probe <= %.3g x threadpoolctl (mean): worst ratio %.3f -> %s"
      % (target, worst, "MET" if ok else "MISSED"))
# caiclust-check (probe + rules + report) within the probe's budget.
check_worst = max(r["mean"] / base["mean"] for r in warm[7:9])
check_ok = check_worst <= target
print("Target: caiclust-check <= %.3g x threadpoolctl (mean), the probe's budget: worst ratio %.3f -> %s"
      % (target, check_worst, "MET" if check_ok else "MISSED"))
ok = ok and check_ok
print("(no-cache ratio, informational: %.3f default, %.3f --json)"
      % (warm[2]["mean"] / base["mean"], warm[3]["mean"] / base["mean"]))
sys.exit(0 if ok else 1)
EOF
status=$?
set -e

if grep -q WARNING "$OUT/summary.txt"; then
    echo "WARNING: other processes were busy while measuring (see above): rerun on a quiet machine before trusting these numbers." >>"$OUT/summary.txt"
fi

echo
cat "$OUT/summary.txt"
echo
echo "Results in $OUT (summary.txt, warm.md/json, cold.md/json)"
exit "$status"
