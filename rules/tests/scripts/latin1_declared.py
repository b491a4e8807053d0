# -*- coding: latin-1 -*-
import os
import numpy as np

# café: set too late
os.environ["OMP_NUM_THREADS"] = "1"  # déjà trop tard
