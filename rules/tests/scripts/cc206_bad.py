import caiman as cm
import ipyparallel as ipp
from caiman.cluster import start_server


def main():
    c, dview, n = cm.cluster.setup_cluster(backend="ipyparallel", n_processes=4)
    start_server(ncpus=4)
    rc = ipp.Client()
    rc.wait_for_engines(4)
    rc.wait_for_engines(4, timeout=-1)
    return c, dview, n


if __name__ == "__main__":
    main()
