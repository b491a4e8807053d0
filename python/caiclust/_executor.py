"""``caiclust.Executor``: a ``concurrent.futures.Executor`` on caiclust's
workers. ``submit`` and ``map`` (with ``timeout`` and ``chunksize``) as
``ProcessPoolExecutor``; unlike it, a worker that dies fails only its own
task (``WorkerDied``), and the executor goes on."""

import concurrent.futures as cf
import itertools
import threading

from . import _wire, _worker
from ._errors import TaskCancelled
from ._results import _unwrap
from ._runtime import Runtime

CALL = "caiclust._worker:call"


class Executor(cf.Executor):
    """``max_workers=None`` takes the policy's worker count. Extra
    keywords as ``caiclust.Pool``: ``start_method``, ``task_timeout``
    (seconds per task, stopping its process tree), ``stall_after``,
    ``env``, ``preload``, ``initializer``/``initargs``,
    ``max_tasks_per_child``."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(), *,
                 max_tasks_per_child=None, start_method=None, task_timeout=None,
                 stall_after=None, env=None, preload=None):
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if start_method is None and mp_context is not None:
            start_method = mp_context.get_start_method()
        self._runtime = Runtime(workers=max_workers, start_method=start_method,
                                timeout=task_timeout, maxtasksperchild=max_tasks_per_child,
                                stall_after=stall_after, env=env, preload=preload)
        self._max_workers = self._runtime.workers
        self._init = None
        if initializer is not None:
            self._init = (f"{id(self)}-exec", initializer, tuple(initargs))
        self._shutdown = False
        self._lock = threading.Lock()
        self._futures = {}

    @property
    def plan(self):
        return self._runtime.plan

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future = cf.Future()
            payload = _wire.dumps(((self._init, fn, args, kwargs), {}))
            tid = self._runtime.submit(CALL, payload, self._settle(future))
            self._futures[tid] = future
            future._caiclust_id = tid
        future.add_done_callback(self._withdraw_if_cancelled)
        return future

    def _withdraw_if_cancelled(self, future):
        # Cancelled by its holder before it ran: it never starts.
        if future.cancelled():
            self._runtime.withdraw([future._caiclust_id])

    def _settle(self, future):
        def done(ok, value):
            ok, value = _unwrap(ok, value)
            tid = getattr(future, "_caiclust_id", None)
            with self._lock:
                self._futures.pop(tid, None)
            if not ok and isinstance(value, TaskCancelled):
                # Withdrawn before it began (shutdown with cancel_futures).
                future.cancel()
            if not future.set_running_or_notify_cancel():
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        return done

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """As ``Executor.map``: results in order, lazily; ``timeout`` counts
        from the call; ``chunksize`` calls travel together."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        zipped = zip(*iterables)
        chunks = iter(lambda: list(itertools.islice(zipped, chunksize)), [])
        parts = super().map(_worker.ChunkCall(fn), chunks, timeout=timeout)
        return (x for part in parts for x in part)

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            self._shutdown = True
            waiting = dict(self._futures) if cancel_futures else {}
        # Those that have not begun end cancelled; running ones finish.
        self._runtime.withdraw(waiting)
        if wait:
            self._runtime.shutdown(kill=False)
        else:
            threading.Thread(target=self._runtime.shutdown, daemon=True).start()
