import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.update(OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

import numpy as np  # noqa: E402

os.environ["MY_SETTING"] = "1"


def helper():
    import cv2

    return cv2, np
