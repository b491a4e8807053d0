"""caiclust's drop-in for ``multiprocessing.Pool``.

The pool lives in a module whose path contains ``multiprocessing``:
CaImAn picks its code path with ``'multiprocessing' in str(type(dview))``.
"""

from .pool import Pool

__all__ = ["Pool"]
