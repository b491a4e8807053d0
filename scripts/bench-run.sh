#!/usr/bin/env bash
# Benchmark of `caiclust run` on a CaImAn-shaped pipeline
# (scripts/bench/caiman_like.py: motion correction of movie chunks, then
# CNMF on spatial patches, on multiprocessing.Pool(2) with CaImAn's
# map_async(f, args).get(4294967)), side by side in one run with what a
# user would otherwise do:
#
#   default   the default environment: every thread variable unset, so each
#             of the 2 workers' OpenBLAS pools sizes itself to all CPUs;
#   run       caiclust run -- python scripts/bench/caiman_like.py;
#   by-hand   every thread variable set to 1 by hand.
#
#   bash scripts/bench-run.sh              # results in target/bench-run/
#
# The variants run in BENCH_ROUNDS rounds, interleaved round-robin (each
# round starts one variant later), so that machine noise spreads evenly.
# The table gives each variant's wall time (the whole command, caiclust's
# probe included) as mean ± sd and min, the pipeline's own "parallel part"
# (from the pool's creation to its end: rigid and piecewise-rigid motion
# correction, CNMF patches), the start method the pool used (caiclust run
# may change it), the ratios of caiclust run to the by-hand setting and to
# the default, and the CPU share other processes took meanwhile (from
# /proc/stat, less the run's own CPU time, forkserver orphans included); it
# checks that every run printed the same checksum.
#
# Not part of the test suite. Needs the fixture venv (scripts/
# setup-test-envs.sh: venv-pypi has numpy, scipy, opencv-python-headless).
# Exits 1 when a run fails or the checksums differ.
#
# Thread variables (*_NUM_THREADS and friends, and every CAICLUST_*
# variable) are removed from the environment first, for all variants.
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are left as they are (the same for
# all variants) and printed in the header.
#
# Knobs (environment):
#   BENCH_ROUNDS=5                    rounds (one run of each variant each)
#   BENCH_VARIANTS="default run by-hand"   which variants, in this order
#   BENCH_ARGS=""                     extra arguments for caiman_like.py
#                                     (--frames, --size, --chunks, ...)
#   BENCH_TIMEOUT=900                 seconds before a run counts as hung
#                                     (killed with its process group)
#   BENCH_MAX_LOAD=0.5                1-min load to wait for before measuring
#   BENCH_LOAD_WAIT=300               seconds to wait for it at most
#   BENCH_MAX_FOREIGN=0.10            CPU share (of one core) other processes
#                                     may use during a run before it is
#                                     marked as disturbed
#   BENCH_CAICLUST                    a caiclust binary to use as it is
#                                     (default: build target/release/caiclust)
#   BENCH_OUT                         results folder
#   CAICLUST_FIXTURES                 fixture folder (default <repo>/.fixtures)
#
# Results in ${BENCH_OUT:-<target dir>/bench-run}/: default.tsv, run.tsv,
# by-hand.tsv (one line per run: round, wall s, parallel s, other processes'
# CPU share, exit status, checksum), runs/<variant>-<round>.{out,err} and
# summary.md (everything printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-5}
read -r -a VARIANTS <<<"${BENCH_VARIANTS:-default run by-hand}"
read -r -a PIPE_ARGS <<<"${BENCH_ARGS:-}"
TIMEOUT=${BENCH_TIMEOUT:-900}
MAX_LOAD=${BENCH_MAX_LOAD:-0.5}
LOAD_WAIT=${BENCH_LOAD_WAIT:-300}
MAX_FOREIGN=${BENCH_MAX_FOREIGN:-0.10}
FX=${CAICLUST_FIXTURES:-$ROOT/.fixtures}
PY=$FX/venv-pypi/bin/python
SCRIPT=scripts/bench/caiman_like.py
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
OUT=${BENCH_OUT:-$TARGET_DIR/bench-run}
CAICLUST=${BENCH_CAICLUST:-$TARGET_DIR/release/caiclust}

die() { echo "bench-run: $*" >&2; exit 2; }
log() { echo "=== $*" >&2; }

[ -x "$PY" ] || die "$PY missing (run scripts/setup-test-envs.sh)"
"$PY" -c 'import numpy, scipy, cv2' 2>/dev/null || die "numpy, scipy or cv2 missing in $PY (run scripts/setup-test-envs.sh)"
for v in "${VARIANTS[@]}"; do
    case $v in default | run | by-hand) ;; *) die "unknown variant '$v' (default, run, by-hand)" ;; esac
done
[ "$ROUNDS" -ge 1 ] || die "BENCH_ROUNDS must be at least 1"

if [[ " ${VARIANTS[*]} " == *" run "* ]]; then
    if [ -z "${BENCH_CAICLUST:-}" ]; then
        log "cargo build --release -p caiclust-cli --bin caiclust"
        cargo build --release -q -p caiclust-cli --bin caiclust
    fi
    [ -x "$CAICLUST" ] || die "caiclust binary not found at $CAICLUST"
fi

mkdir -p "$OUT/runs"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/runs/* "$OUT"/*.tsv "$OUT/summary.md"
# caiclust's interpreter-query cache in a private folder, as bench-probe does.
export XDG_CACHE_HOME=$OUT/xdg-cache
unset CAICLUST_CACHE_DIR  # (it would take precedence)
rm -rf "$XDG_CACHE_HOME"
mkdir -p "$XDG_CACHE_HOME"

# --- the environment ---------------------------------------------------------

# Every variable that sizes a native thread pool (by-hand sets these to 1),
# and the other threading knobs, which only the default environment of a
# plain machine lacks too.
THREAD_VARS=(OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS BLIS_NUM_THREADS
    VECLIB_MAXIMUM_THREADS NUMEXPR_NUM_THREADS NUMBA_NUM_THREADS
    OPENCV_FOR_THREADS_NUM GOTO_NUM_THREADS)
OTHER_VARS=(NUMEXPR_MAX_THREADS OMP_THREAD_LIMIT OMP_DYNAMIC OMP_WAIT_POLICY OMP_PROC_BIND
    OMP_PLACES GOMP_SPINCOUNT KMP_BLOCKTIME KMP_AFFINITY MKL_DYNAMIC MKL_THREADING_LAYER
    NUMBA_THREADING_LAYER OPENCV_PARALLEL_BACKEND)
mapfile -t CAICLUST_VARS < <(compgen -e | grep '^CAICLUST_' || true)
CLEARED=()
for v in "${THREAD_VARS[@]}" "${OTHER_VARS[@]}" "${CAICLUST_VARS[@]}"; do
    if [ -n "${!v+x}" ]; then
        CLEARED+=("$v=${!v}")
        unset "$v"
    fi
done
BY_HAND=()
for v in "${THREAD_VARS[@]}"; do BY_HAND+=("$v=1"); done
CORETYPE=${OPENBLAS_CORETYPE-<unset>}
L2=${OPENBLAS_L2_SIZE-<unset>}

variant_cmd() { # variant -> CMD array
    case $1 in
    default) CMD=("$PY" "$SCRIPT" "${PIPE_ARGS[@]}") ;;
    run) CMD=("$CAICLUST" run -- "$PY" "$SCRIPT" "${PIPE_ARGS[@]}") ;;
    by-hand) CMD=(env "${BY_HAND[@]}" "$PY" "$SCRIPT" "${PIPE_ARGS[@]}") ;;
    esac
}

# --- load, and CPU used by other processes -----------------------------------

load1() { cut -d' ' -f1 /proc/loadavg; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
busy_procs() {
    ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | awk '$1 >= 5 { printf "%s(%s%%) ", $2, $1 }' | head -c 300 || true
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
    LOAD_NOTE="WARNING: load still $(load1) > $MAX_LOAD after ${waited}s; busy: $(busy_procs)"
    log "$LOAD_NOTE"
fi

# --- warmup: page cache, and caiclust's interpreter query --------------------

log "warmup"
"$PY" -c 'import numpy, scipy.linalg, scipy.sparse, scipy.ndimage, cv2' \
    || die "the fixture python cannot import the pipeline's packages"
if [[ " ${VARIANTS[*]} " == *" run "* ]]; then
    "$CAICLUST" run -q -- "$PY" -c 'import numpy, scipy.linalg, cv2' || die "caiclust run failed on a trivial command"
fi
KERNELS=$("$PY" -m threadpoolctl -i numpy scipy cv2 2>/dev/null | python3 -c '
import json, sys
print("; ".join("%s %s: %s, %s, %s threads" % (m.get("prefix"), m.get("version"), m.get("architecture"),
      m.get("threading_layer"), m.get("num_threads")) for m in json.load(sys.stdin)) or "none")' 2>/dev/null || echo "threadpoolctl not available")

# --- the rounds --------------------------------------------------------------

# One timed run: wall time, the share of a core that *other* processes used
# meanwhile (the system's busy time from /proc/stat less the run's own CPU
# time), and the exit status. The timer is a child subreaper, so that the
# CPU time of processes the command leaves behind (a forkserver and the
# workers it forked, orphaned when the script exits) is counted as the
# run's own. A run past BENCH_TIMEOUT is killed with its process group
# (exit "timeout").
TIMER=$OUT/timer.py
cat >"$TIMER" <<'PY'
import ctypes, os, resource, signal, subprocess, sys, time

out, err, timeout, cmd = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
HZ = os.sysconf("SC_CLK_TCK")


def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / HZ  # user nice system irq softirq


def ours():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


b0, c0, t0 = busy(), ours(), time.perf_counter()
with open(out, "wb") as fo, open(err, "wb") as fe:
    p = subprocess.Popen(cmd, stdout=fo, stderr=fe, start_new_session=True)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = "timeout"
wall = time.perf_counter() - t0
# Reap what the command left behind (at most 30 s, then kill its group).
deadline = time.perf_counter() + 30
while True:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        if time.perf_counter() > deadline:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
span = time.perf_counter() - t0
other = max(0.0, (busy() - b0) - (ours() - c0))
print("%.3f %.2f %s" % (wall, other / span, rc))
PY

for v in "${VARIANTS[@]}"; do
    printf 'round\twall_s\tparallel_s\tforeign_share\texit\tchecksum\n' >"$OUT/$v.tsv"
done
n=${#VARIANTS[@]}
FAILED=0
for r in $(seq "$ROUNDS"); do
    for k in $(seq 0 $((n - 1))); do
        v=${VARIANTS[$(((r - 1 + k) % n))]}
        variant_cmd "$v"
        base=$OUT/runs/$v-$r
        read -r wall foreign rc < <(python3 "$TIMER" "$base.out" "$base.err" "$TIMEOUT" "${CMD[@]}") \
            || die "the timer failed on: ${CMD[*]}"
        par=$(sed -n 's/.*parallel \([0-9.]*\) s.*/\1/p' "$base.err" | tail -1)
        sum=$(sed -n 's/^checksum //p' "$base.out" | tail -1)
        if [ "$rc" != 0 ] || [ -z "$sum" ]; then
            FAILED=1
            log "round $r: $v FAILED (exit $rc; $base.err):"
            tail -5 "$base.err" >&2
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$wall" "${par:--}" "$foreign" "$rc" "${sum:--}" >>"$OUT/$v.tsv"
        log "round $r/$ROUNDS: $v ${wall} s (parallel part ${par:-?} s; other processes ${foreign} of a core)"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- summary -----------------------------------------------------------------

first=${VARIANTS[0]}
WORKLOAD=$(sed -n 's/^caiman_like: \(.*\), 2 workers ([a-z]*), \(opencv [a-z]*\):.*/\1, 2 workers, \2/p' "$OUT/runs/$first-1.err" | head -1)
RUN_LINE=""
if [[ " ${VARIANTS[*]} " == *" run "* ]]; then
    RUN_LINE=$(grep '^caiclust: ' "$OUT/runs/run-1.err" | head -3 | sed 's/^/  - /' || true)
fi
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --no-ext-diff --quiet HEAD -- 2>/dev/null; then rev="$rev (+ uncommitted changes)"; fi

{
    echo "## caiclust run on a CaImAn-shaped pipeline"
    echo
    echo "- Command: \`bash scripts/bench-run.sh\` (BENCH_ROUNDS=$ROUNDS${BENCH_ARGS:+, BENCH_ARGS=\"$BENCH_ARGS\"}), rounds interleaved round-robin"
    echo "- Workload: \`$SCRIPT${PIPE_ARGS[*]:+ ${PIPE_ARGS[*]}}\`: ${WORKLOAD:-?}"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), nproc $(nproc)"
    echo "- Load (1/5/15 min): start $LOAD_START, end $LOAD_END (includes this benchmark)"
    [ -n "$LOAD_NOTE" ] && echo "- $LOAD_NOTE"
    echo "- caiclust: $rev; binary $CAICLUST ($(date -r "$CAICLUST" '+built %Y-%m-%d %H:%M' 2>/dev/null || echo missing))"
    echo "- Python: $("$PY" -c 'import sys; print(sys.version.split()[0])') ($PY); $("$PY" -c 'import numpy, scipy, cv2; print("numpy", numpy.__version__, "scipy", scipy.__version__, "opencv", cv2.__version__)')"
    echo "- Native pools (threadpoolctl, default environment): $KERNELS"
    echo "- OPENBLAS_CORETYPE=$CORETYPE, OPENBLAS_L2_SIZE=$L2 (left as they are, for every variant)"
    echo "- Removed from the environment first: ${CLEARED[*]:-nothing was set}"
    if [[ " ${VARIANTS[*]} " == *" run "* ]]; then
        echo "- caiclust run said (round 1):"
        echo "${RUN_LINE:-  - (nothing)}"
    fi
    echo
} >"$OUT/summary.md"

set +e
python3 - "$OUT" "$MAX_FOREIGN" "${VARIANTS[@]}" >>"$OUT/summary.md" <<'EOF'
import re, statistics as st, sys
out, max_foreign, variants = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
names = {"default": "default environment (thread variables unset)",
         "run": "`caiclust run -- python caiman_like.py`",
         "by-hand": "every thread variable = 1 (by hand)"}
rows = {}
for v in variants:
    with open(f"{out}/{v}.tsv") as f:
        next(f)
        rows[v] = [line.rstrip("\n").split("\t") for line in f]
ok = {v: [r for r in rs if r[4] == "0" and r[5] != "-"] for v, rs in rows.items()}
def stats(v, col):
    xs = [float(r[col]) for r in ok[v] if r[col] != "-"]
    if not xs:
        return None
    return st.mean(xs), (st.stdev(xs) if len(xs) > 1 else 0.0), min(xs)
def fmt(s):
    return "-" if s is None else f"{s[0]:.2f} ± {s[1]:.2f}"
wall = {v: stats(v, 1) for v in variants}
par = {v: stats(v, 2) for v in variants}
def ratio(a, b, i):
    if a not in wall or b not in wall or wall[a] is None or wall[b] is None:
        return "-"
    return f"{wall[a][i] / wall[b][i]:.2f}"
def start_method(v):
    """The pool's start method, as the pipeline reported it in round 1."""
    try:
        with open(f"{out}/runs/{v}-1.err") as f:
            m = re.search(r"workers \((\w+)\)", f.read())
    except OSError:
        m = None
    return m.group(1) if m else "?"
print("| variant | runs | start method | wall mean ± sd [s] | wall min [s] | parallel part mean ± sd [s] "
      "| vs by hand (mean) | vs default (mean) | other processes (cores) |")
print("|:---|---:|:---|---:|---:|---:|---:|---:|---:|")
for v in variants:
    w = wall[v]
    other = st.mean(float(r[3]) for r in rows[v])
    print(f"| {names[v]} | {len(ok[v])}/{len(rows[v])} | {start_method(v)} | {fmt(w)} | "
          f"{'-' if w is None else f'{w[2]:.2f}'} | {fmt(par[v])} | {ratio(v, 'by-hand', 0)} | "
          f"{ratio(v, 'default', 0)} | {other:.2f} |")
print()
if "run" in variants:
    print(f"caiclust run / by hand: {ratio('run', 'by-hand', 0)} (mean), {ratio('run', 'by-hand', 2)} (min); "
          f"caiclust run / default: {ratio('run', 'default', 0)} (mean), {ratio('run', 'default', 2)} (min)")
if "by-hand" in variants and "default" in variants:
    print(f"default / by hand: {ratio('default', 'by-hand', 0)} (mean), {ratio('default', 'by-hand', 2)} (min)")
status = 0
sums = {r[5] for rs in rows.values() for r in rs}
total = sum(len(rs) for rs in rows.values())
if len(sums) == 1 and "-" not in sums:
    print(f"Checksums: all {total} runs agree (`{sums.pop()}`).")
else:
    status = 1
    print("Checksums DIFFER or are missing:")
    for v, rs in rows.items():
        for r in rs:
            print(f"- {v} round {r[0]}: exit {r[4]}, `{r[5]}`")
busy = [(v, r[0], float(r[3])) for v, rs in rows.items() for r in rs if float(r[3]) > max_foreign]
if busy:
    print("WARNING: other processes were busy during " + ", ".join(f"{v} round {n} ({s:.2f} of a core)" for v, n, s in busy)
          + ": rerun on a quiet machine before trusting these numbers.")
else:
    print(f"Other processes used at most {max(float(r[3]) for rs in rows.values() for r in rs):.2f} of a core during any run.")
sys.exit(status)
EOF
status=$?
set -e
[ "$FAILED" = 0 ] || status=1

echo
cat "$OUT/summary.md"
echo
echo "Results in $OUT (summary.md, <variant>.tsv, runs/)"
exit "$status"
