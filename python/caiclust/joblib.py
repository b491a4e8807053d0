"""A joblib backend named ``caiclust``: scikit-learn's ``n_jobs`` (and any
``joblib.Parallel``) on caiclust's pool.

    import caiclust.joblib  # registers the backend
    import joblib
    with joblib.parallel_config("caiclust"):
        cross_val_score(model, X, y, n_jobs=2)

``n_jobs=-1`` (or None) takes the policy's worker count; the workers get
the policy's thread limits, so nested BLAS/OpenMP threads do not
oversubscribe the machine.
"""

from joblib import register_parallel_backend
from joblib._parallel_backends import ParallelBackendBase, PoolManagerMixin


class CaiclustBackend(PoolManagerMixin, ParallelBackendBase):
    """joblib batches as tasks of a ``caiclust.Pool``."""

    supports_retrieve_callback = True
    supports_timeout = True
    supports_inner_max_num_threads = False

    def __init__(self, nesting_level=None, inner_max_num_threads=None, **pool_options):
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self._pool_options = pool_options
        self._pool = None

    def effective_n_jobs(self, n_jobs):
        from .cluster import usable_cpus

        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            n_jobs = -1
        if n_jobs < 0:
            n_jobs = max(usable_cpus() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kwargs):
        from .multiprocessing import Pool

        n_jobs = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        self._pool = Pool(n_jobs, **self._pool_options)
        return n_jobs

    def terminate(self):
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
            # joblib starts a backend per Parallel call (scikit-learn makes
            # many): the next one's template is ready when it starts.
            from . import _prestart

            _prestart()


register_parallel_backend("caiclust", CaiclustBackend)
