import os

import caiclust
import caiman as cm
from caiman.cluster import setup_cluster

N = 3


def explicit():
    c, dview, n = cm.cluster.setup_cluster(n_processes=4)
    cm.stop_server(dview=dview)
    c, dview, n = setup_cluster("multiprocessing", N)
    cm.stop_server(dview=dview)
    usable = max(len(os.sched_getaffinity(0)) - 1, 1)
    c, dview, n = cm.cluster.setup_cluster(n_processes=usable)
    cm.stop_server(dview=dview)
    c, dview, n = cm.cluster.setup_cluster(n_processes=max(caiclust.usable_cpus() - 1, 1))
    cm.stop_server(dview=dview)


def single():
    cm.cluster.setup_cluster(backend="single")


def options(**kwargs):
    c, dview, n = cm.cluster.setup_cluster(**kwargs)
    cm.stop_server(dview=dview)


def drop_in():
    c, dview, n = caiclust.setup_cluster()
    caiclust.stop_server(dview=dview)


if __name__ == "__main__":
    explicit()
