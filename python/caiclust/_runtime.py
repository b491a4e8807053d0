"""The bridge to the Rust core: one cluster of workers, the plan it runs,
and a result handler thread that hands each result to whoever waits for it.

Every pool, executor and view of this package stands on a ``Runtime``:
- the plan comes from the hazard policy (worker count, threads per worker,
  a start method that is safe), with the caller's explicit choices on top;
- the workers never run the user's ``__main__``: they are the core's
  Python workers, forked from a clean template that imported the
  third-party modules the parent uses (forkserver), or spawned fresh;
- they get the parent's working directory, environment and ``sys.path``,
  with the thread limits applied before any library loads;
- a failure is an exception that names its cause, never a hang.
"""

import json
import os
import sys
import threading
import time
import traceback

from . import _errors, _wire

# Packages never worth importing in a worker's template: the notebook and
# test machinery, packaging tools, this package.
_NOT_PRELOADED = frozenset({
    "IPython", "ipykernel", "ipywidgets", "jupyter_client", "jupyter_core", "traitlets",
    "tornado", "zmq", "debugpy", "comm", "prompt_toolkit", "pygments", "jedi", "parso",
    "pytest", "_pytest", "pluggy", "pip", "setuptools", "pkg_resources", "_distutils_hack",
    "wheel", "caiclust", "cloudpickle", "matplotlib_inline", "psutil", "ipyparallel",
})


# The standard library's folder (lib-dynload and the test package are in
# it): modules from there are the interpreter's own, never preloaded.
_STDLIB = os.path.dirname(os.__file__) + os.sep


def preload_modules():
    """What a worker template imports before it forks, so that each worker
    starts with it loaded: the top-level modules this process imported,
    third-party packages (from site-packages) and the program's own modules
    (from its script's folder or PYTHONPATH, as ``from my_tasks import f``
    brings in); never the script itself, the standard library, or the
    notebook and test machinery. A program's module is imported once in
    the template instead of once per worker at its first task, as a
    forkserver that preloads ``__main__`` would."""
    names = ["caiclust._worker"]  # what every task calls: imported once, in the template
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    for name, module in list(sys.modules.items()):
        if "." in name or name.startswith("_") or name in _NOT_PRELOADED or module is None:
            continue
        path = getattr(module, "__file__", None)
        if not path or path == main:
            continue
        # (An interpreter outside a venv keeps site-packages inside the
        # standard library's folder.)
        third_party = "site-packages" in path or "dist-packages" in path
        if third_party or not path.startswith(_STDLIB):
            names.append(name)
    return names[:1] + sorted(names[1:])


def worker_env():
    """What the workers need of this process besides its environment: the
    folders of its ``sys.path`` (a script's own folder among them, or the
    working folder of an interactive session), so that modules it imports
    by path are found there too, and no other folder's first."""
    cwd = os.getcwd()
    paths = [p or cwd for p in sys.path if os.path.isdir(p or cwd)]
    return {"CAICLUST_SYS_PATH": os.pathsep.join(paths)}


class Runtime:
    """A started cluster and its result handler.

    ``submit`` and ``submit_many`` register a callback per task, called on
    the handler thread with ``(ok, value)``: the unpickled return value, or
    the exception to raise."""

    # Seconds a task may make no progress before the hang watchdog looks
    # at it; it stops the task only when the rules name a hazard.
    STALL_AFTER = 60.0

    def __init__(self, workers=None, start_method=None, backend=None, timeout=None,
                 maxtasksperchild=None, stall_after=None, env=None, preload=None,
                 force_fork=False):
        from . import _core

        if stall_after is None:
            stall_after = self.STALL_AFTER
        elif stall_after is False:
            stall_after = None

        all_env = worker_env()
        all_env.update(env or {})
        self._lock = threading.Lock()
        self._waiting = {}
        self._idle = threading.Condition(self._lock)
        # Set when there is something to wait for: the handler sleeps on it
        # while nothing is outstanding (the core answers at once then).
        self._work = threading.Event()
        self._closed = False
        # The handler starts first: its start overlaps the cluster's (the
        # core plans and starts without the GIL); it waits for the cluster.
        self._cluster = None
        self._built = threading.Event()
        self._handler = threading.Thread(target=self._handle_results, daemon=True,
                                         name="caiclust-results")
        self._handler.start()
        try:
            self._cluster = _core.Cluster(
                sys.executable,
                workers=workers,
                start_method=start_method,
                backend=backend,
                preload=preload_modules() if preload is None else list(preload),
                env=all_env,
                timeout=timeout,
                maxtasksperchild=maxtasksperchild,
                stall_after=stall_after,
                force_fork=force_fork,
            )
        finally:
            self._built.set()
        self.plan = json.loads(self._cluster.plan)
        self.workers = int(self.plan["workers"])

    # -- sending ---------------------------------------------------------

    def submit(self, function, payload, callback, timeout=None):
        """Queue one call of ``function`` (``module:name``) with the pickled
        ``(args, kwargs)``; ``callback(ok, value)`` gets its outcome."""
        with self._lock:
            self._check_open()
            tid = self._cluster.submit(function, payload, timeout)
            self._waiting[tid] = callback
        self._work.set()
        return tid

    def submit_many(self, function, payloads, callbacks, timeout=None):
        with self._lock:
            self._check_open()
            ids = self._cluster.submit_many(function, payloads, timeout)
            self._waiting.update(zip(ids, callbacks))
        self._work.set()
        return ids

    def cancel(self, tid):
        self._cluster.cancel(tid)

    def withdraw(self, ids):
        self._cluster.withdraw(list(ids))

    def _check_open(self):
        if self._closed:
            raise ValueError("the pool is closed")

    # -- receiving -------------------------------------------------------

    def _handle_results(self):
        self._built.wait()
        if self._cluster is None:
            return  # the cluster could not start: nothing will come
        recv = self._cluster.recv_many
        while True:
            self._work.clear()
            with self._lock:
                idle = not self._waiting
            if idle:
                # Nothing outstanding: sleep until a submission (or, now
                # and then, to see whether the pool was shut down).
                if self._cluster.closed:
                    break
                self._work.wait(0.1)
                continue
            got = recv(0.1)
            if not got:
                if self._cluster.closed:
                    break
                continue
            for tid, status, value, pid, _attempts in got:
                with self._lock:
                    callback = self._waiting.pop(tid, None)
                    if not self._waiting:
                        self._idle.notify_all()
                if callback is not None:
                    self._deliver(callback, status, value, pid)
                # Hold on to nothing of a delivered result (its caller may
                # be waiting for the values to be freed).
                callback = value = None
            got = None
        self._fail_waiting(_errors.TaskCancelled("the pool was terminated"))

    @staticmethod
    def _deliver(callback, status, value, pid):
        if status == "ok":
            try:
                ok, obj = True, (_wire.loads(value) if value is not None else None)
            except BaseException as exc:  # noqa: BLE001 - a result that cannot be rebuilt here
                ok, obj = False, exc
        elif status == "exception":
            ok, obj = False, _errors.remote_exception(*value)
        elif status == "failed":
            ok, obj = False, _errors.failure(value[0], value[1], pid)
        else:
            ok, obj = False, _errors.TaskCancelled(f"task cancelled: {value}")
        try:
            callback(ok, obj)
        except BaseException:  # noqa: BLE001 - a user's callback must not stop the handler
            traceback.print_exc()

    def _fail_waiting(self, exc):
        with self._lock:
            waiting, self._waiting = self._waiting, {}
            self._idle.notify_all()
        for callback in waiting.values():
            callback(False, exc)

    # -- stopping --------------------------------------------------------

    def pending(self):
        with self._lock:
            return len(self._waiting)

    def wait_idle(self, timeout=None):
        """Wait until every submitted task has its result."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._waiting:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self):
        """No more submissions."""
        with self._lock:
            self._closed = True

    def shutdown(self, kill=False):
        """Stop the workers: once the queued tasks are done, or at once
        (running tasks are stopped, waiting ones cancelled)."""
        self.close()
        if not kill:
            self.wait_idle()
        self._cluster.shutdown(kill)
        self._work.set()
        if threading.current_thread() is not self._handler:
            self._handler.join()

    def notices(self):
        return self._cluster.notices()
