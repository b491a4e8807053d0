"""caiclust: parallel scientific Python that cannot hang on a threading
runtime, sized for the machine, and says why a task died.

    import caiclust
    with caiclust.Pool() as pool:          # multiprocessing.Pool's interface
        pool.map(f, items, progress=True)
    c, dview, n = caiclust.setup_cluster()  # CaImAn's, drop-in
    caiclust.check()                        # the hazard report, as a table

Names are imported on first use: a worker imports ``caiclust._worker``
alone, and pays for nothing else.

Importing the package starts a *standby* interpreter in the background
(POSIX), so that the first pool's worker template is ready when the pool
starts: a bare interpreter that has imported only the standard library;
it takes on the pool's environment (thread limits included) and working
folder before it imports anything else (see the core's
``worker/standby.rs``). ``CAICLUST_PRESTART=0`` turns this off. None
starts inside caiclust's own workers or commands.
"""

import os
import sys
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Pool": "caiclust.multiprocessing.pool",
    "Executor": "caiclust._executor",
    "setup_cluster": "caiclust.cluster",
    "stop_server": "caiclust.cluster",
    "usable_cpus": "caiclust.cluster",
    "check": "caiclust._report",
    "Report": "caiclust._report",
    "Finding": "caiclust._report",
    "TaskFailed": "caiclust._errors",
    "WorkerDied": "caiclust._errors",
    "TaskTimeout": "caiclust._errors",
    "TaskHung": "caiclust._errors",
    "TaskCancelled": "caiclust._errors",
    "WorkerStartError": "caiclust._errors",
    "RemoteError": "caiclust._errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'caiclust' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


# What every Python pool's template imports (caiclust._worker, pure
# Python, and the standard library's _pickle it needs): a standby has them
# loaded before any pool asks for them.
_STANDBY_IMPORTS = ["_pickle", "caiclust._worker"]
_OWN_COMMANDS = ("caiclust", "caiclust-check")


def _prestart():
    """Start the standby interpreter, unless turned off, inside a worker,
    or running one of the package's own commands."""
    if os.environ.get("CAICLUST_PRESTART", "").lower() in ("0", "no", "false", "off"):
        return
    if os.environ.get("CAICLUST_PYTHON_WORKER") or not sys.executable:
        return
    if os.path.basename(sys.argv[0] if sys.argv else "") in _OWN_COMMANDS:
        return
    try:
        from . import _core

        _core.prestart(sys.executable, _STANDBY_IMPORTS)
    except Exception:  # noqa: BLE001 - only a head start: pools start their own template
        pass


_prestart()
