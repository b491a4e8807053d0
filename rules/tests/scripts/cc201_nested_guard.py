import multiprocessing as mp
import sys


def work(x):
    return x


try:
    if True:
        if __name__ == "__main__":
            for i in range(2):
                with mp.Pool(2) as pool:
                    pool.map(work, range(3))
except KeyboardInterrupt:
    sys.exit(1)

if "__main__" == __name__:
    with mp.Pool(2) as pool:
        pool.map(work, range(3))
