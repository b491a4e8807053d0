"""LightGBM with an explicit num_threads=2, in the parent and then in the
workers: a count set in code, which OMP_NUM_THREADS does not undo."""
import multiprocessing

import lightgbm as lgb
import numpy as np

METHOD = "fork"


def train(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 10))
    y = x[:, 0] + rng.normal(size=2000)
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_threads": 2},
                        lgb.Dataset(x, y), num_boost_round=5)
    return float(booster.predict(x[:10]).sum())


if __name__ == "__main__":
    print(train(0))
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(train, range(4))))
