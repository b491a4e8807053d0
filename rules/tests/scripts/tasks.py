"""Task functions for cc205_safe.ipynb: importable by spawn workers."""


def work(x):
    return x * x
