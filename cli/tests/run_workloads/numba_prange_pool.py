"""Workload for a venv with numba: an `@njit(parallel=True)` prange loop
run in the parent with NUMBA_THREADING_LAYER unset (numba picks its OpenMP
layer where its TBB layer is unusable, as in the fixture venv: the JSON
says which), then again in the workers of `multiprocessing.Pool(2)` (the
default start method: fork on Linux before Python 3.14). Guarded.

Without caiclust numba kills every forked worker ("fork() called from a
process already using GNU OpenMP") and the pool waits forever for them
(HAZARDS H01, numba's OpenMP layer). `python numba_prange_pool.py serial`
computes the same results in one process. Prints one JSON line:
{"layer": ..., "method": ..., "parent": ..., "results": [...]}.
"""

import json
import multiprocessing
import sys

import numba
from numba import njit, prange


@njit(parallel=True)
def modsum(n, k):
    s = 0.0
    for i in prange(n):
        s += i % (k + 3)
    return s


def task(k):
    return float(modsum(1_000_000, k))  # exact: a sum of small integers


if __name__ == "__main__":
    parent = task(1)  # numba's threading layer starts here
    layer = numba.threading_layer()
    ks = list(range(4))
    method = None
    if sys.argv[1:] == ["serial"]:
        results = [task(k) for k in ks]
    else:
        method = multiprocessing.get_start_method()
        with multiprocessing.Pool(2) as pool:
            results = pool.map(task, ks)
    print(
        json.dumps(
            {"layer": layer, "method": method, "parent": parent, "results": results}
        )
    )
