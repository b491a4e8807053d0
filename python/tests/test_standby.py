"""The standby interpreter ``import caiclust`` starts: the first pool's
template, already running when the pool starts. Each test is a fresh
interpreter (standbys belong to a process). What a worker reports:
``sys.flags.no_site`` is 1 when it was forked from a standby (started
with ``-S``, ``site`` run later), 0 from a server started for the pool.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

WHERE = """
import json, os, sys, time
import caiclust
from conftest_children import descendants

deadline = time.monotonic() + 30
while {wait} and not descendants(os.getpid()):
    assert time.monotonic() < deadline, "no standby started"
    time.sleep(0.01)
{after_import}
from caiclust.multiprocessing.pool import Pool

def where(_):
    import numpy  # from site-packages: site ran before the imports
    return {{"no_site": sys.flags.no_site, "late": os.environ.get("LATE"),
            "cwd": os.getcwd(), "ld": os.environ.get("LD_LIBRARY_PATH"),
            "omp": os.environ.get("OMP_NUM_THREADS"), "numpy": numpy.__version__,
            "changed": {{k: os.environ.get(k) for k in ("OPENBLAS_VERBOSE", "LATE")}}}}

with Pool(2) as p:
    print(json.dumps(p.apply(where, (0,))))
    omp = p.plan["env"].get("OMP_NUM_THREADS")
print(json.dumps({{"plan_omp": omp}}))
"""


def _run(run_script, tmp_path, after_import, env=None):
    """Run WHERE: the standby started (unless turned off), then
    ``after_import``, then a pool's one task."""
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest_children.py")
    wait = not (env or {}).get("CAICLUST_PRESTART")
    r = run_script(WHERE.format(after_import=after_import, wait=wait), env=env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    return lines[0], lines[1]["plan_omp"]


@pytest.mark.parametrize("name, value, no_site", [
    # A runtime's variable: the standby takes it on (it ran site before,
    # and site loaded no native code).
    ("OPENBLAS_VERBOSE", "0", 1),
    # Any other: site's .pth files ran before it was set, so the template
    # starts again as a new image, which sees it from the start.
    ("LATE", "after import", 0),
])
def test_what_changed_after_import_reaches_the_workers(run_script, tmp_path, name, value,
                                                        no_site):
    # The standby started at import; a variable and the working folder
    # change afterwards, as a script's first lines often do.
    sub = tmp_path / "later"
    sub.mkdir()
    after = (f"os.environ[{name!r}] = {value!r}\n"
             f"os.chdir({str(sub)!r})")
    got, plan_omp = _run(run_script, tmp_path, after)
    assert got["no_site"] == no_site, got
    assert got["changed"][name] == value
    assert got["cwd"] == str(sub)
    assert got["omp"] == plan_omp and plan_omp, (got, plan_omp)
    assert got["numpy"]


def test_prestart_can_be_turned_off(run_script, tmp_path):
    got, plan_omp = _run(run_script, tmp_path, "os.environ['LATE'] = 'x'",
                         env={"CAICLUST_PRESTART": "0"})
    assert got["no_site"] == 0, got
    assert got["late"] == "x" and got["omp"] == plan_omp


def test_a_loader_variable_set_after_import_is_not_applied_late(run_script, tmp_path):
    # LD_LIBRARY_PATH is read when a process starts: the standby cannot
    # take it on, so the pool starts its own template with it.
    got, _ = _run(run_script, tmp_path, "os.environ['LD_LIBRARY_PATH'] = '/nonexistent-caiclust'")
    assert got["no_site"] == 0, got
    assert got["ld"] == "/nonexistent-caiclust"


def test_stop_server_leaves_no_standby(run_script, tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest_children.py")
    r = run_script("""
        import os, time
        import caiclust
        from conftest_children import descendants

        deadline = time.monotonic() + 30
        while not descendants(os.getpid()):
            assert time.monotonic() < deadline, "no standby started"
            time.sleep(0.01)
        print("standby", len(descendants(os.getpid())))
        caiclust.stop_server()
        print("left", descendants(os.getpid()))
    """)
    assert r.returncode == 0, r.stderr
    assert "standby 1" in r.stdout, r.stdout
    assert "left []" in r.stdout, r.stdout


def test_a_standby_whose_preloads_start_openmp_restarts_clean_and_serves(run_script, tmp_path):
    # The fork requests reach the standby with its become line; the
    # restart without preloads (a new program image) must keep them.
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest_children.py")
    (tmp_path / "omp_at_import.py").write_text(
        "import numpy as np\n"
        "from sklearn.cluster import KMeans\n"
        "KMeans(n_clusters=4, n_init=2, random_state=0).fit(\n"
        "    np.random.default_rng(0).normal(size=(4000, 8)))\n"
        "def task():\n"
        "    return 'ran'\n")
    r = run_script("""
        import os, time
        import caiclust
        from conftest_children import descendants

        deadline = time.monotonic() + 30
        while not descendants(os.getpid()):
            assert time.monotonic() < deadline, "no standby started"
            time.sleep(0.01)
        import omp_at_import
        # One worker: the plan gives it both CPUs, so OpenMP starts threads.
        with caiclust.Pool(1, start_method="forkserver", preload=["omp_at_import"]) as p:
            print(p.apply(omp_at_import.task), p.apply(omp_at_import.task))
    """, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ran ran" in r.stdout, r.stdout
    assert "without preloads" in r.stderr, r.stderr


@pytest.mark.parametrize("prestart", ["1", "0"])
def test_a_package_in_the_working_folder_does_not_shadow_the_parents(run_script, tmp_path,
                                                                     prestart):
    # A template started with `python -c` has its working folder first on
    # sys.path, which the parent's script does not: a folder named
    # caiclust there must not stand in for the installed package, in a
    # standby (which imports caiclust._worker ahead) or in a server the
    # pool starts itself.
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest_children.py")
    shadow = tmp_path / "elsewhere" / "caiclust"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (shadow / "_worker.py").write_text("SHADOW = True\n")
    r = run_script(f"""
        import os, sys, time
        os.chdir({str(shadow.parent)!r})
        import caiclust
        from conftest_children import descendants

        deadline = time.monotonic() + 30
        while {prestart == "1"} and not descendants(os.getpid()):
            assert time.monotonic() < deadline, "no standby started"
            time.sleep(0.01)

        def worker_module(_):
            return sys.modules["caiclust._worker"].__file__

        with caiclust.Pool(1) as p:
            print(p.apply(worker_module, (0,)))
        print(os.path.dirname(caiclust.__file__))
    """, env={"CAICLUST_PRESTART": prestart})
    assert r.returncode == 0, r.stderr
    used, installed = r.stdout.split()
    assert os.path.dirname(used) == installed, r.stdout
