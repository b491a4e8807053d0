"""Workload for Debian's /usr/bin/python3: numpy (python3-numpy, on
libblas.so.3 = the OpenMP build of OpenBLAS, which the test puts first in
LD_LIBRARY_PATH: /usr/lib/<triplet>/openblas-openmp) multiplies 600x600 matrices in
the parent, so OpenBLAS starts its OpenMP threads, then `multiprocessing.Pool(2)`
(the default start method: fork on Python 3.11) multiplies more. Guarded.

Without caiclust the workers spin forever in OpenBLAS's barrier (HAZARDS
H01). `python3 debian_matmul_pool.py serial` computes the same results in
one process. Prints one JSON line: {"method": ..., "parent": ..., "results": [...]}.
"""

import json
import multiprocessing
import sys

import numpy as np

N = 600
A = np.random.RandomState(0).rand(N, N)


def product(seed):
    B = np.random.RandomState(seed).rand(N, N)
    return float((A @ B).sum())


if __name__ == "__main__":
    parent = product(100)  # OpenBLAS's OpenMP threads start here
    seeds = list(range(4))
    method = None
    if sys.argv[1:] == ["serial"]:
        results = [product(s) for s in seeds]
    else:
        method = multiprocessing.get_start_method()
        with multiprocessing.Pool(2) as pool:
            results = pool.map(product, seeds)
    print(json.dumps({"method": method, "parent": parent, "results": results}))
