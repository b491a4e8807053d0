"""LightGBM (its ctypes-loaded library on the system libgomp.so.1) trains
in the parent, then in the workers."""
import multiprocessing

import lightgbm as lgb
import numpy as np

METHOD = "fork"


def train(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 10))
    y = x[:, 0] + rng.normal(size=2000)
    booster = lgb.train({"objective": "regression", "verbose": -1},
                        lgb.Dataset(x, y), num_boost_round=5)
    return float(booster.predict(x[:10]).sum())


if __name__ == "__main__":
    print(train(0))
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(train, range(4))))
