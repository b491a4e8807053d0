"""scikit-learn's KMeans (GNU OpenMP, its bundled libgomp) in the parent,
then again in the workers: the hang of GCC bug 60035 under fork."""
import multiprocessing

import numpy as np
from sklearn.cluster import KMeans

METHOD = "fork"


def fit(seed):
    x = np.random.default_rng(seed).normal(size=(4000, 8))
    return float(KMeans(n_clusters=4, n_init=2, random_state=0).fit(x).inertia_)


if __name__ == "__main__":
    print(fit(0))
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(fit, range(4))))
