"""Workload: the library of omp_two_threads.c (loaded with ctypes from
$OMP2_LIB), which calls omp_set_num_threads(2) itself, used in the parent
and then in the workers of `multiprocessing.get_context("fork").Pool(2)`.
Guarded; the script forces fork.

Under fork the workers hang in libgomp whatever OMP_NUM_THREADS says: only
another start method (or a watchdog) helps. Prints "parent PID", then
"worker PID" from each worker as it starts a task (before the library
call), then one JSON line: {"method": ..., "parent": ..., "results": [...]}.
`python forced_threads_fork_pool.py serial` computes the results in one
process.
"""

import ctypes
import json
import multiprocessing
import os
import sys

lib = ctypes.CDLL(os.environ["OMP2_LIB"])
lib.work2.restype = ctypes.c_double
lib.work2.argtypes = [ctypes.c_int]


def say(text):
    """One write per line: the workers' lines don't interleave."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def task(n):
    say(f"worker {os.getpid()}")
    return lib.work2(500 + n)


if __name__ == "__main__":
    say(f"parent {os.getpid()}")
    parent = lib.work2(500)  # libgomp's pool of two threads starts here
    ns = list(range(4))
    method = None
    if sys.argv[1:] == ["serial"]:
        results = [lib.work2(500 + n) for n in ns]
    else:
        ctx = multiprocessing.get_context("fork")
        method = ctx.get_start_method()
        with ctx.Pool(2) as pool:
            results = pool.map(task, ns)
    print(json.dumps({"method": method, "parent": parent, "results": results}))
