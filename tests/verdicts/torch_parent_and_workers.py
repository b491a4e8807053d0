"""PyTorch (PyPI, Linux x86_64: its intra-op pool is the GNU OpenMP its
wheel bundles; the CUDA runtime is installed, never initialised) runs a
matrix product in the parent, then in the workers."""
# verdicts: venv-torch
import multiprocessing

import torch

METHOD = "fork"


def task(seed):
    x = torch.rand(400, 400, generator=torch.Generator().manual_seed(seed))
    return float((x @ x).sum())


if __name__ == "__main__":
    print(task(0))
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(task, range(4))))
