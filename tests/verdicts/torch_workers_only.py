"""PyTorch imported in the parent, run only in the workers: its OpenMP
pool has no threads at the fork, and CUDA is never initialised."""
# verdicts: venv-torch
import multiprocessing

import torch

METHOD = "fork"


def task(seed):
    x = torch.rand(400, 400, generator=torch.Generator().manual_seed(seed))
    return float((x @ x).sum())


if __name__ == "__main__":
    print(torch.__version__)
    with multiprocessing.get_context(METHOD).Pool(2) as pool:
        print(sum(pool.map(task, range(4))))
