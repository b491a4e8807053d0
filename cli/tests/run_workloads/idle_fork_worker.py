"""Workload: idle is not hung. The library of omp_two_threads.c (loaded
with ctypes from $OMP2_LIB) starts a libgomp pool of two threads in the
parent, whatever the environment says; then the workers of
`multiprocessing.get_context("fork").Pool(2)` only sleep (SECONDS, first
argument, default 60) and never enter OpenMP. A hazardous process tree
that is waiting, not hung: it completes. Guarded; the script forces fork.

Prints one JSON line: {"method": "fork", "parent": ..., "slept": [SECONDS, SECONDS]}.
"""

import ctypes
import json
import multiprocessing
import os
import sys
import time

lib = ctypes.CDLL(os.environ["OMP2_LIB"])
lib.work2.restype = ctypes.c_double
lib.work2.argtypes = [ctypes.c_int]


def nap(seconds):
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    parent = lib.work2(500)  # libgomp's pool of two threads starts here
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        slept = pool.map(nap, [seconds, seconds], chunksize=1)
    print(
        json.dumps({"method": ctx.get_start_method(), "parent": parent, "slept": slept})
    )
