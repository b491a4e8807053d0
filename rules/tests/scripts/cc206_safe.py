import caiman as cm
import ipyparallel as ipp


def main():
    rc = ipp.Cluster(n=4).start_and_connect_sync()
    rc.wait_for_engines(4, timeout=120)
    c, dview, n = cm.cluster.setup_cluster(backend="multiprocessing", n_processes=2)
    cm.stop_server(dview=dview)
    return rc[:]


if __name__ == "__main__":
    main()
