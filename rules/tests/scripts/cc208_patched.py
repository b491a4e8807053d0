import caiclust
import caiman.cluster

# caiclust's drop-in, as its README shows: CaImAn's own code and this
# script then call caiclust.setup_cluster, which counts usable CPUs.
caiman.cluster.setup_cluster = caiclust.setup_cluster
caiman.cluster.stop_server = caiclust.stop_server


def main():
    c, dview, n = caiman.cluster.setup_cluster()
    caiman.cluster.stop_server(dview=dview)


if __name__ == "__main__":
    main()
