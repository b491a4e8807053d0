"""Workload: a script WITHOUT an `if __name__ == "__main__":` guard, as
CaImAn's demos are: at top level it fits scikit-learn KMeans (PyPI, its
bundled libgomp), then maps fits over `multiprocessing.Pool(2)` (the
default start method), with OpenMP in the workers.

Without caiclust the workers hang in libgomp (HAZARDS H01). spawn or
forkserver would re-run this top level in every worker (HAZARDS H07: a
"bootstrapping phase" error loop), so a fix must keep fork. The first line
printed is the marker "top level ran": it must appear once.
`python unguarded_kmeans_pool.py serial` computes the same results in one
process. Prints one JSON line last: {"method": ..., "parent": ..., "results": [...]}.
"""

import json
import multiprocessing
import sys

import numpy as np
from sklearn.cluster import KMeans

print("top level ran", flush=True)

X = np.random.RandomState(0).rand(4000, 8)


def fit(seed):
    km = KMeans(n_clusters=4, n_init=1, random_state=seed).fit(X)
    return [int(km.n_iter_), float(km.inertia_)]


parent = fit(100)  # OpenMP in the parent: libgomp's pool now has threads
seeds = list(range(4))
method = None
if sys.argv[1:] == ["serial"]:
    results = [fit(s) for s in seeds]
else:
    method = multiprocessing.get_start_method()
    pool = multiprocessing.Pool(2)
    results = pool.map(fit, seeds)
    pool.close()
    pool.join()
print(json.dumps({"method": method, "parent": parent, "results": results}))
