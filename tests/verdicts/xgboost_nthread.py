"""xgboost with an explicit nthread=2 in the parent and in the workers:
the count overrides OMP_NUM_THREADS, so only spawn or forkserver help."""
import multiprocessing

import numpy as np
import xgboost as xgb

METHOD = "fork"


def train(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 10))
    y = x[:, 0] + rng.normal(size=2000)
    booster = xgb.train({"nthread": 2, "tree_method": "hist"},
                        xgb.DMatrix(x, label=y, nthread=2), num_boost_round=5)
    return float(booster.predict(xgb.DMatrix(x[:10])).sum())


if __name__ == "__main__":
    print(train(0))
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(train, range(4))))
