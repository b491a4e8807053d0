"""Workload: scikit-learn KMeans (PyPI, its bundled libgomp) in the parent,
then the same kind of fit mapped over `multiprocessing.Pool(2)` with the
default start method (fork on Linux before Python 3.14). Guarded.

Without caiclust the pool's workers hang in libgomp (HAZARDS H01).
`python kmeans_pool.py serial` computes the same results in one process.
Prints one JSON line: {"method": ..., "parent": ..., "results": [[n_iter, inertia], ...]}.
"""

import json
import multiprocessing
import sys

import numpy as np
from sklearn.cluster import KMeans

X = np.random.RandomState(0).rand(4000, 8)


def fit(seed):
    km = KMeans(n_clusters=4, n_init=1, random_state=seed).fit(X)
    return [int(km.n_iter_), float(km.inertia_)]


if __name__ == "__main__":
    parent = fit(100)  # OpenMP in the parent: libgomp's pool now has threads
    seeds = list(range(4))
    method = None
    if sys.argv[1:] == ["serial"]:
        results = [fit(s) for s in seeds]
    else:
        method = multiprocessing.get_start_method()
        with multiprocessing.Pool(2) as pool:
            results = pool.map(fit, seeds)
    print(json.dumps({"method": method, "parent": parent, "results": results}))
