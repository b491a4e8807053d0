"""Tests of caiclust run's start-up hook (core/src/program/sitecustomize.py)
with real interpreters and real processes.

    python3 cli/tests/python/test_startup_hook.py core/src/program/sitecustomize.py [PYTHON...]

Each test writes a small program, runs it with the given interpreters (by
default the one running this file) with the hook's folder first on
PYTHONPATH, as `caiclust run` does, and compares with the same program run
without the hook. How a worker was started is read from the processes
themselves: a fork child has the main process as parent and the main
command line; a spawn child has the main process as parent and runs
`spawn_main`; a forkserver child has the fork server as parent (a child of
the main process whose command line names multiprocessing.forkserver).

Plain asserts; prints one line per failure and "N passed, M failed";
exits 0 only when nothing failed.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import traceback

TIMEOUT = 120

# Written at the top of every program: what the process looks like, and
# how to tell how a worker was started.
PRELUDE = r'''
import sys
STARTUP_MODULES = sorted(sys.modules)
STARTUP_META_PATH = [type(f).__name__ for f in sys.meta_path]
import json, os


def me(_=None):
    """What a (worker) process knows about itself."""
    import multiprocessing.context as c
    with open("/proc/self/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode()
    sc = sys.modules.get("sitecustomize")
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "cmd": cmd,
        "default": c._default_context._default_context._name,
        "fork_means": c._concrete_contexts["fork"]._name,
        "sitecustomize": getattr(sc, "__file__", None),
        "path": sys.path,
    }


def put_me(q):
    q.put(me())


def ppid_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def how(w):
    """fork, spawn or forkserver: how worker `w` (from me()) started."""
    main = os.getpid()
    if w["ppid"] == main:
        return "spawn" if "spawn_main" in w["cmd"] else "fork"
    if "multiprocessing.forkserver" in w["cmd"] and ppid_of(w["ppid"]) == main:
        return "forkserver"
    return "unknown: %r" % (w,)


def kinds(workers):
    return sorted({how(w) for w in workers})


def report(**kw):
    kw["startup_modules"] = STARTUP_MODULES
    kw["startup_meta_path"] = STARTUP_META_PATH
    kw["main"] = me()
    print(json.dumps(kw))
'''


class Env:
    """The temporary folder: the hook's own folder (as caiclust writes
    it), the programs, and any user folders."""

    def __init__(self, hook_src):
        self.root = tempfile.mkdtemp(prefix="caiclust-hook-test-")
        self.hook_dir = os.path.join(self.root, "caiclust-hook")
        os.mkdir(self.hook_dir)
        self.hook = os.path.join(self.hook_dir, "sitecustomize.py")
        shutil.copyfile(hook_src, self.hook)
        self.n = 0

    def folder(self, files):
        """A new folder holding `files` (name -> text)."""
        self.n += 1
        d = os.path.join(self.root, f"d{self.n}")
        os.mkdir(d)
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        return d

    def program(self, body):
        """A script: the prelude, then `body`."""
        d = self.folder({"prog.py": PRELUDE + body})
        return os.path.join(d, "prog.py")

    def run(self, python, script, hook=True, env=None, path=(), flags=(), args=()):
        """Run `python flags script args` with the hook's folder first on
        PYTHONPATH (when `hook`), then `path`; `env` added. The result's
        stdout, stderr and exit status."""
        e = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PYTHON") and not k.startswith("CAICLUST_")
        }
        e["PYTHONDONTWRITEBYTECODE"] = "1"
        pp = ([self.hook_dir] if hook else []) + list(path)
        if pp:
            e["PYTHONPATH"] = os.pathsep.join(pp)
        e.update(env or {})
        p = subprocess.run(
            [python] + list(flags) + [script] + list(args),
            env=e,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            cwd=self.root,
        )
        return p

    def report(self, python, script, **kw):
        """Run; the JSON report the program printed last, checking that
        nothing else went to stdout and (unless `stderr_ok`) to stderr."""
        stderr_ok = kw.pop("stderr_ok", False)
        p = self.run(python, script, **kw)
        assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        if not stderr_ok:
            assert p.stderr == "", "stderr:\n" + p.stderr
        lines = p.stdout.splitlines()
        assert len(lines) == 1, "stdout:\n" + p.stdout
        r = json.loads(lines[0])
        r["_stderr"] = p.stderr
        return r


FORKSERVER = {"CAICLUST_START_METHOD": "forkserver"}
FORCED = {"CAICLUST_START_METHOD": "forkserver", "CAICLUST_START_METHOD_FORCE": "1"}


# ---------------------------------------------------------------- the tests


def test_absent_variables_change_nothing(t, py):
    """Hook loaded, no CAICLUST_ variables: same modules, sys.path,
    meta path, start method, workers and sitecustomize as without it."""
    prog = t.program(
        r"""
import multiprocessing as mp
if __name__ == "__main__":
    unset = mp.get_start_method(allow_none=True)
    with mp.Pool(2) as p:
        k = kinds(p.map(me, range(4)))
    report(unset=unset, method=mp.get_start_method(), kinds=k,
           mp_names=dir(mp), ctx_names=dir(mp.context),
           meta_path=[type(f).__name__ for f in sys.meta_path],
           importer_cache=sorted(sys.path_importer_cache))
"""
    )
    a = t.report(py, prog, hook=True)
    b = t.report(py, prog, hook=False)
    assert t.hook_dir not in a["main"]["path"], a["main"]["path"]
    assert t.hook_dir not in a["importer_cache"], a["importer_cache"]
    assert a["main"]["path"] == b["main"]["path"], (
        a["main"]["path"],
        b["main"]["path"],
    )
    assert a["main"]["sitecustomize"] == b["main"]["sitecustomize"]
    for k in ("_stderr", "main"):
        a.pop(k), b.pop(k)
    assert a == b, f"\nwith hook:    {a}\nwithout hook: {b}"


def test_startup_imports_nothing(t, py):
    """With the variables set: not one module more at start-up; only the
    finder waits in sys.meta_path, and it leaves once multiprocessing is
    imported."""
    prog = t.program(
        r"""
meta_before = [type(f).__name__ for f in sys.meta_path]
import multiprocessing
report(meta_before=meta_before, meta_after=[type(f).__name__ for f in sys.meta_path],
       mp_names=dir(multiprocessing))
"""
    )
    a = t.report(py, prog, env=FORCED)
    b = t.report(py, prog, hook=False)
    assert a["startup_modules"] == b["startup_modules"], set(
        a["startup_modules"]
    ) ^ set(b["startup_modules"])
    assert "multiprocessing" not in a["startup_modules"]
    assert a["meta_before"] == ["_Finder"] + b["meta_before"], a["meta_before"]
    assert a["meta_after"] == b["meta_after"], a["meta_after"]
    assert a["mp_names"] == b["mp_names"], "public names of multiprocessing differ"


def test_default_becomes_forkserver(t, py):
    """CAICLUST_START_METHOD=forkserver: the default changes, lazily and
    without being set; a Pool's workers are the fork server's children;
    the server loaded the hook too; PYTHONPATH is left for children."""
    prog = t.program(
        r"""
import multiprocessing as mp
if __name__ == "__main__":
    unset = mp.get_start_method(allow_none=True)
    method = mp.get_start_method()
    ctx = mp.get_context()._name
    with mp.Pool(2) as p:
        ws = p.map(me, range(4))
    report(unset=unset, method=method, ctx=ctx, kinds=kinds(ws), workers=ws,
           pythonpath=os.environ.get("PYTHONPATH"))
"""
    )
    r = t.report(py, prog, env=FORKSERVER)
    assert r["unset"] is None, f"the method was set, not defaulted: {r['unset']!r}"
    assert r["method"] == "forkserver", r["method"]
    assert r["ctx"] == "forkserver", r["ctx"]
    assert r["kinds"] == ["forkserver"], r["kinds"]
    assert r["pythonpath"] == t.hook_dir, r["pythonpath"]
    assert t.hook_dir not in r["main"]["path"]
    for w in r["workers"]:
        assert w["ppid"] != r["main"]["pid"]
        assert w["default"] == "forkserver", (
            f"the fork server did not load the hook: {w!r}"
        )
        assert w["fork_means"] == "fork", f"not forced: {w!r}"
        assert w["sitecustomize"] == r["main"]["sitecustomize"], w


def test_set_start_method_without_force_still_works(t, py):
    """The default is not 'set': the program's own choice wins, without
    force=True, for spawn and for fork; so does get_context(name)."""
    prog = t.program(
        r"""
import multiprocessing as mp
if __name__ == "__main__":
    mp.set_start_method(sys.argv[1])
    with mp.Pool(2) as p:
        k = kinds(p.map(me, range(4)))
    with mp.get_context(sys.argv[2]).Pool(2) as p:
        k2 = kinds(p.map(me, range(4)))
    report(method=mp.get_start_method(), kinds=k, kinds2=k2)
"""
    )
    for chosen, other in (("spawn", "fork"), ("fork", "spawn")):
        r = t.report(py, prog, env=FORKSERVER, args=(chosen, other))
        assert r["method"] == chosen, (chosen, r["method"])
        assert r["kinds"] == [chosen], (chosen, r["kinds"])
        assert r["kinds2"] == [other], (other, r["kinds2"])


def test_executor_and_process_follow_the_default(t, py):
    """ProcessPoolExecutor() without mp_context and Process().start() on
    the default context use the new default."""
    prog = t.program(
        r"""
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
if __name__ == "__main__":
    with ProcessPoolExecutor(2) as ex:
        k = kinds(list(ex.map(me, range(4))))
    q = mp.Queue()
    proc = mp.Process(target=put_me, args=(q,))
    proc.start()
    w = q.get(timeout=60)
    proc.join()
    report(kinds=k, process=how(w))
"""
    )
    r = t.report(py, prog, env=FORKSERVER)
    assert r["kinds"] == ["forkserver"], r["kinds"]
    assert r["process"] == "forkserver", r["process"]


def test_force_overrides_explicit_requests(t, py):
    """CAICLUST_START_METHOD_FORCE=1: get_context("fork") (and "spawn"),
    ProcessPoolExecutor with mp_context=get_context("fork"),
    set_start_method("fork") with and without force, and Process().start()
    all get the forced method. One process per request: in plain Python
    too, set_start_method() without force fails once a pool has run."""
    prog = t.program(
        r"""
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
if __name__ == "__main__":
    how_ = sys.argv[1]
    method = None
    if how_ == "get_context_fork":
        with mp.get_context("fork").Pool(2) as p:
            ws = p.map(me, range(4))
    elif how_ == "get_context_spawn":
        with mp.get_context("spawn").Pool(2) as p:
            ws = p.map(me, range(4))
    elif how_ == "executor_fork":
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
            ws = list(ex.map(me, range(4)))
    elif how_ in ("set_fork", "set_fork_force"):
        mp.set_start_method("fork", force=how_ == "set_fork_force")
        method = mp.get_start_method()
        with mp.Pool(2) as p:
            ws = p.map(me, range(4))
    elif how_ == "process":
        q = mp.Queue()
        proc = mp.Process(target=put_me, args=(q,))
        proc.start()
        ws = [q.get(timeout=60)]
        proc.join()
    report(kinds=kinds(ws), workers=ws, method=method)
"""
    )
    for how in (
        "get_context_fork",
        "get_context_spawn",
        "executor_fork",
        "set_fork",
        "set_fork_force",
        "process",
    ):
        r = t.report(py, prog, env=FORCED, args=[how])
        assert r["kinds"] == ["forkserver"], (how, r["kinds"])
        assert r["method"] in (None, "forkserver"), (how, r["method"])
        for w in r["workers"]:
            assert w["fork_means"] == "forkserver", (
                f"the fork server is not forced: {w!r}"
            )


def test_other_methods(t, py):
    """spawn as the default (spawn workers load the hook themselves);
    fork forced over get_context("spawn"); an unknown method does nothing."""
    prog = t.program(
        r"""
import multiprocessing as mp
if __name__ == "__main__":
    with mp.Pool(2) as p:
        ws = p.map(me, range(4))
    with mp.get_context("spawn").Pool(2) as p:
        k2 = kinds(p.map(me, range(4)))
    report(method=mp.get_start_method(), kinds=kinds(ws), workers=ws, kinds2=k2)
"""
    )
    r = t.report(py, prog, env={"CAICLUST_START_METHOD": "spawn"})
    assert r["method"] == "spawn" and r["kinds"] == ["spawn"], r
    assert all(w["default"] == "spawn" for w in r["workers"]), r["workers"]
    r = t.report(
        py,
        prog,
        env={"CAICLUST_START_METHOD": "fork", "CAICLUST_START_METHOD_FORCE": "1"},
    )
    assert r["kinds"] == ["fork"] and r["kinds2"] == ["fork"], r
    base = t.report(py, prog, hook=False)
    r = t.report(
        py,
        prog,
        env={"CAICLUST_START_METHOD": "bogus", "CAICLUST_START_METHOD_FORCE": "1"},
    )
    assert (r["method"], r["kinds"], r["kinds2"]) == (
        base["method"],
        base["kinds"],
        base["kinds2"],
    ), (r, base)


USER_SC = r"""
import sys
sys.stderr.write("user-sitecustomize-ran\n")
"""

USER_SC_IMPORTS_MP = r"""
import multiprocessing
CHOSEN_AT_STARTUP = multiprocessing.get_start_method(allow_none=True)
"""


def test_user_sitecustomize_still_runs(t, py):
    """A sitecustomize on the user's PYTHONPATH runs once, in the main
    process and in workers, and is the `sitecustomize` module; the hook
    still works, even when that module imports multiprocessing."""
    user = t.folder({"sitecustomize.py": USER_SC})
    prog = t.program(
        r"""
import multiprocessing as mp
if __name__ == "__main__":
    with mp.get_context("spawn").Pool(1) as p:
        ws = p.map(me, range(2))
    report(method=mp.get_start_method(), workers=ws)
"""
    )
    r = t.report(py, prog, env=FORKSERVER, path=[user], stderr_ok=True)
    base = t.report(py, prog, hook=False, path=[user], stderr_ok=True)
    want = os.path.join(user, "sitecustomize.py")
    assert r["main"]["sitecustomize"] == want, r["main"]["sitecustomize"]
    assert r["method"] == "forkserver", r["method"]
    # Once per process: the main one, the spawn worker, the resource
    # tracker (and with the hook, the fork server): as without the hook.
    lines = r["_stderr"].splitlines()
    assert set(lines) == {"user-sitecustomize-ran"}, r["_stderr"]
    assert len(lines) >= len(base["_stderr"].splitlines()) >= 2, (
        r["_stderr"],
        base["_stderr"],
    )
    assert all(w["sitecustomize"] == want for w in r["workers"]), r["workers"]

    user2 = t.folder({"sitecustomize.py": USER_SC_IMPORTS_MP})
    prog2 = t.program(
        r"""
import multiprocessing as mp
if __name__ == "__main__":
    sc = sys.modules["sitecustomize"]
    with mp.Pool(2) as p:
        k = kinds(p.map(me, range(4)))
    report(at_startup=sc.CHOSEN_AT_STARTUP, method=mp.get_start_method(), kinds=k)
"""
    )
    r = t.report(py, prog2, env=FORKSERVER, path=[user2])
    assert "multiprocessing" in r["startup_modules"]
    assert r["at_startup"] is None, r["at_startup"]
    assert r["method"] == "forkserver" and r["kinds"] == ["forkserver"], r


def test_interpreter_and_venv_sitecustomize_still_run(t, py):
    """The sitecustomize Python would import without the hook is the one
    it imports with it: the interpreter's own (Debian's
    /usr/lib/python3.X/sitecustomize.py, which imports apport_python_hook
    and calls its install(): a stand-in on PYTHONPATH shows it ran), and
    one in a venv's site-packages."""
    apport = t.folder(
        {
            "apport_python_hook.py": "import sys\ndef install():\n    sys.stderr.write('apport-install-called\\n')\n"
        }
    )
    prog = t.program("report()\n")
    base = t.report(py, prog, hook=False, path=[apport], stderr_ok=True)
    r = t.report(py, prog, env=FORKSERVER, path=[apport], stderr_ok=True)
    assert r["main"]["sitecustomize"] == base["main"]["sitecustomize"], (
        r["main"],
        base["main"],
    )
    assert r["_stderr"] == base["_stderr"], (r["_stderr"], base["_stderr"])
    own = base["main"]["sitecustomize"]
    if own is not None and os.path.realpath(own).startswith("/etc/python3"):
        # Debian's: it really ran (found our stand-in and installed it).
        assert r["_stderr"] == "apport-install-called\n", r["_stderr"]
    t.note(f"{py}: own sitecustomize {own}")

    venv = os.path.join(t.root, f"venv{t.n}")
    t.n += 1
    subprocess.check_call([py, "-m", "venv", "--without-pip", venv])
    vpy = os.path.join(venv, "bin", "python")
    site = subprocess.check_output(
        [vpy, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        universal_newlines=True,
    ).strip()
    with open(os.path.join(site, "sitecustomize.py"), "w") as f:
        f.write("import sys\nsys.stderr.write('venv-sitecustomize-ran\\n')\n")
    base = t.report(vpy, prog, hook=False, stderr_ok=True)
    r = t.report(vpy, prog, env=FORKSERVER, stderr_ok=True)
    assert r["main"]["sitecustomize"] == base["main"]["sitecustomize"], (
        r["main"],
        base["main"],
    )
    assert r["_stderr"] == base["_stderr"], (r["_stderr"], base["_stderr"])
    if own is None:
        assert r["_stderr"] == "venv-sitecustomize-ran\n", r["_stderr"]


def test_failing_sitecustomize_is_reported_and_the_program_goes_on(t, py):
    """A sitecustomize that raises is reported exactly as Python reports
    it without the hook; the program runs, and the hook is in force."""
    prog = t.program(
        r"""
import multiprocessing as mp
report(method=mp.get_start_method(), has=("sitecustomize" in sys.modules))
"""
    )
    for text in (
        "raise RuntimeError('boom from user sitecustomize')\n",
        "import no_such_module_caiclust_test\n",
        "x = (\n",
    ):
        user = t.folder({"sitecustomize.py": text})
        base = t.report(py, prog, hook=False, path=[user], stderr_ok=True)
        r = t.report(py, prog, env=FORKSERVER, path=[user], stderr_ok=True)
        assert base["_stderr"].startswith("Error in sitecustomize"), base["_stderr"]
        assert r["_stderr"] == base["_stderr"], (r["_stderr"], base["_stderr"])
        assert r["has"] == base["has"], (r["has"], base["has"])
        assert r["method"] == "forkserver", r["method"]


def test_isolated_and_ignore_environment_flags(t, py):
    """python -I and -E ignore PYTHONPATH: the hook is simply not loaded."""
    prog = t.program(
        r"""
import multiprocessing as mp
report(method=mp.get_start_method())
"""
    )
    base = t.report(py, prog, hook=False)
    for flag in ("-I", "-E"):
        r = t.report(py, prog, env=FORCED, flags=[flag])
        assert r["method"] == base["method"], (flag, r["method"])
        assert r["main"]["fork_means"] == "fork", (flag, r["main"])


def test_startup_cost_is_small(t, py):
    """Median CPU time of `python -c pass` with the hook (the variables
    set, its bytecode cached as after a first run) minus with an empty
    folder on PYTHONPATH: < 2 ms. Without cached bytecode
    (PYTHONDONTWRITEBYTECODE, first run) it is compiled every time: noted,
    not asserted."""
    empty = t.folder({})

    def cpu_ms(folder):
        e = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PYTHON") and not k.startswith("CAICLUST_")
        }
        e["PYTHONPATH"] = folder
        e.update(FORCED)
        e["PYTHONDONTWRITEBYTECODE"] = "1"
        p = subprocess.Popen([py, "-c", "pass"], env=e)
        _, status, ru = os.wait4(p.pid, 0)
        assert status == 0
        return (ru.ru_utime + ru.ru_stime) * 1000

    def cost(n=31):
        runs = {t.hook_dir: [], empty: []}
        for _ in range(n):
            for folder, times in runs.items():
                times.append(cpu_ms(folder))
        return (statistics.median(runs[t.hook_dir]), statistics.median(runs[empty]))

    pycache = os.path.join(t.hook_dir, "__pycache__")
    shutil.rmtree(pycache, ignore_errors=True)
    uncached = cost(15)
    subprocess.check_call([py, "-m", "py_compile", t.hook])
    cached = cost()
    shutil.rmtree(pycache, ignore_errors=True)
    cost_ms = cached[0] - cached[1]
    t.note(
        f"{py}: start-up CPU median {cached[0]:.2f} ms with the hook, {cached[1]:.2f} ms "
        f"without: {cost_ms:+.2f} ms (uncompiled: {uncached[0] - uncached[1]:+.2f} ms)"
    )
    assert cost_ms < 2.0, f"the hook costs {cost_ms:.2f} ms"


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main(argv):
    if len(argv) < 2 or not os.path.isfile(argv[1]):
        sys.stderr.write(f"usage: {argv[0]} path/to/sitecustomize.py [PYTHON...]\n")
        return 2
    pythons = argv[2:] or [sys.executable]
    only = os.environ.get("HOOK_TEST_ONLY", "")
    passed = failed = 0
    t = Env(argv[1])
    notes = []
    t.note = notes.append
    try:
        for py in pythons:
            for test in TESTS:
                if only and only not in test.__name__:
                    continue
                try:
                    test(t, py)
                except Exception:  # noqa: BLE001 - reported; the other tests still run
                    failed += 1
                    print(f"FAIL {test.__name__} [{py}]\n{traceback.format_exc()}")
                else:
                    passed += 1
                    print(f"ok   {test.__name__} [{py}]")
    finally:
        shutil.rmtree(t.root, ignore_errors=True)
    for n in notes:
        print("note: " + n)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
