"""caiclust: parallel scientific Python that cannot hang on a threading
runtime, sized for the machine, and says why a task died.

    import caiclust
    with caiclust.Pool() as pool:          # multiprocessing.Pool's interface
        pool.map(f, items, progress=True)
    c, dview, n = caiclust.setup_cluster()  # CaImAn's, drop-in
    caiclust.check()                        # the hazard report, as a table

Names are imported on first use: a worker imports ``caiclust._worker``
alone, and pays for nothing else.
"""

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
