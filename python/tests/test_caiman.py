"""Acceptance: a CaImAn-shaped run. An unguarded script (no
``if __name__ == "__main__":``) defines its task functions, fits a KMeans
in the parent (OpenMP threads started there), then maps over numpy
arrays, scipy.sparse matrices and parameter dicts with a cluster from
``setup_cluster``. Its workers use OpenMP again.

The oracle for "it would hang": the same script on
``multiprocessing.Pool`` with fork, really run."""

import subprocess

import pytest

SCRIPT = """
import os, sys, time
import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans
{setup}

def patch_stats(args):
    movie, A, params = args
    # OpenMP in the worker (scikit-learn's KMeans), after the parent used it.
    km = KMeans(n_clusters=params["k"], n_init=2, random_state=0).fit(movie)
    proj = A.T @ movie
    return {{"centers": np.sort(km.cluster_centers_, axis=0),
             "proj": proj, "nnz": A.nnz, "gain": params["gain"] * movie.sum()}}

rng = np.random.default_rng(0)
data = rng.normal(size=(4000, 8))
# The parent runs OpenMP before the pool starts: GNU OpenMP's threads exist.
KMeans(n_clusters=4, n_init=2, random_state=0).fit(data)

args = []
for i in range(12):
    movie = rng.normal(size=(300, 8)) + i
    A = sp.random(300, 5, density=0.1, random_state=i, format="csc")
    args.append((movie, A, {{"k": 3, "gain": 0.5 + i}}))

serial = [patch_stats(a) for a in args]
c, dview, n_processes = {start}
results = dview.map_async(patch_stats, args).get(4294967)
for got, want in zip(results, serial):
    assert got["nnz"] == want["nnz"]
    assert np.allclose(got["centers"], want["centers"])
    assert np.allclose(got["proj"], want["proj"])
    assert got["gain"] == want["gain"]
assert len(results) == len(serial)
print("RESULTS-IDENTICAL", n_processes, type(dview).__module__, flush=True)
{stop}
"""

CAICLUST = dict(
    setup="import caiclust",
    start="caiclust.setup_cluster()",
    stop="""caiclust.stop_server(dview=dview)
from conftest_children import descendants
left = descendants(os.getpid())
print("LEFT", left, flush=True)
assert not left, left
""",
)

MP_FORK = dict(
    setup="import multiprocessing",
    start="(None, multiprocessing.get_context('fork').Pool(2), 2)",
    stop="dview.terminate()",
)


@pytest.fixture
def children_module(tmp_path):
    import shutil
    from pathlib import Path

    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest_children.py")


def test_setup_cluster_runs_what_fork_hangs_on(run_script, children_module):
    done = run_script(SCRIPT.format(**CAICLUST), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "RESULTS-IDENTICAL" in done.stdout
    # CaImAn dispatches on 'multiprocessing' in str(type(dview)).
    assert "multiprocessing" in done.stdout.split("RESULTS-IDENTICAL")[1].splitlines()[0]
    assert "LEFT []" in done.stdout


def test_multiprocessing_fork_really_hangs_on_it(run_script):
    # The oracle: the same work on multiprocessing.Pool under fork never
    # finishes (GNU OpenMP in the forked workers waits for threads that
    # were not forked). 60 s is far beyond the few seconds the work takes.
    with pytest.raises(subprocess.TimeoutExpired):
        run_script(SCRIPT.format(**MP_FORK), timeout=60)


def test_patched_caiman_setup_cluster(run_script, children_module, tmp_path):
    # CaImAn is not on PyPI: a stand-in `caiman.cluster` module whose own
    # setup_cluster must never run. The runner patches it, as a user would,
    # before the unguarded script runs.
    pkg = tmp_path / "caiman"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cluster.py").write_text(
        "def setup_cluster(*a, **k):\n"
        "    raise RuntimeError('the stand-in caiman.cluster.setup_cluster ran')\n"
        "def stop_server(*a, **k):\n"
        "    raise RuntimeError('the stand-in caiman.cluster.stop_server ran')\n")
    script = SCRIPT.format(
        setup="import caiman.cluster",
        start="caiman.cluster.setup_cluster(backend='multiprocessing', n_processes=2)",
        stop="caiman.cluster.stop_server(dview=dview)\nprint('STOPPED', flush=True)",
    )
    (tmp_path / "demo.py").write_text(script)
    runner = """
import runpy, sys
import caiclust, caiman.cluster
caiman.cluster.setup_cluster = caiclust.setup_cluster
caiman.cluster.stop_server = caiclust.stop_server
sys.argv = ["demo.py"]
runpy.run_path("demo.py", run_name="__main__")
"""
    done = run_script(runner, timeout=300, name="runner.py")
    assert done.returncode == 0, done.stderr
    assert "RESULTS-IDENTICAL 2" in done.stdout
    assert "STOPPED" in done.stdout
