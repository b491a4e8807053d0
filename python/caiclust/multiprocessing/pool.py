"""``caiclust.multiprocessing.pool.Pool``: the interface of
``multiprocessing.pool.Pool`` on caiclust's workers.

What differs, on purpose:
- the plan is the hazard policy's (processes, threads per worker, a safe
  start method), and the workers never run the caller's ``__main__``;
- a worker that dies fails its task with ``WorkerDied`` naming the signal
  or exit code (``multiprocessing.Pool`` waits forever), and the pool goes
  on with a new worker;
- ``timeout=`` stops a task past it with its whole process tree
  (``TaskTimeout``); the hang watchdog names a hung task's cause;
- ``map``, ``imap`` and their kin take ``progress=True`` for a bar with an
  ETA, in a terminal or a notebook.
"""

import itertools
import threading
import warnings

from .. import _wire
from .._progress import Progress
from .._results import AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult
from .._runtime import Runtime

# multiprocessing.pool's states, by value (importing multiprocessing.pool
# for them costs more than the rest of this package's import).
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

CALL = "caiclust._worker:call"
# Chunks of a map pickled and sent at once.
SEND_AHEAD = 8
# At most about this many bytes of pickled items in a default chunk.
CHUNK_BYTES = 1 << 20
CHUNK = "caiclust._worker:chunk"

# Tokens telling pools' initializers apart in a worker.
_tokens = itertools.count(1)


class Pool:
    """A pool of worker processes with ``multiprocessing.Pool``'s methods.

    ``processes=None`` takes the policy's worker count (the usable CPUs,
    one left for this process). Extra keywords: ``start_method`` (default:
    the policy's), ``timeout`` (seconds per task; its process tree is
    stopped past it), ``stall_after`` (seconds of no progress before the
    hang watchdog looks at a task, default 60; it stops the task only when
    the rules name a hazard; ``False`` turns it off), ``env`` (more
    variables for the workers), ``preload`` (modules a worker template
    imports; default: the third-party modules this process has imported)."""

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None,
                 context=None, *, start_method=None, timeout=None, stall_after=None, env=None,
                 preload=None):
        if processes is not None and (not isinstance(processes, int) or processes < 1):
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if start_method is None and context is not None:
            start_method = context.get_start_method()
        self._state = RUN
        self._runtime = Runtime(workers=processes, start_method=start_method, timeout=timeout,
                                maxtasksperchild=maxtasksperchild, stall_after=stall_after,
                                env=env, preload=preload)
        self._processes = self._runtime.workers
        self._init = None
        if initializer is not None:
            self._init = (f"{id(self)}-{next(_tokens)}", initializer, tuple(initargs))
        self._lock = threading.Lock()
        # The imap feeders still sending their iterables' chunks.
        self._feeders = set()

    # -- what the pool runs ----------------------------------------------

    @property
    def plan(self):
        """The plan it runs: workers, start method, the workers'
        environment, and the policy's verdict."""
        return self._runtime.plan

    @property
    def _pool(self):
        # multiprocessing.Pool keeps its worker processes here; its tests
        # and some callers count them.
        return [None] * self._processes

    def __repr__(self):
        state = {RUN: "running", CLOSE: "closed", TERMINATE: "terminated"}[self._state]
        return (f"<{type(self).__module__}.{type(self).__qualname__} state={state} "
                f"pool_size={self._processes} start_method={self.plan['start_method']}>")

    def _state_running(self):
        return self._state == RUN

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    # -- single calls ----------------------------------------------------

    def apply(self, func, args=(), kwds=None):
        """``func(*args, **kwds)`` in a worker; waits for it."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None,
                    *, timeout=None):
        """``func(*args, **kwds)`` in a worker; its ``AsyncResult``. A call
        that cannot be pickled fails the result, as multiprocessing's."""
        self._check_running()
        result = AsyncResult(callback, error_callback)
        try:
            payload = _wire.dumps(((self._init, func, tuple(args), dict(kwds or {})), {}))
        except Exception as exc:  # noqa: BLE001 - the result's error
            result._fail(exc)
            return result
        self._runtime.submit(CALL, payload, result._task_callback(), timeout)
        return result

    # -- maps ------------------------------------------------------------

    def map(self, func, iterable, chunksize=None, *, progress=False, timeout=None):
        """``[func(x) for x in iterable]``, in the workers."""
        return self._map_async(func, iterable, False, chunksize, None, None, progress,
                               timeout).get()

    def starmap(self, func, iterable, chunksize=None, *, progress=False, timeout=None):
        """``[func(*x) for x in iterable]``, in the workers."""
        return self._map_async(func, iterable, True, chunksize, None, None, progress,
                               timeout).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None,
                  *, progress=False, timeout=None):
        return self._map_async(func, iterable, False, chunksize, callback, error_callback,
                               progress, timeout)

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None, *, progress=False, timeout=None):
        return self._map_async(func, iterable, True, chunksize, callback, error_callback,
                               progress, timeout)

    def _map_async(self, func, iterable, star, chunksize, callback, error_callback, progress,
                   timeout):
        """As multiprocessing's: an iterable without a length is read here
        (its exception is the caller's); one with a length is read as its
        chunks are made, and its exception, or a chunk that cannot be
        pickled, fails the result. Chunks are pickled and sent a few at a
        time, so the workers start on the first while the rest are made."""
        self._check_running()
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        try:
            items = iterable if isinstance(iterable, list) else list(iterable)
            chunksize = self._chunksize(items, chunksize)
        except Exception as exc:  # noqa: BLE001 - the result's error
            return MapResult.failed(exc, callback, error_callback)
        chunks = [items[i:i + chunksize] for i in range(0, len(items), chunksize)]
        n = len(items)
        result = MapResult(n, [len(c) for c in chunks], callback, error_callback,
                           Progress(n) if progress else None)
        for first in range(0, len(chunks), SEND_AHEAD):
            group = chunks[first:first + SEND_AHEAD]
            try:
                payloads = [_wire.dumps(((self._init, func, c, star), {})) for c in group]
            except Exception as exc:  # noqa: BLE001 - the result's error
                result._fail(exc)
                break
            callbacks = [result._chunk_callback(first + i, len(c)) for i, c in enumerate(group)]
            self._runtime.submit_many(CHUNK, payloads, callbacks, timeout)
        return result

    def _chunksize(self, items, chunksize):
        """multiprocessing's default, about four chunks per worker, but no
        more than about CHUNK_BYTES of pickled items in a chunk: large items
        (arrays) stream to the workers instead of waiting in one huge
        message (the first item's pickle is the measure)."""
        if chunksize is not None:
            return max(1, chunksize)
        size, extra = divmod(len(items), self._processes * 4)
        if extra:
            size += 1
        if items and size > 1:
            sample = len(_wire.dumps(items[0]))
            size = min(size, max(1, CHUNK_BYTES // max(sample, 1)))
        return max(1, size)

    def imap(self, func, iterable, chunksize=1, *, progress=False, timeout=None):
        """Results in order, as they come."""
        return self._imap(IMapIterator, func, iterable, chunksize, progress, timeout)

    def imap_unordered(self, func, iterable, chunksize=1, *, progress=False, timeout=None):
        """Results in the order they finish."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, progress, timeout)

    def _imap(self, cls, func, iterable, chunksize, progress, timeout):
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        total = len(iterable) if hasattr(iterable, "__len__") else None
        it = cls(Progress(total) if progress else None, chunksize)
        feeder = threading.Thread(target=self._feed, daemon=True, name="caiclust-imap-feeder",
                                  args=(it, func, iterable, chunksize, timeout))
        with self._lock:
            # Under the lock: join() after close() waits for every feeder.
            self._check_running()
            self._feeders.add(feeder)
        feeder.start()
        return it

    def _feed(self, it, func, iterable, chunksize, timeout):
        """An imap's feeder thread: its iterable, sent chunk by chunk."""
        try:
            self._send_chunks(it, func, iterable, chunksize, timeout)
        finally:
            with self._lock:
                self._feeders.discard(threading.current_thread())

    def _send_chunks(self, it, func, iterable, chunksize, timeout):
        """Consume the iterable chunk by chunk and submit each (the caller
        already has the iterator). An exception of the iterable ends it
        there, at that chunk's place. As multiprocessing's, it goes on
        after ``close`` (``join`` waits for it), not after ``terminate``."""
        source = iter(iterable)
        index = 0
        while True:
            try:
                chunk = list(itertools.islice(source, chunksize))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                it._fail_at(index, exc)
                return
            if not chunk:
                it._set_length(index)
                return
            try:
                payload = _wire.dumps(((self._init, func, chunk, False), {}))
                self._runtime.submit(CHUNK, payload, it._chunk_callback(index, len(chunk)),
                                     timeout)
            except BaseException as exc:  # noqa: BLE001 - unpicklable, or the pool stopped
                it._fail_at(index, exc)
                return
            index += 1

    # -- stopping --------------------------------------------------------

    def close(self):
        """No more tasks; the workers stop once the queued ones are done
        (``join`` waits for that)."""
        with self._lock:
            if self._state == RUN:
                self._state = CLOSE

    def terminate(self):
        """Stop at once: running tasks are killed, waiting ones fail."""
        with self._lock:
            self._state = TERMINATE
        self._runtime.shutdown(kill=True)

    def join(self):
        """Wait for the workers to finish (after ``close`` or
        ``terminate``)."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state == CLOSE:
            self._wait_feeders()
        self._runtime.shutdown(kill=self._state == TERMINATE)

    def _wait_feeders(self):
        while True:
            with self._lock:
                feeders = list(self._feeders)
            if not feeders:
                return
            for feeder in feeders:
                feeder.join()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, *exc):
        self.terminate()

    def __del__(self, _warn=warnings.warn, RUN=RUN):
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
            # The result handler thread keeps the runtime alive: stop the
            # workers here, or they would live until the interpreter exits.
            runtime = getattr(self, "_runtime", None)
            if runtime is not None:
                try:
                    runtime.shutdown(kill=True)
                except Exception:  # noqa: BLE001 - interpreter shutdown
                    pass
