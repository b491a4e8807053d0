"""The exceptions a task's failure becomes in the parent. Each names its
cause: the signal that killed a worker, the timeout that stopped a task,
the hazard rule the watchdog matched."""

import builtins


class TaskFailed(RuntimeError):
    """A task did not return: its worker died, it timed out or hung, or it
    could not start. ``pid`` is the worker's process id when known."""

    def __init__(self, message, pid=None):
        super().__init__(message)
        self.pid = pid


class WorkerDied(TaskFailed):
    """The worker process running the task died (a signal such as SIGSEGV
    or SIGKILL, ``os._exit``, the OOM killer). The pool replaces it."""


class TaskTimeout(TaskFailed, TimeoutError):
    """The task ran past its timeout; its whole process tree was stopped."""


class TaskHung(TaskFailed):
    """The hang watchdog found the task stuck, and names the likely cause
    (a hazard rule id)."""


class WorkerStartError(TaskFailed):
    """No worker could be started for the task."""


class TaskCancelled(TaskFailed):
    """The task was cancelled before it finished (terminate, cancel)."""


class RemoteError(Exception):
    """An exception raised in a worker whose type the parent cannot
    rebuild; ``type_name`` names it."""

    def __init__(self, type_name, message):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


class RemoteTraceback(Exception):
    """The worker's traceback, attached as ``__cause__`` of the exception
    raised again in the parent (as multiprocessing does)."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


FAILURES = {
    "worker_died": WorkerDied,
    "timed_out": TaskTimeout,
    "hung": TaskHung,
    "start": WorkerStartError,
    "cancelled": TaskCancelled,
}


def failure(kind, message, pid=None):
    """The exception for a failure reported by the core."""
    cls = FAILURES.get(kind, TaskFailed)
    return cls(f"task failed: {message}", pid)


def _encoding_error(message):
    """multiprocessing's MaybeEncodingError for a result the worker could
    not pickle: ``exc`` the pickling error, ``value`` the value's repr
    (the worker's message ends with "(the value: REPR)")."""
    from multiprocessing.pool import MaybeEncodingError

    head, sep, tail = message.rpartition(" (the value: ")
    value = tail[:-1] if sep and tail.endswith(")") else "<the task's return value>"
    reason = head if sep else message
    exc = MaybeEncodingError.__new__(MaybeEncodingError)
    exc.exc, exc.value = reason, value
    exc.args = (reason, value)
    return exc


def remote_exception(type_name, message, tb):
    """An exception the core reported by name (raised outside the task's
    own code: unpickling its arguments, pickling its result)."""
    if type_name == "UnpicklableResult":
        exc = _encoding_error(message)
    else:
        cls = getattr(builtins, type_name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                exc = cls(message)
            except Exception:  # noqa: BLE001 - constructors with other signatures
                exc = RemoteError(type_name, message)
        else:
            exc = RemoteError(type_name, message)
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    return exc
