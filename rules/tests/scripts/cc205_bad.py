import multiprocessing as mp

if __name__ == "__main__":
    # Defined under the guard: spawn workers re-import the script as
    # __mp_main__ without running this block.
    def work(x):
        return x * x

    mp.set_start_method("spawn")
    with mp.Pool(2) as pool:
        print(pool.map(work, range(4)))
