#!/usr/bin/env bash
# Benchmarks of the executor (issue #5), each side by side with what a user
# would otherwise run, in one hyperfine run per question:
#
#   1. 10 000 `true` commands on 2 workers: caiclust map vs xargs -P2 vs
#      GNU parallel -j2 (target: caiclust at most 1.2x xargs);
#   2. 100 000 tiny Rust tasks (the core library, examples/throughput:
#      one Cluster::map call, as one Pool.map call; also one submit per
#      task) vs Python multiprocessing.Pool.map and loky, 2 workers each;
#   3. 10 000 tiny Python-callable tasks: caiclust (library and `caiclust
#      map -f`) vs Pool.map and loky (target: faster than both);
#   4. worker start latency per start method: one trivial task on 2 fresh
#      workers, caiclust vs Python's Pool, for spawn, forkserver, fork;
#   5. oversubscription: 2 workers doing numpy matmuls with the
#      recommended per-worker thread limits vs the default environment.
#
#   bash scripts/bench-core.sh            # results in target/bench-core/
#
# Not part of the test suite. Needs the fixtures (scripts/setup-test-envs.sh:
# venv-pypi has joblib's loky, venv-numpy has numpy) and hyperfine and GNU
# parallel (Debian packages, installed by the setup script).
# Knobs: BENCH_RUNS (default 10), BENCH_MAX_LOAD (default 0.5),
# BENCH_ONLY="1 3" (run only these groups), BENCH_BASELINE=COMMIT (also
# build that commit, from `git archive` into target/bench-baseline, and
# run each caiclust row of groups 1-4 at it too, in the same hyperfine
# run: a before/after comparison side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${BENCH_OUT:-$ROOT/target/bench-core}
RUNS=${BENCH_RUNS:-10}
mkdir -p "$OUT"
FX=$ROOT/.fixtures
PY_PYPI=$FX/venv-pypi/bin/python
PY_NUMPY=$FX/venv-numpy/bin/python
for t in hyperfine parallel xargs; do
    command -v "$t" >/dev/null || { echo "bench-core: $t is missing (run scripts/setup-test-envs.sh)" >&2; exit 1; }
done
[ -x "$PY_PYPI" ] && [ -x "$PY_NUMPY" ] || { echo "bench-core: fixtures missing (run scripts/setup-test-envs.sh)" >&2; exit 1; }

cargo build --release -q -p caiclust-cli -p caiclust-core --examples --bins
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
CAICLUST=$BIN/caiclust
THROUGHPUT=$BIN/examples/throughput
OVERSUB=$BIN/examples/oversubscription

# The baseline's binaries (BENCH_BASELINE), built once per commit.
BASE=${BENCH_BASELINE:-}
if [ -n "$BASE" ]; then
    BASE_SHA=$(git rev-parse --short "$BASE^{commit}")
    BASE_DIR=$ROOT/target/bench-baseline/$BASE_SHA
    if [ ! -x "$BASE_DIR/target/release/examples/throughput" ]; then
        rm -rf "$BASE_DIR/src" && mkdir -p "$BASE_DIR/src"
        git archive "$BASE_SHA" | tar -x -C "$BASE_DIR/src"
        (cd "$BASE_DIR/src" && CARGO_TARGET_DIR=$BASE_DIR/target \
            cargo build --release -q -p caiclust-cli -p caiclust-core --examples --bins)
    fi
    B_CAICLUST=$BASE_DIR/target/release/caiclust
    B_THROUGHPUT=$BASE_DIR/target/release/examples/throughput
fi
# `row NAME COMMAND-WITH-@BIN@`: the row as built now, and (with a
# baseline) the same at the baseline, named "NAME @ SHA".
row() {
    local name=$1 cmd=$2
    ROWS+=(-n "$name" "${cmd//@CAICLUST@/$CAICLUST}")
    ROWS[-1]=${ROWS[-1]//@THROUGHPUT@/$THROUGHPUT}
    if [ -n "$BASE" ]; then
        local b=${cmd//@CAICLUST@/$B_CAICLUST}
        ROWS+=(-n "$name @ $BASE_SHA" "${b//@THROUGHPUT@/$B_THROUGHPUT}")
    fi
}

# Wait (bounded) for a quiet machine.
for _ in $(seq 60); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    python3 -c "import sys; sys.exit(0 if $load <= ${BENCH_MAX_LOAD:-0.5} else 1)" && break
    sleep 5
done
echo "load average at start: $(cat /proc/loadavg)" | tee "$OUT/summary.txt"

MOD=$OUT/mod
mkdir -p "$MOD"
cat > "$MOD/tiny.py" <<'PY'
def f(x):
    return x
PY
cat > "$MOD/blas.py" <<'PY'
import numpy as np
A = np.random.RandomState(0).rand(256, 256)
def mm(seed):
    # Many mid-sized products: each one a parallel region whose threads
    # must meet, which is where oversubscription hurts.
    B = np.random.RandomState(seed).rand(256, 256)
    for _ in range(400):
        B = (A @ B) / 256.0
    return float(B.sum())
PY
cat > "$MOD/pool_map.py" <<'PY'
import sys
import multiprocessing as mp
from tiny import f
if __name__ == "__main__":
    n, method = int(sys.argv[1]), sys.argv[2]
    with mp.get_context(method).Pool(2) as p:
        assert len(p.map(f, range(n))) == n
PY
cat > "$MOD/loky_map.py" <<'PY'
import sys
from joblib.externals.loky import get_reusable_executor
from tiny import f
if __name__ == "__main__":
    n = int(sys.argv[1])
    ex = get_reusable_executor(max_workers=2)
    # loky's map takes a chunksize; Pool.map picks len/(4*workers).
    assert len(list(ex.map(f, range(n), chunksize=max(1, n // 8)))) == n
    ex.shutdown()
PY
export PYTHONPATH=$MOD
seq 10000 > "$OUT/inputs-10k.txt"

want() { [ -z "${BENCH_ONLY:-}" ] || [[ " $BENCH_ONLY " == *" $1 "* ]]; }
h() { # name, runs, then hyperfine arguments
    local name=$1 runs=$2; shift 2
    hyperfine -N --runs "$runs" --warmup 1 --export-markdown "$OUT/$name.md" --export-json "$OUT/$name.json" "$@" | tee -a "$OUT/summary.txt"
}

if want 1; then
echo "== 1. 10 000 true commands, 2 workers" | tee -a "$OUT/summary.txt"
# GNU parallel costs several ms per job: 3 runs of it are enough.
ROWS=()
row "caiclust map -j2" "sh -c '@CAICLUST@ map --no-auto -j2 --no-bar true < $OUT/inputs-10k.txt'"
h commands "$RUNS" "${ROWS[@]}" \
    -n "xargs -P2" "sh -c 'xargs -P2 -n1 true < $OUT/inputs-10k.txt'"
h commands-parallel 3 \
    -n "parallel -j2" "sh -c 'parallel -j2 true < $OUT/inputs-10k.txt'"

fi
if want 2; then
echo "== 2. 100 000 tiny Rust tasks vs Python, 2 workers" | tee -a "$OUT/summary.txt"
ROWS=()
row "caiclust Rust tasks (spawn)" "@THROUGHPUT@ rust 100000 2 spawn"
row "caiclust Rust tasks (forkserver)" "@THROUGHPUT@ rust 100000 2 forkserver"
row "caiclust Rust tasks, one submit each (spawn)" "env SUBMIT=each @THROUGHPUT@ rust 100000 2 spawn"
h rust-tasks "$RUNS" "${ROWS[@]}" \
    -n "Pool.map fork" "$PY_PYPI $MOD/pool_map.py 100000 fork" \
    -n "Pool.map spawn" "$PY_PYPI $MOD/pool_map.py 100000 spawn" \
    -n "loky" "$PY_PYPI $MOD/loky_map.py 100000"

fi
if want 3; then
echo "== 3. 10 000 tiny Python-callable tasks, 2 workers" | tee -a "$OUT/summary.txt"
ROWS=()
row "caiclust library (spawn)" "@THROUGHPUT@ python 10000 2 spawn $PY_PYPI"
row "caiclust library (forkserver)" "@THROUGHPUT@ python 10000 2 forkserver $PY_PYPI"
row "caiclust map -f" "sh -c '@CAICLUST@ map --no-auto -j2 --no-bar --start-method spawn --python $PY_PYPI -f tiny:f < $OUT/inputs-10k.txt > /dev/null'"
h python-tasks "$RUNS" "${ROWS[@]}" \
    -n "Pool.map fork" "$PY_PYPI $MOD/pool_map.py 10000 fork" \
    -n "Pool.map spawn" "$PY_PYPI $MOD/pool_map.py 10000 spawn" \
    -n "loky" "$PY_PYPI $MOD/loky_map.py 10000"

fi
if want 4; then
echo "== 4. worker start latency: one trivial task on 2 fresh workers" | tee -a "$OUT/summary.txt"
ROWS=()
row "caiclust spawn" "@THROUGHPUT@ python 2 2 spawn $PY_PYPI"
row "caiclust forkserver" "@THROUGHPUT@ python 2 2 forkserver $PY_PYPI"
row "caiclust fork" "env FORCE_FORK=1 @THROUGHPUT@ python 2 2 fork $PY_PYPI"
row "caiclust Rust spawn" "@THROUGHPUT@ rust 2 2 spawn"
row "caiclust Rust forkserver" "@THROUGHPUT@ rust 2 2 forkserver"
h start-latency "$RUNS" "${ROWS[@]}" \
    -n "Pool spawn" "$PY_PYPI $MOD/pool_map.py 2 spawn" \
    -n "Pool forkserver" "$PY_PYPI $MOD/pool_map.py 2 forkserver" \
    -n "Pool fork" "$PY_PYPI $MOD/pool_map.py 2 fork"

fi
if want 5; then
echo "== 5. oversubscription: 2 workers, 8 numpy matmul tasks (pthreads OpenBLAS)" | tee -a "$OUT/summary.txt"
for mode in auto default; do
    echo "$mode: $($OVERSUB $mode $PY_NUMPY 8)" | tee -a "$OUT/summary.txt"
done
h oversubscription 3 \
    -n "Cluster auto (recommended thread limits)" "$OVERSUB auto $PY_NUMPY 8" \
    -n "default environment" "$OVERSUB default $PY_NUMPY 8"
fi
echo "results in $OUT"
