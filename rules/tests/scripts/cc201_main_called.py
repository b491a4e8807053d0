import multiprocessing as mp


def work(x):
    return x


def start():
    with mp.Pool(2) as pool:
        return pool.map(work, range(3))


def main():
    print(start())


main()
