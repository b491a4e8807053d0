"""scikit-learn imported in the parent but KMeans runs only in the workers:
the parent never starts libgomp's threads, so fork is safe."""
import multiprocessing

import numpy as np
from sklearn.cluster import KMeans

METHOD = "fork"


def fit(seed):
    x = np.random.default_rng(seed).normal(size=(4000, 8))
    return float(KMeans(n_clusters=4, n_init=2, random_state=0).fit(x).inertia_)


if __name__ == "__main__":
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(fit, range(4))))
