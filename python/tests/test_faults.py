"""Acceptance: each fault raises an exception that names its cause, and
the pool stays usable afterwards."""

import os
import signal
import threading
import time
from multiprocessing.pool import MaybeEncodingError

import pytest

import caiclust
from conftest import descendants


def square(x):
    return x * x


def segfault():
    import ctypes

    ctypes.string_at(0)


def exit_3():
    os._exit(3)


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def return_lock():
    return threading.Lock()


def sleep_with_grandchildren(marker):
    import subprocess

    # A child that starts a grandchild; both would outlive a plain kill of
    # the worker.
    child = subprocess.Popen(["sh", "-c", "sleep 300 & echo $! > " + marker + "; wait"])
    deadline = time.monotonic() + 30
    while not os.path.exists(marker) or not open(marker).read().strip():
        if time.monotonic() > deadline:
            raise RuntimeError("the grandchild never started")
        time.sleep(0.01)
    child.wait()


@pytest.fixture(scope="module")
def pool():
    p = caiclust.Pool(2)
    yield p
    p.terminate()
    p.join()


def still_usable(pool):
    assert pool.map(square, range(20)) == [x * x for x in range(20)]


def test_segfault(pool):
    with pytest.raises(caiclust.WorkerDied, match=r"signal 11 \(SIGSEGV\)"):
        pool.apply(segfault)
    still_usable(pool)


def test_os_exit(pool):
    with pytest.raises(caiclust.WorkerDied, match="exit code 3"):
        pool.apply(exit_3)
    still_usable(pool)


def test_sigkill(pool):
    with pytest.raises(caiclust.WorkerDied, match=r"signal 9 \(SIGKILL\)"):
        pool.apply(kill_self)
    still_usable(pool)


def test_unpicklable_argument(pool):
    with pytest.raises(TypeError, match="lock"):
        pool.apply(square, (threading.Lock(),))
    still_usable(pool)


def test_unpicklable_result(pool):
    with pytest.raises(MaybeEncodingError, match="could not be pickled"):
        pool.apply(return_lock)
    still_usable(pool)


def test_timeout_stops_grandchildren(pool, tmp_path):
    marker = str(tmp_path / "grandchild.pid")
    before = set(descendants(os.getpid()))
    started = time.monotonic()
    with pytest.raises(caiclust.TaskTimeout, match="timed out after"):
        pool.apply_async(sleep_with_grandchildren, (marker,), timeout=2).get(60)
    assert time.monotonic() - started < 30
    grandchild = int(open(marker).read())
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{grandchild}") and time.monotonic() < deadline:
        # Stopping a process tree takes the grace period at most.
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{grandchild}"), "the grandchild outlived the timeout"
    left = set(descendants(os.getpid())) - before
    assert all(not _is_sleep(pid) for pid in left), left
    still_usable(pool)


def _is_sleep(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"sleep" in f.read()
    except OSError:
        return False


def test_executor_survives_a_dead_worker():
    with caiclust.Executor(2) as ex:
        dead = ex.submit(exit_3)
        with pytest.raises(caiclust.WorkerDied, match="exit code 3"):
            dead.result(60)
        assert list(ex.map(square, range(10), chunksize=3)) == [x * x for x in range(10)]


def openmp_then_fork_and_openmp_again():
    # What hangs a forked worker: GNU OpenMP's threads started here, then a
    # fork, then OpenMP in the child (whose team waits for threads that
    # were not forked).
    import numpy as np
    from sklearn.cluster import KMeans

    data = np.random.default_rng(0).normal(size=(4000, 8))
    KMeans(n_clusters=4, n_init=2, random_state=0).fit(data)
    pid = os.fork()
    if pid == 0:
        try:
            KMeans(n_clusters=4, n_init=2, random_state=0).fit(data)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return "finished"


def test_watchdog_ends_a_hung_task_and_names_the_rule():
    with caiclust.Pool(1, stall_after=2) as p:
        before = set(descendants(os.getpid()))
        with pytest.raises(caiclust.TaskHung, match=r"CC0\d\d"):
            p.apply_async(openmp_then_fork_and_openmp_again).get(120)
        assert p.apply(square, (4,)) == 16
        # The hung child went with its worker.
        left = set(descendants(os.getpid())) - before
        assert all(not _is_sleep(pid) for pid in left)


OPENMP_AT_IMPORT = """
import numpy as np
from sklearn.cluster import KMeans

# GNU OpenMP's pool started at import: a template that imports this module
# cannot fork safe workers.
KMeans(n_clusters=4, n_init=2, random_state=0).fit(
    np.random.default_rng(0).normal(size=(4000, 8)))


def task():
    KMeans(n_clusters=4, n_init=2, random_state=0).fit(
        np.random.default_rng(1).normal(size=(4000, 8)))
    return "ran"
"""


def test_a_preload_that_starts_openmp_gives_a_clean_template(tmp_path, monkeypatch, capfd):
    (tmp_path / "omp_at_import.py").write_text(OPENMP_AT_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))
    import omp_at_import

    with caiclust.Pool(1, start_method="forkserver", preload=["omp_at_import"]) as p:
        assert p.apply_async(omp_at_import.task).get(120) == "ran"
    err = capfd.readouterr().err
    assert "started GNU OpenMP's threads" in err and "without preloads" in err
