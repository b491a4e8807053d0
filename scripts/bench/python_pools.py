"""caiclust.Pool side by side with the Python process pools a user would
otherwise run, on 2 workers each (issue: "Benchmarks ... Compare against
multiprocessing.Pool (fork and forkserver), ProcessPoolExecutor,
loky/joblib and mpire"). Run by scripts/bench-python.sh, which builds the
venv; see its header for the scenarios, the knobs and what the table says.

    python scripts/bench/python_pools.py run [--runs 5] [--out DIR] ...
        every measurement, interleaved, then the table (stdout) and
        results.json / summary.md in DIR
    python -c 'import python_pools; python_pools.child()' TOOL SCENARIO ...
        one measurement in this process: one JSON line on stdout

Every measurement runs in a fresh interpreter that imports only the tool
it measures (and numpy for the array scenario), so that no tool pays for
another's imports: caiclust's worker template, for one, preloads the
third-party modules its parent has imported. The task functions live here,
at the top of an importable module, so that every tool sends them by
reference (workers import ``python_pools``; PYTHONPATH names this folder).
Workers import this module too: at its top it imports only what every
interpreter has loaded at start (os, sys, time), the rest where it is used.
"""

import os
import sys
import time

WORKERS = 2
ARRAY_ITEMS = 1 << 17  # float64: 1 MiB
WARMUP_ITEMS = 1000
WARM_MAPS = 5

# -- the tasks ------------------------------------------------------------------


def tiny(x):
    """A tiny call: the pool's own cost per task is all there is."""
    return x


def double(a):
    """1 MiB in, 1 MiB out."""
    return a * 2


# -- the tools, each used the way its users would ----------------------------------


def _ceil_div(a, b):
    return -(-a // b)


class Tool:
    """One way of running a map. ``load`` imports the library (timed
    apart), ``session`` is the pool as a context manager (its exit is how
    users stop it: ``with ... as pool``), ``map`` and ``one`` use it."""

    name = ""
    note = ""
    scenarios = ("a-warm", "a-cold", "b", "c")

    def load(self):
        raise NotImplementedError

    def session(self):
        raise NotImplementedError

    def map(self, pool, f, xs):
        raise NotImplementedError

    def one(self, pool, f, x):
        raise NotImplementedError

    def info(self, pool):
        return ""


class Caiclust(Tool):
    name = "caiclust Pool.map"
    note = "caiclust.Pool(2): map (chunks of len/8, as Pool.map); apply for one call"

    def load(self):
        import caiclust

        self.Pool = caiclust.Pool

    def session(self):
        return self.Pool(WORKERS)

    def map(self, pool, f, xs):
        return pool.map(f, xs)

    def one(self, pool, f, x):
        return pool.apply(f, (x,))

    def info(self, pool):
        return "start method " + pool.plan["start_method"]


class MpPool(Tool):
    def __init__(self, method):
        self.method = method
        self.name = f"mp.Pool {method}"
        self.note = (f"multiprocessing.get_context({method!r}).Pool(2): map (default "
                     "chunksize, ceil(len/8)); apply")

    def load(self):
        import multiprocessing

        self.context = multiprocessing.get_context(self.method)

    def session(self):
        return self.context.Pool(WORKERS)

    def map(self, pool, f, xs):
        return pool.map(f, xs)

    def one(self, pool, f, x):
        return pool.apply(f, (x,))


class Ppe(Tool):
    def __init__(self, chunked):
        self.chunked = chunked
        self.name = "PPE.map chunksize=len/8" if chunked else "PPE.map chunksize=1"
        self.note = ("concurrent.futures.ProcessPoolExecutor(2) (default context): map with "
                     + ("chunksize=ceil(len/8), as Pool.map picks" if chunked else
                        "its default chunksize=1; submit().result() for one call"))
        if chunked:
            # One call is one call, whatever the chunksize.
            self.scenarios = ("a-warm", "a-cold", "b")

    def load(self):
        import concurrent.futures

        self.Executor = concurrent.futures.ProcessPoolExecutor

    def session(self):
        return self.Executor(WORKERS)

    def map(self, pool, f, xs):
        chunksize = max(1, _ceil_div(len(xs), 4 * WORKERS)) if self.chunked else 1
        return list(pool.map(f, xs, chunksize=chunksize))

    def one(self, pool, f, x):
        return pool.submit(f, x).result()

    def info(self, pool):
        return "start method " + pool._mp_context.get_start_method()


class Joblib(Tool):
    name = "joblib Parallel (loky)"
    note = "joblib.Parallel(n_jobs=2) (loky backend, auto batching)(delayed(f)(x) for x in xs)"

    def load(self):
        import joblib

        self.Parallel, self.delayed = joblib.Parallel, joblib.delayed

    def session(self):
        return self.Parallel(n_jobs=WORKERS)

    def map(self, pool, f, xs):
        g = self.delayed(f)
        return pool(g(x) for x in xs)

    def one(self, pool, f, x):
        return pool([self.delayed(f)(x)])[0]


class Loky(Tool):
    name = "loky executor"
    note = ("loky.get_reusable_executor(max_workers=2) (fresh in each process): "
            "map with chunksize ceil(len/8); submit().result()")

    def load(self):
        import loky

        self.get = loky.get_reusable_executor

    def session(self):
        return self.get(max_workers=WORKERS)

    def map(self, pool, f, xs):
        return list(pool.map(f, xs, chunksize=max(1, _ceil_div(len(xs), 4 * WORKERS))))

    def one(self, pool, f, x):
        return pool.submit(f, x).result()


class Mpire(Tool):
    name = "mpire WorkerPool.map"
    note = ("mpire.WorkerPool(n_jobs=2, keep_alive=True) (fork): map (default chunking), "
            "concatenate_numpy_output=False (a list of arrays, as the others); apply")

    def load(self):
        import mpire

        self.WorkerPool = mpire.WorkerPool

    def session(self):
        # keep_alive: the workers outlive a map, so that a started pool is
        # one that has workers (without it every map starts new ones).
        return self.WorkerPool(n_jobs=WORKERS, keep_alive=True)

    def map(self, pool, f, xs):
        return pool.map(f, xs, concatenate_numpy_output=False)

    def one(self, pool, f, x):
        return pool.apply(f, (x,))


def all_tools():
    tools = [Caiclust(), MpPool("fork"), MpPool("forkserver"), Ppe(False), Ppe(True),
             Joblib(), Loky(), Mpire()]
    return {t.name: t for t in tools}


SCENARIOS = {
    "a-warm": "(a) N tiny calls, map on a started pool",
    "a-cold": "(a) N tiny calls, pool start + map",
    "b": "(b) M tasks, 1 MiB float64 array in and out (a * 2)",
    "c": "(c) one call on fresh workers (pool start + one call)",
}


# -- one measurement (in a fresh interpreter) ---------------------------------------


def child(argv=None):
    """Measure TOOL SCENARIO TINY ARRAYS here; print one JSON line. For
    a-warm, the median of WARM_MAPS maps in a row on the started pool."""
    argv = sys.argv[1:] if argv is None else argv
    tool_name, scenario, n_tiny, n_arrays = argv[0], argv[1], int(argv[2]), int(argv[3])
    tool = all_tools()[tool_name]
    t = time.perf_counter()
    tool.load()
    t_import = time.perf_counter() - t
    if scenario == "b":
        import numpy as np

        xs = [np.full(ARRAY_ITEMS, float(i)) for i in range(n_arrays)]
        f = double
    else:
        xs = list(range(n_tiny))
        f = tiny
    t0 = time.perf_counter()
    with tool.session() as pool:
        if scenario == "a-warm":
            tool.map(pool, tiny, list(range(WARMUP_ITEMS)))
            times = []
            for _ in range(WARM_MAPS):
                t0 = time.perf_counter()
                result = tool.map(pool, f, xs)
                times.append(time.perf_counter() - t0)
            times.sort()
            t0 = 0.0
            t1 = times[len(times) // 2]
        elif scenario == "c":
            result = tool.one(pool, tiny, 7)
            t1 = time.perf_counter()
        else:
            result = tool.map(pool, f, xs)
            t1 = time.perf_counter()
        t_stop = time.perf_counter()
        info = tool.info(pool)
    t2 = time.perf_counter()
    import json

    if scenario == "c":
        ok = result == 7
    elif scenario == "b":
        ok = len(result) == len(xs) and all(
            r.shape == (ARRAY_ITEMS,) and r[0] == 2 * i and r[-1] == 2 * i
            for i, r in enumerate(result))
    else:
        ok = result == xs
    print(json.dumps({"seconds": t1 - t0, "import": t_import, "teardown": t2 - t_stop,
                      "ok": bool(ok), "info": info}), flush=True)


# -- the whole run -------------------------------------------------------------------


HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy():
    """CPU seconds the whole machine has been busy (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / HZ  # user nice system irq softirq


def _ours():
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _reap():
    """Wait for the orphans this process inherited as a subreaper (a
    tool's leftover workers): their CPU time counts as the run's own."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _children():
    me = str(os.getpid())
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2:].split()[1] == me:
            pids.append(int(d))
    return pids


def measure(tool, scenario, args, env, ours_before):
    """One child run: its JSON, with the wall time of the whole process,
    the share of a core other processes used meanwhile, and the processes
    it left behind (killed after a grace second). ``ours_before``: the
    children this process had already (a shell's ``>(tee ...)``)."""
    import json
    import signal
    import subprocess

    cmd = [sys.executable, "-c", "import python_pools; python_pools.child()",
           tool, scenario, str(args.tiny), str(args.arrays)]
    b0, c0, w0 = _busy(), _ours(), time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=args.timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = "timeout"
    wall = time.perf_counter() - w0
    # Leftovers: reparented to us (subreaper). Give them a second.
    left = []
    for _ in range(10):
        _reap()
        left = [pid for pid in _children() if pid not in ours_before]
        if not left:
            break
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.05)
    _reap()
    foreign = max(0.0, (_busy() - b0) - (_ours() - c0)) / max(wall, 1e-9)
    res = {"tool": tool, "scenario": scenario, "rc": rc, "wall": wall, "foreign": foreign,
           "leftovers": len(left), "stderr": err.decode(errors="replace")[-2000:]}
    line = out.decode(errors="replace").strip().splitlines()
    if rc == 0 and line:
        try:
            res.update(json.loads(line[-1]))
        except ValueError:
            res["rc"] = "bad output"
    return res


def _fmt(x):
    return f"{x:.4f}" if x < 10 else f"{x:.2f}"


def summarize(results, tools, scenarios, args):
    """The tables (markdown) and the verdicts on the issue's targets."""
    import statistics
    lines = []
    verdicts = []
    for sc in scenarios:
        title = SCENARIOS[sc].replace("N tiny", f"{args.tiny:,} tiny").replace(
            "M tasks", f"{args.arrays:,} tasks")
        lines += ["", f"### {title}", "",
                  "| tool | runs | median s | min s | max s | ratio to caiclust |"
                  " disturbed |",
                  "|:---|---:|---:|---:|---:|---:|---:|"]
        rows = []
        for name in tools:
            rs = [r for r in results if r["tool"] == name and r["scenario"] == sc]
            if not rs:
                continue
            good = [r["seconds"] for r in rs if r.get("rc") == 0 and r.get("ok")]
            bad = len(rs) - len(good)
            disturbed = sum(1 for r in rs if r["foreign"] > args.max_foreign)
            rows.append((name, good, bad, disturbed))
        base = next((statistics.median(g) for n, g, _, _ in rows
                     if n == Caiclust.name and g), None)
        for name, good, bad, disturbed in rows:
            if not good:
                lines.append(f"| {name} | 0 (failed {bad}) | - | - | - | - | {disturbed} |")
                continue
            med = statistics.median(good)
            ratio = f"{med / base:.2f}" if base else "-"
            runs = f"{len(good)}" + (f" (failed {bad})" if bad else "")
            lines.append(f"| {name} | {runs} | {_fmt(med)} | {_fmt(min(good))} | "
                         f"{_fmt(max(good))} | {ratio} | {disturbed} |")
        others = [statistics.median(g) for n, g, _, _ in rows if n != Caiclust.name and g]
        if base is None or not others:
            continue
        best = min(others)
        if sc == "b":
            met = base <= 1.1 * best
            verdicts.append(f"{sc}: caiclust {_fmt(base)} s, fastest other {_fmt(best)} s, "
                            f"{base / best:.2f}x of it: target (within 1.1x) "
                            f"{'MET' if met else 'MISSED'}")
        else:
            met = base < best
            verdicts.append(f"{sc}: caiclust {_fmt(base)} s, fastest other {_fmt(best)} s "
                            f"({best / base:.2f}x caiclust's time): target (faster than all) "
                            f"{'MET' if met else 'MISSED'}")
    # Import time and teardown, per tool (all of its runs).
    lines += ["", "### Import of the tool and pool teardown (all runs, median)", "",
              "| tool | import s | teardown s (a-cold) | notes |", "|:---|---:|---:|:---|"]
    for name in tools:
        rs = [r for r in results if r["tool"] == name and r.get("rc") == 0]
        if not rs:
            continue
        imp = statistics.median(r["import"] for r in rs)
        td = [r["teardown"] for r in rs if r["scenario"] == "a-cold"]
        infos = sorted({r["info"] for r in rs if r.get("info")})
        leftovers = sum(r["leftovers"] for r in results if r["tool"] == name)
        notes = "; ".join(infos + ([f"{leftovers} processes left behind"] if leftovers else []))
        lines.append(f"| {name} | {_fmt(imp)} | {_fmt(statistics.median(td)) if td else '-'} | "
                     f"{notes} |")
    return lines, verdicts


def run(argv=None):
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python_pools.py run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tiny", type=int, default=100_000)
    ap.add_argument("--arrays", type=int, default=2000)
    ap.add_argument("--scenarios", default="a-warm a-cold b c")
    ap.add_argument("--tools", default="", help="names separated by commas (default: all)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--max-foreign", type=float, default=0.10)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)

    known = all_tools()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()] or list(known)
    scenarios = args.scenarios.split()
    for t in tools:
        if t not in known:
            sys.exit(f"unknown tool {t!r}; known: {', '.join(known)}")
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")

    try:
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)

    ours_before = set(_children())
    # Warm-up, not counted: the page cache, .pyc files, caiclust's cached
    # interpreter query.
    for name in tools:
        r = measure(name, "c" if "c" in known[name].scenarios else "a-cold",
                    argparse.Namespace(**{**vars(args), "tiny": 1000, "arrays": 1}),
                    env, ours_before)
        if r["rc"] != 0 or not r.get("ok"):
            print(f"warm-up of {name} failed ({r['rc']}):\n{r['stderr']}", file=sys.stderr)
    results = []
    t_start = time.time()
    for rnd in range(args.runs):
        for sc in scenarios:
            order = [t for t in tools if sc in known[t].scenarios]
            # Each round starts one tool later: noise and the page cache
            # favour no tool.
            k = rnd % len(order)
            for name in order[k:] + order[:k]:
                # A run that other processes disturbed is taken again (at
                # most --retries times); the least disturbed one counts.
                tries = []
                for _ in range(args.retries + 1):
                    tries.append(measure(name, sc, args, env, ours_before))
                    if tries[-1]["foreign"] <= args.max_foreign or tries[-1]["rc"] != 0:
                        break
                r = min(tries, key=lambda t: (t["rc"] != 0, t["foreign"]))
                r["round"] = rnd
                r["tries"] = len(tries)
                results.append(r)
                state = ("ok" if r["rc"] == 0 and r.get("ok") else
                         f"FAILED ({r['rc']}, ok={r.get('ok')})")
                secs = f"{r['seconds']:.4f} s" if "seconds" in r else "-"
                again = f" (of {len(tries)} tries)" if len(tries) > 1 else ""
                print(f"round {rnd + 1}/{args.runs} {sc:6} {name:26} {secs:>10}  "
                      f"other CPU {r['foreign']:.0%}{again}  {state}", file=sys.stderr,
                      flush=True)
                if state != "ok":
                    print(r["stderr"], file=sys.stderr)

    lines, verdicts = summarize(results, tools, scenarios, args)
    head = [f"## caiclust.Pool vs Python pools: {WORKERS} workers, {args.runs} runs each, "
            f"{time.time() - t_start:.0f} s in all", "",
            f"Python {sys.version.split()[0]} ({sys.executable}); "
            f"load average at the end {open('/proc/loadavg').read().strip()}", ""]
    head += [f"- {t}: {known[t].note}" for t in tools]
    text = "\n".join(head + lines + ["", "### Targets", ""] + [f"- {v}" for v in verdicts])
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    failed = [r for r in results if r["rc"] != 0 or not r.get("ok")]
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2:]))
    sys.exit(__doc__)
