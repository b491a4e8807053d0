//! The environment variables that matter for threading, declared once.
//!
//! Thread pools size themselves from these when a runtime initialises, so
//! the probe records them as the probed process would see them.

use std::collections::BTreeMap;

/// Variables recorded by exact name, each with what reads it.
pub const RELEVANT_ENV_VARS: &[(&str, &str)] = &[
    (
        "OMP_NUM_THREADS",
        "every OpenMP runtime; OpenMP builds of OpenBLAS and BLIS",
    ),
    ("OMP_WAIT_POLICY", "OpenMP: spin or sleep while idle"),
    ("OMP_PROC_BIND", "OpenMP thread binding"),
    ("OMP_PLACES", "OpenMP thread placement"),
    ("OMP_DYNAMIC", "OpenMP dynamic adjustment of thread counts"),
    ("OMP_MAX_ACTIVE_LEVELS", "OpenMP nested parallelism"),
    ("OMP_THREAD_LIMIT", "OpenMP upper bound on threads"),
    ("GOMP_SPINCOUNT", "GNU OpenMP busy-wait length"),
    (
        "OPENBLAS_NUM_THREADS",
        "OpenBLAS pthreads builds (ignored by its OpenMP builds)",
    ),
    ("OPENBLAS_MAIN_FREE", "OpenBLAS: disable thread affinity"),
    ("OPENBLAS_CORETYPE", "OpenBLAS: force a kernel"),
    ("OPENBLAS_L2_SIZE", "OpenBLAS: L2 cache size"),
    ("OPENBLAS_VERBOSE", "OpenBLAS: print the kernel chosen"),
    ("GOTO_NUM_THREADS", "OpenBLAS (legacy GotoBLAS name)"),
    ("MKL_NUM_THREADS", "Intel MKL thread count"),
    (
        "TF_NUM_INTRAOP_THREADS",
        "TensorFlow's intra-op pool (not OpenMP; ignores OMP_NUM_THREADS)",
    ),
    ("TF_NUM_INTEROP_THREADS", "TensorFlow's inter-op pool"),
    (
        "MKL_THREADING_LAYER",
        "MKL's mkl_rt: INTEL, GNU, TBB or SEQUENTIAL",
    ),
    ("MKL_INTERFACE_LAYER", "MKL's mkl_rt: LP64, ILP64 or GNU"),
    ("MKL_DYNAMIC", "MKL dynamic thread adjustment"),
    (
        "MKL_SERVICE_FORCE_INTEL",
        "mkl-service: force the Intel layer",
    ),
    ("BLIS_NUM_THREADS", "BLIS thread count"),
    (
        "VECLIB_MAXIMUM_THREADS",
        "Apple Accelerate/vecLib thread count",
    ),
    ("NUMEXPR_NUM_THREADS", "numexpr thread count"),
    ("NUMEXPR_MAX_THREADS", "numexpr thread pool size"),
    ("NUMBA_NUM_THREADS", "numba parallel thread count"),
    (
        "NUMBA_THREADING_LAYER",
        "numba layer: omp, tbb, workqueue, forksafe, threadsafe, safe",
    ),
    ("NUMBA_DISABLE_JIT", "numba: JIT off"),
    ("OPENCV_FOR_THREADS_NUM", "OpenCV parallel_for thread count"),
    ("OPENCV_PARALLEL_BACKEND", "OpenCV parallel backend plugin"),
    (
        "OPENCV_PARALLEL_PRIORITY_LIST",
        "OpenCV parallel backend order",
    ),
    ("TBB_NUM_THREADS", "TBB (some builds)"),
    ("FLEXIBLAS", "FlexiBLAS backend"),
    ("FLEXIBLAS_NUM_THREADS", "FlexiBLAS thread count"),
    ("LOKY_MAX_CPU_COUNT", "joblib/loky CPU count"),
    ("JOBLIB_START_METHOD", "joblib start method"),
    (
        "OBJC_DISABLE_INITIALIZE_FORK_SAFETY",
        "macOS Objective-C fork safety",
    ),
    ("CUDA_VISIBLE_DEVICES", "CUDA device selection"),
    ("LD_LIBRARY_PATH", "Linux loader search path"),
    ("LD_PRELOAD", "Linux loader preloads"),
    ("DYLD_LIBRARY_PATH", "macOS loader search path"),
    ("DYLD_FALLBACK_LIBRARY_PATH", "macOS loader fallback path"),
    ("DYLD_INSERT_LIBRARIES", "macOS loader preloads"),
    ("PATH", "Windows DLL search path; interpreter discovery"),
    ("PYTHONPATH", "extra import folders"),
    ("PYTHONHOME", "Python prefix override"),
    ("VIRTUAL_ENV", "the active virtual environment"),
    ("CONDA_PREFIX", "the active conda environment"),
    ("CONDA_DEFAULT_ENV", "the active conda environment's name"),
    ("CAIMAN_DATA", "CaImAn data folder"),
    ("PYTHONFAULTHANDLER", "Python fault handler"),
];

/// Variables recorded by prefix (every `KMP_*`, `SLURM_*`, ...).
pub const RELEVANT_ENV_PREFIXES: &[(&str, &str)] = &[
    (
        "KMP_",
        "Intel/LLVM OpenMP (KMP_DUPLICATE_LIB_OK, KMP_BLOCKTIME, KMP_INIT_AT_FORK, ...)",
    ),
    ("OPENCV_", "OpenCV runtime settings"),
    ("NUMBA_", "numba settings"),
    ("SLURM_", "Slurm allocation"),
    ("PBS_", "PBS/Torque allocation"),
    ("OMP_", "OpenMP settings"),
    ("MKL_", "MKL settings"),
];

/// Is this variable one that [`relevant_env`] keeps?
pub fn is_relevant(name: &str) -> bool {
    RELEVANT_ENV_VARS.iter().any(|(n, _)| *n == name)
        || RELEVANT_ENV_PREFIXES
            .iter()
            .any(|(p, _)| name.starts_with(p))
}

/// Keep the variables that matter, sorted by name.
pub fn relevant_env<I, K, V>(vars: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    vars.into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .filter(|(k, _)| is_relevant(k))
        .collect()
}

/// The current process's environment, lossily decoded, in full.
pub(crate) fn current_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_thread_variables_and_prefixes_drops_others() {
        let env = relevant_env([
            ("OMP_NUM_THREADS", "1"),
            ("KMP_DUPLICATE_LIB_OK", "TRUE"),
            ("SLURM_CPUS_PER_TASK", "4"),
            ("HOME", "/root"),
            ("TERM", "xterm"),
        ]);
        assert_eq!(
            env.keys().collect::<Vec<_>>(),
            [
                "KMP_DUPLICATE_LIB_OK",
                "OMP_NUM_THREADS",
                "SLURM_CPUS_PER_TASK"
            ]
        );
    }

    #[test]
    fn every_declared_variable_is_relevant() {
        for (name, doc) in RELEVANT_ENV_VARS {
            assert!(is_relevant(name));
            assert!(!doc.is_empty());
        }
    }
}
