"""numba's parallel code is compiled (decorated) in the parent but first
runs in the workers: its layer starts only in each worker."""
# verdicts: venv-numba
import multiprocessing

from numba import njit, prange

METHOD = "fork"


@njit(parallel=True)
def modsum(n, k):
    s = 0.0
    for i in prange(n):
        s += i % (k + 3)
    return s


def task(k):
    return modsum(200_000, k)


if __name__ == "__main__":
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(task, range(4))))
