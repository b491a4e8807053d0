import os

import caiman as cm
from caiman.cluster import setup_cluster

NONE = None


def main():
    c, dview, n = cm.cluster.setup_cluster()
    cm.stop_server(dview=dview)
    c, dview, n = cm.cluster.setup_cluster(backend="multiprocessing", n_processes=None)
    cm.stop_server(dview=dview)
    c, dview, n = setup_cluster("local", NONE)
    cm.stop_server(dview=dview)
    c, dview, n = cm.cluster.setup_cluster(n_processes=os.cpu_count() - 1)
    cm.stop_server(dview=dview)
    c, dview, n = cm.cluster.setup_cluster(backend="ipyparallel")
    cm.stop_server(dview=dview)


if __name__ == "__main__":
    main()
