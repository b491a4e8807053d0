"""The ``caiclust`` and ``caiclust-check`` commands that the wheel installs.

Each runs the program in this process, through the extension module (the
same library functions as the native binaries), and exits with its status.

The programs sometimes start themselves again as helpers: to ask a BLAS or
OpenMP library about itself in a throw-away process (``caiclust probe
--pid``), or to watch a ``caiclust map`` run. Here the running program is
the interpreter, so they are told to start the interpreter loading the
extension module, whose initialisation serves the request. The helper runs
``python -I``: it gets the environment of the process being described, and
variables such as ``PYTHONPATH`` or ``PYTHONHOME`` meant for that process
must not change which interpreter or which ``caiclust`` answers; so the
module is loaded from its file, without importing the ``caiclust`` package.
"""

import signal
import sys

from caiclust import _core

# Load the extension module from the file given as the first argument.
_HELPER_CODE = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('caiclust._core', sys.argv[1])\n"
    "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
)


def _self_program():
    """The program and leading arguments that serve the helpers' requests."""
    return sys.executable, ["-I", "-c", _HELPER_CODE, _core.__file__]


def _run(prog):
    if sys.executable:
        path, args = _self_program()
        _core.set_self_program(path, args)
    # As under the native binary, Ctrl-C ends the program at once (the
    # commands that catch it, `run` and `map`, install their own handler).
    # Python's handler would only raise after the program returned.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(_core.main(prog, sys.argv[1:]))


def caiclust_main():
    """The ``caiclust`` command."""
    _run("caiclust")


def check_main():
    """The ``caiclust-check`` command."""
    _run("caiclust-check")
