#!/usr/bin/env bash
# Benchmark of the ipyparallel backend (issue #6) against the CaImAn way,
# side by side:
#
#   CaImAn:   `ipcluster start -n N` in the background, `Client()` and a
#             loop waiting for N engines (no deadline), then `map_sync` on a
#             DirectView over all engines; `ipcluster stop` at the end.
#   caiclust: `IppBackend::start` (fresh profile, startup deadline), tasks
#             through the load-balanced view (tiny ones in batches, each
#             with its own result, timeout, retries), `shutdown()`.
#
# For each: time to first result (from the start of the cluster to the
# first task's result) and throughput of tiny tasks (`operator.add`) once
# the engines are up, and the time to stop.
#
#   bash scripts/bench-ipp.sh              # results in target/bench-ipp/
#
# Not part of the test suite. Needs venv-ipp (scripts/setup-test-envs.sh).
# Knobs: BENCH_ENGINES (default 2), BENCH_TASKS (default 1000),
# BENCH_RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${BENCH_OUT:-$ROOT/target/bench-ipp}
ENGINES=${BENCH_ENGINES:-2}
TASKS=${BENCH_TASKS:-1000}
RUNS=${BENCH_RUNS:-3}
FX=${CAICLUST_FIXTURES:-$ROOT/.fixtures}
PY=$FX/venv-ipp/bin/python
[ -x "$PY" ] || { echo "bench-ipp: $PY missing (run scripts/setup-test-envs.sh)" >&2; exit 1; }
mkdir -p "$OUT"

cargo build --release -q -p caiclust-core --example ipp_bench
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/ipp_bench

# The CaImAn way, in its own throw-away IPython folder so that nothing of
# the user's ~/.ipython is touched.
caiman_way() {
    local home
    home=$(mktemp -d)
    IPYTHONDIR=$home/ipython "$PY" - "$ENGINES" "$TASKS" "$(dirname "$PY")/ipcluster" <<'PY'
import json, subprocess, sys, time
import operator
n, tasks, ipcluster = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t0 = time.time()
# caiman.cluster.start_server: ipcluster start in the background ...
proc = subprocess.Popen([ipcluster, "start", "-n", str(n)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
import ipyparallel as ipp
# ... then Client() until it connects, and wait for every engine, forever.
while True:
    try:
        c = ipp.Client()
        break
    except Exception:
        time.sleep(0.5)
while len(c) < n:
    time.sleep(0.5)
dview = c[:len(c)]
first = dview.map_sync(operator.add, [0], [1])
t_first = time.time() - t0
t1 = time.time()
dview.map_sync(operator.add, range(tasks), [1] * tasks)
run = time.time() - t1
t2 = time.time()
c.close()
subprocess.run([ipcluster, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
proc.wait()
print(json.dumps({"first_result_s": t_first, "tasks_per_s": tasks / run,
                  "stop_s": time.time() - t2}))
PY
    rm -rf "$home"
}

: >"$OUT/caiman.jsonl"
: >"$OUT/caiclust.jsonl"
for i in $(seq "$RUNS"); do
    echo "run $i/$RUNS: CaImAn way" >&2
    caiman_way >>"$OUT/caiman.jsonl"
    echo "run $i/$RUNS: caiclust" >&2
    "$BIN" "$PY" "$ENGINES" "$TASKS" >>"$OUT/caiclust.jsonl"
done

python3 - "$OUT" "$ENGINES" "$TASKS" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out, engines, tasks = sys.argv[1], sys.argv[2], sys.argv[3]
def load(name):
    with open(f"{out}/{name}.jsonl") as f:
        # Client() prints "Waiting for connection file" on stdout.
        return [json.loads(l) for l in f if l.startswith("{")]
rows = {"CaImAn way (ipcluster + Client + map_sync)": load("caiman"),
        "caiclust IppBackend": load("caiclust")}
print(f"{engines} engines, {tasks} tiny tasks, median of {len(rows['caiclust IppBackend'])} runs\n")
print("| | time to first result (s) | throughput (tasks/s) | stop (s) |")
print("|---|---|---|---|")
for name, runs in rows.items():
    med = lambda k: statistics.median(r[k] for r in runs)
    print(f"| {name} | {med('first_result_s'):.2f} | {med('tasks_per_s'):.0f} | {med('stop_s'):.2f} |")
PY
