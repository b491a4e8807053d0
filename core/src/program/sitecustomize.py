"""caiclust's start-up hook for `caiclust run`: choose multiprocessing's
start method without touching the program's code.

`caiclust run` writes this file into a temporary folder of its own and
puts that folder first on PYTHONPATH of the program it starts, so that
`site` imports it as `sitecustomize` in that interpreter and in every
Python process the program starts (spawn workers, the forkserver and its
children inherit PYTHONPATH, so they all agree). It reads:

CAICLUST_START_METHOD=fork|spawn|forkserver
    Make it the DEFAULT start method: what `multiprocessing.Pool()`,
    `multiprocessing.get_context()` with no argument, `Process().start()`,
    `concurrent.futures.ProcessPoolExecutor()` without `mp_context` and
    `multiprocessing.get_start_method()` use. The method is not "set":
    `get_start_method(allow_none=True)` still answers None, and a later
    `multiprocessing.set_start_method("spawn")` (without force) works and
    wins, as it would without caiclust.
CAICLUST_START_METHOD_FORCE=1
    With it: every request for a start method gets that one, explicit ones
    included (`get_context("fork")`, `set_start_method("fork")` with or
    without force, `ProcessPoolExecutor(mp_context=get_context("fork"))`).
    Out of reach: context classes instantiated by hand
    (`multiprocessing.context.ForkContext()`), `ForkProcess` used directly,
    raw `os.fork()`, and `importlib.reload(multiprocessing.context)`.

An unknown or unavailable method (forkserver on Windows) does nothing.

How: nothing is imported at start-up. A finder put first in sys.meta_path
waits for `multiprocessing.context` to be imported, lets the normal loader
execute it, then, before `multiprocessing/__init__` copies the default
context's bound methods, points `_default_context._default_context` (the
DefaultContext instance's fallback, which `_actual_context` takes when the
program never sets a method) at the chosen concrete context; in force mode
it also maps every name in `_concrete_contexts` to that context, which is
where `get_context(name)` and `set_start_method(name)` look. The finder
then leaves sys.meta_path. These names are the same in CPython 3.4 to 3.14.

Then the hook gets out of the way: it removes its folder from sys.path
(not from the PYTHONPATH variable, which children need) and imports the
`sitecustomize` that Python would have imported without it (Debian's
/usr/lib/python3.X/sitecustomize.py, one in a venv or on the user's
PYTHONPATH), which replaces this module in sys.modules. When that module
raises, the exception goes on to `site`, which reports it exactly as it
would have ("Error in sitecustomize; set PYTHONVERBOSE for traceback:") and
goes on. When there is none, this module leaves sys.modules as if no
sitecustomize existed. It prints nothing and defines no names elsewhere.
`python -I`, `-E` and `-S` don't load it at all. `usercustomize` is
imported by `site` separately and is not affected.

Keep this file parseable by old interpreters (no f-strings): a Python 2
program started by the program gets it too, and there it only chains.
"""

import os
import sys


def _install(method, force):
    """Arrange for `multiprocessing.context` to be patched when imported
    (or now, when something imported it already)."""

    def patch(context):
        concrete = getattr(context, "_concrete_contexts", None)
        default = getattr(context, "_default_context", None)
        if not isinstance(concrete, dict) or default is None:
            return
        chosen = concrete.get(method)
        if chosen is None:
            return
        try:
            chosen._check_available()
        except ValueError:  # forkserver where fds cannot be passed
            return
        if force:
            for name in list(concrete):
                concrete[name] = chosen
        default._default_context = chosen

    already = sys.modules.get("multiprocessing.context")
    if already is not None:
        patch(already)
        return

    class _Loader:
        """Runs the real loader, then patches; gives the module its real
        loader back."""

        def __init__(self, spec):
            self.spec = spec
            self.real = spec.loader

        def create_module(self, spec):
            create = getattr(self.real, "create_module", None)
            return create(spec) if create is not None else None

        def exec_module(self, module):
            self.spec.loader = self.real
            try:
                module.__loader__ = self.real
            except AttributeError:
                pass
            self.real.exec_module(module)
            finder.done()
            patch(module)

    class _Finder:
        """Waits for `multiprocessing.context`; answers None to the rest."""

        def find_spec(self, name, path=None, target=None):
            if name != "multiprocessing.context":
                return None
            for other in list(sys.meta_path):
                find = getattr(other, "find_spec", None)
                if other is self or find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    break
            else:
                return None
            if spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            spec.loader = _Loader(spec)
            return spec

        def done(self):
            try:
                sys.meta_path.remove(self)
            except ValueError:
                pass

        def __repr__(self):
            return "<caiclust start-method hook>"

    finder = _Finder()
    sys.meta_path.insert(0, finder)


def _leave_sys_path():
    """Remove this file's folder from sys.path and the importer cache."""
    here = os.path.dirname(os.path.abspath(__file__))
    kept = []
    for entry in sys.path:
        if entry and os.path.abspath(entry) == here:
            sys.path_importer_cache.pop(entry, None)
        else:
            kept.append(entry)
    sys.path[:] = kept
    sys.path_importer_cache.pop(here, None)


def _chain():
    """Import the next `sitecustomize` as the real one, in this module's
    place in sys.modules (the import system returns whatever sys.modules
    holds once a module has run, and module locks are re-entrant).

    Nothing is caught: an exception of the real one reaches `site`, which
    reports it as it always does and goes on; when there is no other
    `sitecustomize`, the ModuleNotFoundError (name "sitecustomize") reaches
    `site`, which ignores it, and sys.modules has no `sitecustomize`: as
    without this hook."""
    del sys.modules[__name__]
    __import__("sitecustomize")


def _main():
    # Python 2 would choke on a finder without find_module: only chain.
    if sys.version_info >= (3, 4):  # noqa: UP036 (see the module docs)
        method = os.environ.get("CAICLUST_START_METHOD", "")
        if method:
            _install(method, os.environ.get("CAICLUST_START_METHOD_FORCE", "") == "1")
    _leave_sys_path()
    if __name__ == "sitecustomize":
        _chain()


_main()
