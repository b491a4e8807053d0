import caiman as cm


def main():
    c, dview, n = cm.cluster.setup_cluster(backend="single")
    c2, dview2, n2 = cm.cluster.setup_cluster(backend="single", single_thread=True)
    return c, dview, n, c2, dview2, n2


if __name__ == "__main__":
    main()
