"""Workload: a C library built with `gcc -fopenmp` (caiclust_tests'
OMPWORK_C: `double work(int n)`, an OpenMP reduction whose result does not
depend on the thread count), loaded with ctypes from $OMPWORK_LIB, used in
the parent, then in the workers of `multiprocessing.get_context("fork").Pool(2)`.
Guarded; the script forces fork.

Without caiclust the workers hang in libgomp (HAZARDS H01); the library
takes its thread count from OMP_NUM_THREADS, so the environment fixes it.
`python gomp_fork_pool.py serial` computes the same results in one process.
Prints one JSON line: {"method": ..., "parent": ..., "results": [...]}.
"""

import ctypes
import json
import multiprocessing
import os
import sys

lib = ctypes.CDLL(os.environ["OMPWORK_LIB"])
lib.work.restype = ctypes.c_double
lib.work.argtypes = [ctypes.c_int]


def task(n):
    return lib.work(1000 + n)


if __name__ == "__main__":
    parent = task(0)  # libgomp's pool starts here
    ns = list(range(4))
    method = None
    if sys.argv[1:] == ["serial"]:
        results = [task(n) for n in ns]
    else:
        ctx = multiprocessing.get_context("fork")
        method = ctx.get_start_method()
        with ctx.Pool(2) as pool:
            results = pool.map(task, ns)
    print(json.dumps({"method": method, "parent": parent, "results": results}))
