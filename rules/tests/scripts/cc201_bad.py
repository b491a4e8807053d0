import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor


def square(x):
    return x * x


with mp.Pool(4) as pool:
    print(pool.map(square, range(10)))

for _ in range(2):
    with ProcessPoolExecutor(max_workers=2) as ex:
        print(list(ex.map(square, range(4))))

if __name__ != "__main__":
    pass
else:
    # guarded: no finding
    p = mp.Pool(2)

p = mp.Process(target=square, args=(3,))
p.start()
