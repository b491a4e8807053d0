import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from tasks import work


def square(x):
    return x * x


if __name__ == "__main__":
    with mp.get_context("spawn").Pool(2) as pool:
        print(pool.map(square, range(4)))
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        print(ex.submit(work, 3).result())
