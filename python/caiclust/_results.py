"""Results as ``multiprocessing.pool`` hands them out: ``AsyncResult``,
``MapResult`` (chunks gathered in order) and the ``imap`` iterators.
Each is filled from the runtime's result handler thread."""

import collections
import threading
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

    def _set(self, ok, value):
        ok, value = _unwrap(ok, value)
        self._finish(ok, value)

    def _finish(self, ok, value):
        self._success, self._value = ok, value
        if ok and self._callback is not None:
            self._callback(value)
        if not ok and self._error_callback is not None:
            self._error_callback(value)
        if self._progress is not None:
            self._progress.close()
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
        return done


class IMapIterator:
    """The iterator of ``imap``: results in order as they come; ``next``
    takes a timeout."""

    def __init__(self, progress=None):
        self._cond = threading.Condition()
        self._chunks = {}
        self._next_chunk = 0
        self._ready = collections.deque()
        self._length = None
        self._progress = progress

    def __iter__(self):
        return self

    def _chunk_callback(self, index, size=1):
        def done(ok, value):
            ok, value = _unwrap(ok, value)
            with self._cond:
                self._chunks[index] = (ok, value)
                self._advance()
                self._cond.notify_all()
            if self._progress is not None:
                self._progress.advance(size)
        return done

    def _fail_at(self, index, exc):
        """The iterable itself raised while chunk ``index`` was built."""
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
            ok, value = self._chunks.pop(self._next_chunk)
            self._next_chunk += 1
            if ok:
                self._ready.extend(value)
            else:
                self._ready.append(_Failure(value))

    def _exhausted(self):
        return self._length is not None and self._next_chunk >= self._length

    def next(self, timeout=None):
        with self._cond:
            if not self._ready:
                if self._exhausted():
                    self._close_progress()
                    raise StopIteration
                self._cond.wait_for(lambda: self._ready or self._exhausted(), timeout)
                if not self._ready:
                    if self._exhausted():
                        self._close_progress()
                        raise StopIteration from None
                    raise MpTimeoutError from None
            item = self._ready.popleft()
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
            ok, value = self._chunks.pop(index)
            self._next_chunk += 1
            if ok:
                self._ready.extend(value)
            else:
                self._ready.append(_Failure(value))


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc
