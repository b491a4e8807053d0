"""What runs in a worker: the calls the parent sends, with the pool's
initializer run once per worker process, and exceptions caught and sent
back whole (type, arguments and traceback) where they can be pickled.

Imported by the core's Python worker (``caiclust._worker:call``); it must
stay light, so it imports nothing of the rest of the package."""

try:
    # The C module alone: pickle.py (and traceback) import re, enum and
    # more, milliseconds at a template's start; traceback waits for the
    # first exception.
    import _pickle as pickle
except ImportError:  # an interpreter without it
    import pickle

# The pools whose initializer already ran in this process, by token.
_initialized = set()


class Raised:
    """An exception raised by a task, as the parent gets it: the exception
    itself when it pickles, else its type name and message, and the
    worker's traceback text."""

    __slots__ = ("exc", "type_name", "message", "tb")

    def __init__(self, exc, tb):
        self.type_name = type(exc).__name__
        self.message = _safe_str(exc)
        self.tb = tb
        try:
            pickle.loads(pickle.dumps(exc))
            self.exc = exc
        except Exception:  # noqa: BLE001 - anything that fails to round-trip
            self.exc = None

    def __reduce__(self):
        return (_rebuild_raised, (self.exc, self.type_name, self.message, self.tb))


def _rebuild_raised(exc, type_name, message, tb):
    r = Raised.__new__(Raised)
    r.exc, r.type_name, r.message, r.tb = exc, type_name, message, tb
    return r


def _safe_str(exc):
    try:
        return str(exc)
    except Exception:  # noqa: BLE001
        return f"<{type(exc).__name__} that cannot be shown>"


def _traceback(exc):
    # The task's own frames: this module's are left out.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, tb))


def _ensure_initialized(init):
    if init is None:
        return
    token, initializer, initargs = init
    if token in _initialized:
        return
    _initialized.add(token)
    initializer(*initargs)


def call(init, fn, args, kwargs):
    """One call: ``fn(*args, **kwargs)``."""
    try:
        _ensure_initialized(init)
        return fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - SystemExit too, as multiprocessing
        return Raised(exc, _traceback(exc))


def chunk(init, fn, items, star):
    """Calls of ``fn`` on each item (``fn(*item)`` with ``star``); the list
    of results, or the first exception raised."""
    try:
        _ensure_initialized(init)
        if star:
            return [fn(*a) for a in items]
        return [fn(a) for a in items]
    except BaseException as exc:  # noqa: BLE001
        return Raised(exc, _traceback(exc))


class ChunkCall:
    """Runs a chunk of argument tuples in one task (``Executor.map`` with a
    chunksize): ``[fn(*args) for args in chunk]``."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __reduce__(self):
        return (ChunkCall, (self.fn,))

    def __call__(self, chunk):
        return [self.fn(*args) for args in chunk]
