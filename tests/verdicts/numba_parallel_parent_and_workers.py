"""numba's parallel code (`@njit(parallel=True)`, on its GNU OpenMP layer
where its TBB layer is unusable, as in the fixture) runs in the parent,
then in the workers."""
# verdicts: venv-numba
# verdicts-variant: NUMBA_THREADING_LAYER=workqueue
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
    print(task(0))
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(task, range(4))))
