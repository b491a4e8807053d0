import multiprocessing as mp

import caiman as cm
from dask.distributed import Client


def twice():
    c, dview, n = cm.cluster.setup_cluster(backend="multiprocessing")
    cm.stop_server(dview=dview)
    c, dview, n = cm.cluster.setup_cluster()
    dview.terminate()


def after_pool():
    with mp.Pool(2) as pool:
        pool.map(abs, range(3))
    other = mp.Pool(2)
    other.close()
    other.join()
    cm.cluster.setup_cluster(backend="local")


def after_remote_dask():
    client = Client("tcp://scheduler:8786")
    cm.cluster.setup_cluster()
    return client


def kept_on_purpose():
    keep = mp.Manager()
    cm.cluster.setup_cluster(ignore_preexisting=True)
    return keep


def per_file(files):
    for f in files:
        c, dview, n = cm.cluster.setup_cluster()
        print(f, dview)
        cm.stop_server(dview=dview)


def then_single():
    cm.cluster.setup_cluster(backend="multiprocessing")
    cm.cluster.setup_cluster(backend="single")
