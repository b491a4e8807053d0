"""CaImAn's ``setup_cluster`` and ``stop_server``, on caiclust.

``caiclust.setup_cluster`` takes CaImAn's arguments and returns what
CaImAn's returns, ``(c, dview, n_processes)``, so that
``caiman.cluster.setup_cluster = caiclust.setup_cluster`` works in an
existing pipeline. What changes is how the work runs:
- ``n_processes=None`` counts the CPUs this process may really use
  (affinity, cgroup quota, Slurm), minus one; CaImAn counts every CPU of
  the machine;
- the pool is ``caiclust.Pool``: the hazard policy's start method and
  thread limits, workers that never run the unguarded demo script, and a
  dead or hung worker reported instead of a silent hang.
"""

import logging
import threading

from . import _wire

logger = logging.getLogger("caiclust")

# Pools and views started by setup_cluster and not yet stopped.
_running = []
_running_lock = threading.Lock()


def usable_cpus():
    """CPUs this process may use: affinity, cgroup quota and Slurm's
    allocation taken into account."""
    from . import _core

    return _core.usable_cpus()


def setup_cluster(backend="multiprocessing", n_processes=None, single_thread=False,
                  ignore_preexisting=False, maxtasksperchild=None, **pool_options):
    """Start workers the way CaImAn's ``setup_cluster`` does, safely.

    Returns ``(c, dview, n_processes)``: ``c`` is None for local pools and
    the view's client for ipyparallel; ``dview`` is None when
    ``single_thread`` or ``backend='single'`` (CaImAn then runs serially).
    Extra keywords go to ``caiclust.Pool`` (``timeout``, ``start_method``,
    ``progress`` is per call)."""
    if n_processes is None:
        n_processes = max(usable_cpus() - 1, 1)
    if single_thread or backend == "single":
        return None, None, n_processes
    if backend in ("multiprocessing", "local"):
        _refuse_preexisting(ignore_preexisting)
        from .multiprocessing import Pool

        dview = Pool(n_processes, maxtasksperchild=maxtasksperchild, **pool_options)
        _remember(dview)
        logger.info("caiclust: %s", dview.plan.get("verdict_summary") or dview)
        return None, dview, n_processes
    if backend == "ipyparallel":
        _refuse_preexisting(ignore_preexisting)
        view = DirectView(n_processes, maxtasksperchild=maxtasksperchild, **pool_options)
        _remember(view)
        return view.client, view, n_processes
    raise Exception(f"Unknown Backend: {backend!r} (expected 'multiprocessing', 'local', "
                    "'ipyparallel' or 'single')")


def stop_server(ipcluster="ipcluster", pdir=None, profile=None, dview=None):
    """Stop ``dview`` (CaImAn's signature; the other arguments are
    accepted and unused). Without ``dview``, stop every pool and view
    ``setup_cluster`` started. A standby interpreter still waiting (see
    the package's doc) is stopped too: nothing caiclust started is left."""
    from . import _core

    _core.stop_standbys()
    with _running_lock:
        targets = [dview] if dview is not None else list(_running)
    for d in targets:
        if d is None:
            continue
        d.terminate()
        if hasattr(d, "join"):
            d.join()
        with _running_lock:
            if d in _running:
                _running.remove(d)


def _remember(d):
    with _running_lock:
        _running.append(d)


def _refuse_preexisting(ignore):
    with _running_lock:
        alive = [d for d in _running if d._state_running()]
    if alive:
        if not ignore:
            raise Exception("A cluster is already running. Terminate with dview.terminate() "
                            "if you want to restart.")
        logger.warning("caiclust: found a running cluster started by setup_cluster; "
                       "starting another as asked (ignore_preexisting=True)")


class _Client:
    """What CaImAn reads of an ipyparallel ``Client``: ``len(c)``, ``ids``,
    ``close()``."""

    def __init__(self, view):
        self._view = view

    def __len__(self):
        return len(self._view)

    @property
    def ids(self):
        return list(range(len(self._view)))

    def close(self):
        pass

    def shutdown(self, hub=False):
        self._view.terminate()


class DirectView:
    """The surface of an ipyparallel ``DirectView`` that CaImAn uses
    (``map_sync``, ``map_async``, ``results``, ``clear``, ``len``,
    ``client``), running on caiclust's ipyparallel backend: a controller
    and engines started for it, tasks load-balanced over them, dead
    engines' tasks reported."""

    def __init__(self, n_processes, maxtasksperchild=None, timeout=None, start_method=None,
                 env=None):
        from ._runtime import Runtime

        self._runtime = Runtime(workers=n_processes, backend="ipyparallel", timeout=timeout,
                                maxtasksperchild=maxtasksperchild, env=env, preload=[])
        self._n = self._runtime.workers
        self.results = {}
        self.client = _Client(self)
        self._stopped = False

    def _state_running(self):
        return not self._stopped

    def __len__(self):
        return self._n

    def map_async(self, f, *sequences):
        from ._results import MapResult

        items = list(zip(*sequences))
        result = MapResult(len(items), [1] * len(items))
        if items:
            payloads = [_wire.dumps(((None, f, [args], True), {})) for args in items]
            callbacks = [self._keep(result._chunk_callback(i, 1)) for i in range(len(items))]
            ids = self._runtime.submit_many("caiclust._worker:chunk", payloads, callbacks)
            result.msg_ids = list(ids)
        return result

    def map_sync(self, f, *sequences):
        return self.map_async(f, *sequences).get()

    def map(self, f, *sequences, block=False):
        r = self.map_async(f, *sequences)
        return r.get() if block else r

    def _keep(self, done):
        def keep(ok, value):
            done(ok, value)
        return keep

    def clear(self, targets=None, block=None):
        self.results.clear()

    def terminate(self):
        if not self._stopped:
            self._stopped = True
            self._runtime.shutdown(kill=True)

    def shutdown(self):
        self.terminate()
