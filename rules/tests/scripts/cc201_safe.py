import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor


def square(x):
    return x * x


def run():
    with mp.Pool(4) as pool:
        return pool.map(square, range(10))


class Runner:
    def go(self):
        with ProcessPoolExecutor(max_workers=2) as ex:
            return list(ex.map(square, range(4)))


if __name__ == "__main__":
    print(run())
    p = mp.Process(target=square, args=(3,))
    p.start()
    p.join()
