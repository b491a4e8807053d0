import os
import numpy as np
from scipy import linalg

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.update({"OPENBLAS_NUM_THREADS": "1", "HOME": "/tmp"})
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.putenv("KMP_AFFINITY", "disabled")
os.environ["MY_SETTING"] = "1"


def main():
    os.environ["VECLIB_MAXIMUM_THREADS"] = "1"
    return np.ones(3), linalg
