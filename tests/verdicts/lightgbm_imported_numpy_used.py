"""LightGBM imported (its library is loaded, libgomp with it) but only
numpy runs, in the parent and in the workers."""
import multiprocessing

import lightgbm  # noqa: F401 - imported as scripts often do, never used
import numpy as np

METHOD = "fork"


def task(seed):
    a = np.random.default_rng(seed).normal(size=(300, 300))
    return float((a @ a).trace())


if __name__ == "__main__":
    print(task(0))
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(task, range(4))))
