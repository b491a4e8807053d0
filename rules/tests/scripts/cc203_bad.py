import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

if __name__ == "__main__":
    mp.set_start_method("fork")
    with ProcessPoolExecutor(mp_context=mp.get_context(method="fork")) as ex:
        pass
