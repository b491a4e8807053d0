import ctypes
import multiprocessing as mp
import os

import numba
import torch
import lightgbm as lgb
from threadpoolctl import ThreadpoolController, threadpool_limits

libgomp = ctypes.CDLL("libgomp.so.1")
THREADS = 4


def fit(X, y):
    model = lgb.LGBMClassifier(num_threads=THREADS)
    return model.fit(X, y)


def work(x):
    return x


def main(X, y):
    libgomp.omp_set_num_threads(2)
    numba.set_num_threads(os.cpu_count())
    with threadpool_limits(limits=2):
        fit(X, y)
    ThreadpoolController().limit(limits=1)
    with mp.Pool(2) as pool:
        pool.map(work, range(4))


def forked():
    torch.set_num_threads(4)
    if os.fork() == 0:
        os._exit(0)


if __name__ == "__main__":
    mp.set_start_method("fork")
    main([[0]], [0])
    forked()
