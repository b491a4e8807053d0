import multiprocessing as mp

import caiman as cm
from dask.distributed import Client


def twice():
    c, dview, n = cm.cluster.setup_cluster(backend="multiprocessing", n_processes=2)
    cm.stop_server(dview=dview)
    c, dview, n = cm.cluster.setup_cluster(n_processes=2)
    dview.terminate()


def after_pool():
    with mp.Pool(2) as pool:
        pool.map(abs, range(3))
    other = mp.Pool(2)
    other.close()
    other.join()
    cm.cluster.setup_cluster(backend="local", n_processes=2)


def after_remote_dask():
    client = Client("tcp://scheduler:8786")
    cm.cluster.setup_cluster(n_processes=2)
    return client


def kept_on_purpose():
    keep = mp.Manager()
    cm.cluster.setup_cluster(ignore_preexisting=True, n_processes=2)
    return keep


def per_file(files):
    for f in files:
        c, dview, n = cm.cluster.setup_cluster(n_processes=2)
        print(f, dview)
        cm.stop_server(dview=dview)


def then_single():
    cm.cluster.setup_cluster(backend="multiprocessing", n_processes=2)
    cm.cluster.setup_cluster(backend="single")
