import multiprocessing as mp
pool = mp.Pool(2)
