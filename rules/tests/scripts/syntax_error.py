import multiprocessing as mp

with mp.Pool(2) as pool
    pass
