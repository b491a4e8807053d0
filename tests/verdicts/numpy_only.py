"""numpy alone: matrix products in the parent, then in the workers.
PyPI numpy's OpenBLAS runs on pthreads, which survive fork."""
import multiprocessing

import numpy as np

METHOD = "fork"


def task(seed):
    a = np.random.default_rng(seed).normal(size=(300, 300))
    return float((a @ a).trace())


if __name__ == "__main__":
    a = np.random.default_rng(0).normal(size=(600, 600))
    print(float((a @ a).trace()))
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(task, range(4))))
