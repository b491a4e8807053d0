import multiprocessing as mp

import caiman as cm
from dask.distributed import Client


def twice():
    c, dview, n = cm.cluster.setup_cluster(backend="multiprocessing")
    c, dview, n = cm.cluster.setup_cluster()


def after_pool():
    pool = mp.Pool(2)
    pool.map(abs, range(3))
    cm.cluster.setup_cluster(backend="local")


def after_dask():
    client = Client(n_workers=2)
    cm.cluster.setup_cluster()
    return client


def per_file(files):
    for f in files:
        c, dview, n = cm.cluster.setup_cluster()
        print(f, dview)
