#!/usr/bin/env bash
# caiclust.Pool side by side with the Python process pools a user would
# otherwise run, 2 workers each, all in one run (issue: "Benchmarks ...
# Compare against multiprocessing.Pool (fork and forkserver),
# concurrent.futures.ProcessPoolExecutor, loky/joblib and mpire"):
#
#   a-warm  100 000 tiny calls (f(x) = x), map on a started pool (a map of
#           1 000 first, not timed; the median of 5 maps in a row);
#   a-cold  the same, from creating the pool to having the result list;
#   b       2 000 tasks, a 1 MiB float64 array in and one out (a * 2), from
#           creating the pool to the result list, default chunking per tool;
#   c       start latency: from creating the pool to the result of one call
#           on its fresh workers.
#
# Targets: caiclust faster than all on (a) and (c), within 1.1x of the
# fastest on (b).
#
# The rows, each used the way its users would (scripts/bench/python_pools.py
# has the exact calls): caiclust.Pool(2).map / apply; multiprocessing
# Pool(2).map / apply with the fork and the forkserver context;
# ProcessPoolExecutor(2).map with chunksize 1 (its default) and with
# ceil(len/8) (Pool.map's choice), submit().result(); joblib
# Parallel(n_jobs=2) (loky) over delayed(f); loky's get_reusable_executor
# map with ceil(len/8), submit().result(); mpire WorkerPool(n_jobs=2,
# keep_alive=True).map / apply.
#
#   bash scripts/bench-python.sh          # results in target/bench-python/
#
# A warm-up runs each row once first (page cache, .pyc files, caiclust's
# interpreter-query cache in target/bench-python/xdg-cache), not counted.
# Every measurement is a fresh interpreter that imports only its tool
# (numpy too for b): the time is taken inside it, around the pool (the
# import is timed apart and shown in its own table). Rounds interleave the
# tools (each round starts one tool later) so that machine noise hits all
# alike. A run during which other processes took more than
# BENCH_MAX_FOREIGN of a core (/proc/stat less the run's own CPU time) is
# taken again, BENCH_RETRIES times at most; "disturbed" counts the runs
# still above it. The table gives median, min and max seconds and the
# ratio of each median to caiclust's. The script exits 1 when a run fails
# or returns a wrong result; the targets are reported, not enforced.
#
# Results in target/bench-python/: machine.txt (CPU, versions, load),
# table.md (what is printed), summary.md, results.json (every run, with
# its import and teardown times and other processes' CPU share),
# progress.log.
#
# Not part of the test suite. Builds its own venv (target/bench-python/
# venv) from PyPI: numpy, cloudpickle, joblib, loky, mpire, and the caiclust
# wheel built here by maturin (from PyPI, in target/bench-python/
# build-venv; cargo rebuilds what changed). Reused when present.
#
# Knobs (environment):
#   BENCH_RUNS=5                  runs of each row
#   BENCH_SCENARIOS="a-warm a-cold b c"
#   BENCH_TOOLS=""                rows, by name, separated by commas (all)
#   BENCH_TINY=100000             calls in a
#   BENCH_ARRAYS=2000             tasks in b
#   BENCH_MAX_LOAD=0.5            1-min load to wait for before measuring
#   BENCH_LOAD_WAIT=300           seconds to wait for it at most
#   BENCH_MAX_FOREIGN=0.10        other processes' CPU share that marks a run
#                                 as disturbed
#   BENCH_RETRIES=2               times a disturbed run is taken again (the
#                                 least disturbed try counts)
#   BENCH_PYTHON=python3          the interpreter the venvs are made from
#   BENCH_OUT                     results folder
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
OUT=${BENCH_OUT:-$TARGET_DIR/bench-python}
BASE=$TARGET_DIR/bench-python
PYTHON=${BENCH_PYTHON:-python3}
MAX_LOAD=${BENCH_MAX_LOAD:-0.5}
LOAD_WAIT=${BENCH_LOAD_WAIT:-300}

die() { echo "bench-python: $*" >&2; exit 2; }
log() { echo "=== $*" >&2; }
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (BENCH_PYTHON)"
command -v cargo >/dev/null || die "cargo not found"
mkdir -p "$OUT" "$BASE"

# --- the venvs -----------------------------------------------------------------

VENV=$BASE/venv
BUILD=$BASE/build-venv
WHEELS=$BASE/wheels
if [ ! -x "$BUILD/bin/maturin" ]; then
    log "build venv: maturin from PyPI"
    rm -rf "$BUILD"
    "$PYTHON" -m venv "$BUILD"
    "$BUILD/bin/pip" install -q --upgrade pip
    "$BUILD/bin/pip" install -q 'maturin>=1.5,<2'
fi
if [ ! -f "$VENV/.deps-installed" ]; then
    log "bench venv: numpy cloudpickle joblib loky mpire from PyPI"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q numpy cloudpickle joblib loky mpire
    touch "$VENV/.deps-installed"
fi
log "caiclust wheel: maturin build --release"
rm -rf "$WHEELS"
"$BUILD/bin/maturin" build --release -q -i "$VENV/bin/python" -o "$WHEELS" >&2
WHEEL=$(ls "$WHEELS"/caiclust-*.whl)
SUM=$(sha256sum "$WHEEL" | cut -d' ' -f1)
if [ "$(cat "$VENV/.caiclust-wheel" 2>/dev/null)" != "$SUM" ]; then
    "$VENV/bin/pip" install -q --force-reinstall --no-deps "$WHEEL"
    echo "$SUM" >"$VENV/.caiclust-wheel"
fi
PY=$VENV/bin/python
"$PY" -c 'import caiclust, numpy, cloudpickle, joblib, loky, mpire' || die "the bench venv is broken: rm -rf $VENV"

# --- a quiet machine -----------------------------------------------------------

load1() { cut -d' ' -f1 /proc/loadavg; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
waited=0
while above "$(load1)" "$MAX_LOAD" && [ "$waited" -lt "$LOAD_WAIT" ]; do
    [ "$waited" = 0 ] && log "load $(load1) > $MAX_LOAD: waiting up to ${LOAD_WAIT}s"
    sleep 10
    waited=$((waited + 10))
done
LOAD_START=$(cat /proc/loadavg)
above "$(load1)" "$MAX_LOAD" && log "WARNING: load still $(load1) > $MAX_LOAD after ${waited}s"

# --- the run -------------------------------------------------------------------

# A user's usual environment: .pyc files written and read (the module of
# tasks too), stdout buffered.
unset PYTHONDONTWRITEBYTECODE PYTHONUNBUFFERED
# The workers import scripts/bench/python_pools.py: its .pyc is written
# there, and removed at the end (the work tree stays clean).
trap 'rm -rf scripts/bench/__pycache__' EXIT
# caiclust caches its interpreter query (~/.cache/caiclust): a private
# folder here, filled by the warm-up, as a user has it from the second run.
export XDG_CACHE_HOME=$OUT/xdg-cache
unset CAICLUST_CACHE_DIR  # (it would take precedence)
mkdir -p "$XDG_CACHE_HOME"
# Python writes bytecode by default, and the warm-up is there to leave the
# .pyc files a user has from the second run on (every tool that imports
# the task module afresh, in a worker or a template, reads it): a
# PYTHONDONTWRITEBYTECODE inherited from the caller's shell is dropped.
unset PYTHONDONTWRITEBYTECODE

{
    echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), nproc $(nproc), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "caiclust: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core pyext python || echo ' (+ uncommitted changes)')"
    echo "versions: $("$PY" -c 'import sys
from importlib.metadata import version
print(", ".join(f"{p} {version(p)}" for p in ("caiclust", "numpy", "cloudpickle", "joblib", "loky", "mpire")))')"
    echo "load average at the start: $LOAD_START"
} | tee "$OUT/machine.txt"

set +e
"$PY" scripts/bench/python_pools.py run \
    --runs "${BENCH_RUNS:-5}" \
    --scenarios "${BENCH_SCENARIOS:-a-warm a-cold b c}" \
    --tools "${BENCH_TOOLS:-}" \
    --tiny "${BENCH_TINY:-100000}" \
    --arrays "${BENCH_ARRAYS:-2000}" \
    --max-foreign "${BENCH_MAX_FOREIGN:-0.10}" \
    --retries "${BENCH_RETRIES:-2}" \
    --out "$OUT" 2> >(tee "$OUT/progress.log" >&2) | tee "$OUT/table.md"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || echo "bench-python: some runs failed (see $OUT/progress.log)" >&2
echo "results in $OUT"
exit "$rc"
