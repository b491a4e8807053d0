//! Which environment variables size which runtime's thread pool: one
//! table, read by the recommendation, the oversubscription and
//! thread-variable rules, and the fork hazards' environment fixes.
//!
//! A runtime is a vendor with a threading layer: the OpenMP build of
//! OpenBLAS reads only `OMP_NUM_THREADS` and ignores
//! `OPENBLAS_NUM_THREADS`, its pthreads build reads
//! `OPENBLAS_NUM_THREADS` first; BLIS is single-threaded unless a
//! variable says otherwise. Sources: OpenBLAS `driver/others/memory.c`,
//! MKL's and BLIS's documentation, threadpoolctl, joblib's
//! `_prepare_worker_env`, HAZARDS H05 and H08.

use caiclust_probe::{Facts, Library, ThreadingLayer, Vendor};

use crate::context::runtime_env;

/// How many threads a pool starts when no variable sizes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultThreads {
    /// One per CPU in the affinity mask (OpenBLAS, libgomp, MKL, OpenCV).
    AllCpus,
    /// One (BLIS).
    One,
}

/// How one runtime's pool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSizing {
    /// The runtime, for messages: `OpenBLAS (OpenMP build)`.
    pub runtime: &'static str,
    /// The variables that size the pool; the first one set wins.
    pub sized_by: &'static [&'static str],
    /// Variables users expect to work that this build ignores.
    pub ignores: &'static [&'static str],
    pub default: DefaultThreads,
}

impl PoolSizing {
    /// The variable to set to limit the pool: the first that it reads.
    pub fn limit_variable(&self) -> &'static str {
        self.sized_by[0]
    }

    /// The variable that sizes the pool in `facts`' environment (the first
    /// of [`PoolSizing::sized_by`] set to a positive count) and its count.
    pub fn configured(&self, facts: &Facts) -> Option<(&'static str, usize)> {
        self.sized_by
            .iter()
            .find_map(|v| env_thread_count(facts, v).map(|n| (*v, n)))
    }
}

/// How a library runs its pool, as far as the table cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Threading {
    Openmp,
    /// Its own threads (pthreads, GCD, Concurrency, TBB) or not known.
    Own,
}

/// One row: a vendor on a threading kind (`None`: any).
struct Row {
    vendor: Vendor,
    threading: Option<Threading>,
    sizing: PoolSizing,
}

const OMP: &[&str] = &["OMP_NUM_THREADS"];

/// The table, most specific rows first.
static TABLE: &[Row] = &[
    Row {
        vendor: Vendor::Openblas,
        threading: Some(Threading::Openmp),
        sizing: PoolSizing {
            runtime: "OpenBLAS (OpenMP build)",
            sized_by: OMP,
            ignores: &["OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS"],
            default: DefaultThreads::AllCpus,
        },
    },
    Row {
        vendor: Vendor::Openblas,
        threading: None,
        sizing: PoolSizing {
            runtime: "OpenBLAS",
            sized_by: &[
                "OPENBLAS_NUM_THREADS",
                "GOTO_NUM_THREADS",
                "OMP_NUM_THREADS",
            ],
            ignores: &[],
            default: DefaultThreads::AllCpus,
        },
    },
    Row {
        vendor: Vendor::Mkl,
        threading: None,
        sizing: PoolSizing {
            runtime: "Intel MKL",
            sized_by: &["MKL_NUM_THREADS", "OMP_NUM_THREADS"],
            ignores: &[],
            default: DefaultThreads::AllCpus,
        },
    },
    Row {
        vendor: Vendor::Blis,
        threading: None,
        sizing: PoolSizing {
            runtime: "BLIS",
            sized_by: &["BLIS_NUM_THREADS", "OMP_NUM_THREADS"],
            ignores: &[],
            default: DefaultThreads::One,
        },
    },
    Row {
        vendor: Vendor::Accelerate,
        threading: None,
        sizing: PoolSizing {
            runtime: "Accelerate/vecLib",
            sized_by: &["VECLIB_MAXIMUM_THREADS"],
            ignores: &[],
            default: DefaultThreads::AllCpus,
        },
    },
    Row {
        vendor: Vendor::Opencv,
        threading: None,
        sizing: PoolSizing {
            runtime: "OpenCV",
            sized_by: &["OPENCV_FOR_THREADS_NUM"],
            ignores: &[],
            default: DefaultThreads::AllCpus,
        },
    },
    Row {
        vendor: Vendor::GnuOpenmp,
        threading: None,
        sizing: PoolSizing {
            runtime: "GNU OpenMP",
            sized_by: OMP,
            ignores: &[],
            default: DefaultThreads::AllCpus,
        },
    },
    Row {
        vendor: Vendor::LlvmOpenmp,
        threading: None,
        sizing: PoolSizing {
            runtime: "LLVM OpenMP",
            sized_by: OMP,
            ignores: &[],
            default: DefaultThreads::AllCpus,
        },
    },
    Row {
        vendor: Vendor::IntelOpenmp,
        threading: None,
        sizing: PoolSizing {
            runtime: "Intel OpenMP",
            sized_by: OMP,
            ignores: &[],
            default: DefaultThreads::AllCpus,
        },
    },
    Row {
        vendor: Vendor::MsvcOpenmp,
        threading: None,
        sizing: PoolSizing {
            runtime: "MSVC OpenMP",
            sized_by: OMP,
            ignores: &[],
            default: DefaultThreads::AllCpus,
        },
    },
];

/// A Python package that runs a pool of its own, and what sizes it.
pub struct PackagePool {
    pub package: &'static str,
    /// Variables to set to limit it, each to the thread count; the first
    /// sizes the pool that does the work.
    pub sized_by: &'static [&'static str],
    /// Its pool is a runtime library the probe lists itself (OpenCV's
    /// `cv2`): counted there, not again as a package.
    pub counted_as_library: bool,
}

/// Packages with pools of their own (beside the libraries they load).
pub static PACKAGE_POOLS: &[PackagePool] = &[
    PackagePool {
        package: "numexpr",
        sized_by: &["NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS"],
        counted_as_library: false,
    },
    PackagePool {
        package: "numba",
        sized_by: &["NUMBA_NUM_THREADS"],
        counted_as_library: false,
    },
    PackagePool {
        package: "cv2",
        sized_by: &["OPENCV_FOR_THREADS_NUM"],
        counted_as_library: true,
    },
    // TensorFlow's intra-op (Eigen) and inter-op pools; neither reads
    // OMP_NUM_THREADS (TensorFlow `process_util.cc`).
    PackagePool {
        package: "tensorflow",
        sized_by: &["TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"],
        counted_as_library: false,
    },
];

/// How `lib`'s pool is sized; `None` for a library without a pool of its
/// own (single-threaded or sequential builds, interface libraries, TBB,
/// which no variable sizes, and libraries that are not runtimes).
pub fn pool_sizing(lib: &Library) -> Option<&'static PoolSizing> {
    let layer = lib.threading_layer.as_ref().map(|t| t.value);
    if matches!(
        layer,
        Some(ThreadingLayer::Disabled | ThreadingLayer::Sequential)
    ) {
        return None;
    }
    let threading = if lib.openmp_runtime.is_some()
        || matches!(
            layer,
            Some(ThreadingLayer::Openmp | ThreadingLayer::Gnu | ThreadingLayer::Intel)
        ) {
        Threading::Openmp
    } else {
        Threading::Own
    };
    TABLE
        .iter()
        .find(|r| r.vendor == lib.vendor.value && r.threading.is_none_or(|t| t == threading))
        .map(|r| &r.sizing)
}

/// A thread-count variable as a number: the first entry of a list such as
/// `OMP_NUM_THREADS=4,2`; `None` when unset or not a positive number.
pub fn env_thread_count(facts: &Facts, name: &str) -> Option<usize> {
    let v = runtime_env(facts).get(name)?;
    v.split(',')
        .next()?
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use caiclust_probe::{Conclusion, Confidence, Evidence, EvidenceSource};

    fn c<T>(v: T) -> Conclusion<T> {
        Conclusion::new(
            v,
            Confidence::High,
            vec![Evidence::new(EvidenceSource::Static, "test")],
        )
    }

    fn lib(vendor: Vendor, layer: Option<ThreadingLayer>, omp: Option<Vendor>) -> Library {
        let mut l: Library = serde_json::from_value(serde_json::json!({
            "path": "/x/lib.so", "requested_as": [], "soname": null, "format": null,
            "architectures": [], "apis": [], "vendor": {"value": "unknown", "confidence": "high", "evidence": []},
            "version": null, "threading_layer": null, "openmp_runtime": null,
            "int_width": null, "symbol_prefix": null, "symbol_suffix": null,
            "parallel_framework": null, "forwards_to": null, "pulled_in_by": [],
            "needed_by": [], "dependencies": [], "reached_via": []
        }))
        .expect("a library document");
        l.vendor = c(vendor);
        l.threading_layer = layer.map(c);
        l.openmp_runtime = omp.map(c);
        l
    }

    #[test]
    fn openmp_openblas_reads_only_omp_num_threads() {
        let s = pool_sizing(&lib(
            Vendor::Openblas,
            Some(ThreadingLayer::Openmp),
            Some(Vendor::GnuOpenmp),
        ))
        .unwrap();
        assert_eq!(s.sized_by, ["OMP_NUM_THREADS"]);
        assert!(s.ignores.contains(&"OPENBLAS_NUM_THREADS"));
        let p = pool_sizing(&lib(Vendor::Openblas, Some(ThreadingLayer::Pthreads), None)).unwrap();
        assert_eq!(p.limit_variable(), "OPENBLAS_NUM_THREADS");
    }

    #[test]
    fn single_threaded_builds_have_no_pool() {
        assert!(
            pool_sizing(&lib(Vendor::Openblas, Some(ThreadingLayer::Disabled), None)).is_none()
        );
        assert!(pool_sizing(&lib(Vendor::Mkl, Some(ThreadingLayer::Sequential), None)).is_none());
        assert!(pool_sizing(&lib(Vendor::Tbb, None, None)).is_none());
    }

    #[test]
    fn blis_defaults_to_one_thread() {
        let s = pool_sizing(&lib(Vendor::Blis, Some(ThreadingLayer::Openmp), None)).unwrap();
        assert_eq!(s.default, DefaultThreads::One);
        assert_eq!(s.limit_variable(), "BLIS_NUM_THREADS");
    }
}
