"""Results as ``multiprocessing.pool`` hands them out: ``AsyncResult``,
``MapResult`` (chunks gathered in order) and the ``imap`` iterators.
Each is filled from the runtime's result handler thread."""

import collections
import sys
import threading
import traceback
from multiprocessing import TimeoutError as MpTimeoutError

from . import _worker


def _unwrap(ok, value):
    """A task's (ok, value) with a ``Raised`` turned into its exception."""
    if ok and isinstance(value, _worker.Raised):
        return False, _raised_exception(value)
    return ok, value


def _raised_exception(raised):
    from multiprocessing.pool import RemoteTraceback

    from ._errors import RemoteError

    exc = raised.exc if raised.exc is not None else RemoteError(raised.type_name, raised.message)
    exc.__cause__ = RemoteTraceback(raised.tb)
    return exc


class _Once:
    """A task's callback that lets go of what it fills once it has run:
    the result handler may hold the last callback it ran while it waits
    for the next result, and must not keep a finished result (and the
    values in it) alive that way."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        self._fn = fn

    def __call__(self, ok, value):
        fn, self._fn = self._fn, None
        if fn is not None:
            fn(ok, value)


def _run_user_callback(callback, value):
    """The caller's callback or error callback, on the result handler
    thread. An exception it raises is printed, as an uncaught exception of
    a thread is: it must not stop the handler, or every later result would
    wait forever."""
    try:
        callback(value)
    except BaseException:  # noqa: BLE001 - printed, the handler goes on
        print(f"Exception in the callback {callback!r} of a caiclust result:",
              file=sys.stderr)
        traceback.print_exc()


class AsyncResult:
    """The result of ``apply_async``: ``get``, ``wait``, ``ready``,
    ``successful``; callbacks run on the result handler thread."""

    def __init__(self, callback=None, error_callback=None, progress=None):
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._progress = progress
        self._success = None
        self._value = None

    def ready(self):
        return self._event.is_set()

    def successful(self):
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout=None):
        self._event.wait(timeout)

    def get(self, timeout=None):
        self.wait(timeout)
        if not self.ready():
            raise MpTimeoutError
        if self._success:
            return self._value
        raise self._value

    def _task_callback(self):
        """The callback of the task that fills this result."""
        return _Once(self._set)

    def _set(self, ok, value):
        ok, value = _unwrap(ok, value)
        self._finish(ok, value)

    def _fail(self, exc):
        """Fail before any task ran (the call could not be sent)."""
        self._finish(False, exc)

    def _finish(self, ok, value):
        # As multiprocessing: the callback runs before get() returns.
        self._success, self._value = ok, value
        callback = self._callback if ok else self._error_callback
        self._callback = self._error_callback = None
        try:
            if callback is not None:
                _run_user_callback(callback, value)
            if self._progress is not None:
                self._progress.close()
        finally:
            self._event.set()


ApplyResult = AsyncResult


class MapResult(AsyncResult):
    """The result of ``map_async``: one list, in order, from chunks; the
    first failure ends it (the other chunks still run)."""

    def __init__(self, n_items, chunk_sizes, callback=None, error_callback=None,
                 progress=None):
        super().__init__(callback, error_callback, progress)
        self._parts = [None] * len(chunk_sizes)
        self._left = len(chunk_sizes)
        self._lock = threading.Lock()
        if self._left == 0:
            self._finish(True, [])

    def _chunk_callback(self, index, size):
        """The callback of the task that computes chunk ``index``."""
        def done(ok, value):
            ok, value = _unwrap(ok, value)
            with self._lock:
                if self._event.is_set():
                    return
                if not ok:
                    self._left = 0
                    finish = (False, value)
                else:
                    self._parts[index] = value
                    self._left -= 1
                    finish = None
                    if self._left == 0:
                        finish = (True, [x for part in self._parts for x in part])
                        self._parts = None
            if self._progress is not None:
                self._progress.advance(size)
            if finish is not None:
                self._finish(*finish)
        return _Once(done)

    @classmethod
    def failed(cls, exc, callback=None, error_callback=None):
        """A map that failed before any of its tasks was sent (its
        iterable raised, or a chunk could not be pickled)."""
        result = cls(1, [1], callback, error_callback)
        result._fail(exc)
        return result

    def _fail(self, exc):
        with self._lock:
            if self._event.is_set():
                return
            self._left = 0
            self._parts = None
        self._finish(False, exc)


class IMapIterator:
    """The iterator of ``imap``: results in order as they come; ``next``
    takes a timeout.

    As multiprocessing's: a task's exception is raised in its place; with
    ``chunksize`` 1 the iteration goes on after it, with larger chunks
    (multiprocessing hands out a generator over the chunks) it ends
    there."""

    def __init__(self, progress=None, chunksize=1):
        self._cond = threading.Condition()
        self._chunks = {}
        self._next_chunk = 0
        self._ready = collections.deque()
        self._length = None
        self._progress = progress
        self._ends_at_failure = chunksize > 1
        self._ended = False

    def __iter__(self):
        return self

    def _chunk_callback(self, index, size=1):
        """The callback of the task that computes chunk ``index``."""
        def done(ok, value):
            ok, value = _unwrap(ok, value)
            with self._cond:
                self._chunks[index] = (ok, value)
                self._advance()
                self._cond.notify_all()
            if self._progress is not None:
                self._progress.advance(size)
        return _Once(done)

    def _fail_at(self, index, exc):
        """Chunk ``index`` could not be sent: the iterable raised while it
        was built, or the call could not be pickled. The iteration ends
        with it."""
        with self._cond:
            self._chunks[index] = (False, exc)
            self._length = index + 1
            self._advance()
            self._cond.notify_all()

    def _set_length(self, n_chunks):
        with self._cond:
            if self._length is None:
                self._length = n_chunks
            self._cond.notify_all()

    def _advance(self):
        while self._next_chunk in self._chunks:
            self._take(self._next_chunk)

    def _take(self, index):
        ok, value = self._chunks.pop(index)
        self._next_chunk += 1
        if self._ended:
            return
        if ok:
            self._ready.extend(value)
        else:
            self._ready.append(_Failure(value))

    def _exhausted(self):
        return self._ended or (self._length is not None and self._next_chunk >= self._length)

    def next(self, timeout=None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._exhausted(), timeout):
                raise MpTimeoutError
            if self._ended or not self._ready:
                self._close_progress()
                raise StopIteration
            item = self._ready.popleft()
            if isinstance(item, _Failure) and self._ends_at_failure:
                self._ended = True
                self._ready.clear()
        if isinstance(item, _Failure):
            raise item.exc
        return item

    __next__ = next

    def _close_progress(self):
        if self._progress is not None:
            self._progress.close()
            self._progress = None


class IMapUnorderedIterator(IMapIterator):
    """The iterator of ``imap_unordered``: results as they come."""

    def _advance(self):
        for index in sorted(self._chunks):
            self._take(index)


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc
