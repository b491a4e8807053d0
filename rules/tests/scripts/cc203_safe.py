import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

if __name__ == "__main__":
    mp.set_start_method("spawn")
    with ProcessPoolExecutor(mp_context=mp.get_context("forkserver")) as ex:
        pass
