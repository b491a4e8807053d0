"""KMeans in the parent, numpy alone in the workers: the workers never
enter an OpenMP region, so the forked pool does not hang."""
import multiprocessing

import numpy as np
from sklearn.cluster import KMeans

METHOD = "fork"


def scale(seed):
    x = np.random.default_rng(seed).normal(size=(200, 200))
    return float((x * 2).sum())


if __name__ == "__main__":
    x = np.random.default_rng(0).normal(size=(4000, 8))
    print(KMeans(n_clusters=4, n_init=2, random_state=0).fit(x).inertia_)
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(scale, range(4))))
