import caiman as cm


def main():
    c, dview, n = cm.cluster.setup_cluster(single_thread=True)
    return c, dview, n


if __name__ == "__main__":
    main()
