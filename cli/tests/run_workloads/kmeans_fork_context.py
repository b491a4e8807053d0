"""Workload: as kmeans_pool.py, but the script asks for fork itself:
`multiprocessing.get_context("fork").Pool(2)`. Guarded.

Without caiclust the pool's workers hang in libgomp (HAZARDS H01). caiclust
keeps fork (the script chose it) and makes fork safe with the environment.
`python kmeans_fork_context.py serial` computes the same results in one
process. Prints one JSON line: {"method": ..., "parent": ..., "results": [...]}.
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
        ctx = multiprocessing.get_context("fork")
        method = ctx.get_start_method()
        with ctx.Pool(2) as pool:
            results = pool.map(fit, seeds)
    print(json.dumps({"method": method, "parent": parent, "results": results}))
