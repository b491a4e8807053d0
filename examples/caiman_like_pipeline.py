"""A CaImAn-shaped analysis, the way its demos are written: scikit-learn
runs in the parent (here a KMeans over pixel features), then a process
pool runs the same kind of code on each patch. With PyPI scikit-learn on
Linux and the default start method (fork), the workers hang in libgomp.

    caiclust-check --facts examples/caiman-like-linux.facts.json examples/caiman_like_pipeline.py
"""
import multiprocessing

import numpy as np
from sklearn.cluster import KMeans


def cluster_patch(seed):
    pixels = np.random.default_rng(seed).normal(size=(4000, 8))
    return KMeans(n_clusters=4, n_init=2, random_state=0).fit(pixels).inertia_


if __name__ == "__main__":
    print("whole field of view:", cluster_patch(0))
    with multiprocessing.Pool(2) as pool:
        print("patches:", pool.map(cluster_patch, range(8)))
