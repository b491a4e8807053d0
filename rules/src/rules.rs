//! The rules themselves, one module each, documented where defined; and
//! the small helpers they share (thread variables, worker counts, which
//! libraries really run a pool).

use std::path::Path;

use caiclust_probe::{Evidence, EvidenceSource, Facts, Library, ThreadingLayer, Vendor};

use crate::context::{runtime_env, Context};
use crate::finding::{Finding, RuleInfo};
use crate::registry::Rule;

mod cc001_gnu_openmp_fork;
mod cc002_numba_gnu_openmp_fork;
mod cc003_accelerate_fork;
mod cc004_macos_fork;
mod cc005_opencv_fork;
mod cc006_oversubscription;
mod cc007_cpus_exceed_allocation;
mod cc008_openblas_openmp_thread_variable;
mod cc009_thread_env_not_applied;
mod cc010_windows_worker_limit;
mod cc011_mixed_openmp_runtimes;
mod cc012_fork_with_running_threads;
mod cc013_implicit_forkserver;
mod cc014_caiman_macos_forkserver;
mod cc015_cuda_fork;
mod cc016_duplicate_runtimes;
mod cc017_framework_pool_fork;

/// Every rule, in id order.
pub(crate) static ALL: &[&dyn Rule] = &[
    &cc001_gnu_openmp_fork::GnuOpenmpFork,
    &cc002_numba_gnu_openmp_fork::NumbaGnuOpenmpFork,
    &cc003_accelerate_fork::AccelerateFork,
    &cc004_macos_fork::MacosFork,
    &cc005_opencv_fork::OpencvFork,
    &cc006_oversubscription::Oversubscription,
    &cc007_cpus_exceed_allocation::CpusExceedAllocation,
    &cc008_openblas_openmp_thread_variable::OpenblasOpenmpThreadVariable,
    &cc009_thread_env_not_applied::ThreadEnvNotApplied,
    &cc010_windows_worker_limit::WindowsWorkerLimit,
    &cc011_mixed_openmp_runtimes::MixedOpenmpRuntimes,
    &cc012_fork_with_running_threads::ForkWithRunningThreads,
    &cc013_implicit_forkserver::ImplicitForkserver,
    &cc014_caiman_macos_forkserver::CaimanMacosForkserver,
    &cc015_cuda_fork::CudaFork,
    &cc016_duplicate_runtimes::DuplicateRuntimes,
    &cc017_framework_pool_fork::FrameworkPoolFork,
    &crate::advisory::KnownRuntimeBug,
    &crate::script::PoolWithoutMainGuard,
    &crate::script::ThreadVariableAfterImport,
    &crate::script::ForkForced,
    &crate::script::SetupClusterSingleThreadPool,
    &crate::script::MainFunctionToSpawnedPool,
    &crate::script::EngineWaitWithoutDeadline,
    &crate::script::PoolAliveAtSetupCluster,
    &crate::script::SetupClusterCountsMachineCpus,
    &crate::script::ExplicitThreadsBeforeFork,
];

/// Windows' `WaitForMultipleObjects` limit leaves room for 60 workers.
pub(crate) const WINDOWS_MAX_WORKERS: usize = 60;

/// A finding of `info` at its category's default level.
pub(crate) fn finding(
    info: &RuleInfo,
    message: String,
    evidence: Vec<Evidence>,
    fix: impl Into<String>,
    location: impl Into<String>,
) -> Finding {
    Finding {
        rule_id: info.id.to_string(),
        rule_name: info.name.to_string(),
        level: info.category.default_level(),
        message,
        evidence,
        fix: Some(format!(
            "{} (see `caiclust explain {}`)",
            fix.into(),
            info.id
        )),
        location: Some(location.into()),
        env_fix: Vec::new(),
        presumed: false,
    }
}

/// A thread-count variable as a number: see
/// [`crate::threads::env_thread_count`].
pub(crate) fn env_count(facts: &Facts, name: &str) -> Option<usize> {
    crate::threads::env_thread_count(facts, name)
}

/// Evidence that a variable is set, or unset, where the runtimes read it
/// (for a live process: the environment it started with).
pub(crate) fn env_evidence(facts: &Facts, name: &str) -> Evidence {
    let value = runtime_env(facts).get(name);
    let detail = match (value, &facts.process) {
        (Some(v), None) => format!("{name}={v}"),
        (None, None) => format!("{name} is unset"),
        (Some(v), Some(p)) => format!(
            "{name}={v} in the environment process {} started with",
            p.pid
        ),
        (None, Some(p)) => format!(
            "{name} is unset in the environment process {} started with",
            p.pid
        ),
    };
    Evidence::new(EvidenceSource::Environment, detail)
}

/// Evidence naming a library and why it is that vendor.
pub(crate) fn library_evidence(lib: &Library) -> Vec<Evidence> {
    let mut ev = vec![Evidence::new(
        EvidenceSource::Static,
        format!("library {} ({})", lib.path.display(), lib.vendor.value),
    )];
    ev.extend(lib.vendor.evidence.iter().cloned());
    ev
}

/// Libraries that are a runtime of their own: not thin interface
/// libraries that forward to another one (Debian's `libblas.so.3`).
pub(crate) fn runtime_libraries(facts: &Facts) -> impl Iterator<Item = &Library> {
    facts.libraries.iter().filter(|l| l.forwards_to.is_none())
}

/// The threads a runtime's pool starts with when no variable limits it:
/// the CPUs in the affinity mask (what OpenBLAS and libgomp count), else
/// the logical CPUs.
pub(crate) fn default_pool_threads(facts: &Facts) -> usize {
    facts
        .host
        .affinity
        .as_ref()
        .map(Vec::len)
        .filter(|n| *n > 0)
        .unwrap_or(facts.host.logical_cpus)
        .max(1)
}

/// The tightest bound below the machine's logical CPUs on what this
/// process may use, and where it comes from: `SLURM_CPUS_PER_TASK` (else
/// `SLURM_CPUS_ON_NODE`), the cgroup file holding a CPU quota, or the
/// affinity mask. `None` when nothing limits the process below the
/// logical count.
pub(crate) fn cpu_limit(facts: &Facts) -> Option<(usize, String)> {
    let host = &facts.host;
    let cgroup = host.cgroup.as_ref().and_then(|c| {
        c.cpus
            .map(|n| (n.ceil() as usize, c.file.display().to_string()))
    });
    let slurm = host.slurm.as_ref().and_then(|s| {
        s.cpus_per_task
            .map(|n| (n, "SLURM_CPUS_PER_TASK".to_string()))
            .or_else(|| {
                s.cpus_on_node
                    .map(|n| (n, "SLURM_CPUS_ON_NODE".to_string()))
            })
    });
    let affinity = host
        .affinity
        .as_ref()
        .map(|a| (a.len(), "affinity mask".to_string()));
    [slurm, cgroup, affinity]
        .into_iter()
        .flatten()
        .filter(|(n, _)| *n < host.logical_cpus)
        .min_by_key(|(n, _)| *n)
}

/// The worker count: the plan's, else CaImAn's default of usable CPUs − 1
/// (at least 1).
pub(crate) fn planned_workers(cx: &Context<'_>) -> (usize, String) {
    match cx.plan.workers {
        Some(n) => (n, format!("{n} workers planned")),
        None => {
            let n = cx.usable_cpus().saturating_sub(1).max(1);
            (
                n,
                format!(
                    "{n} workers (default: usable CPUs {} − 1)",
                    cx.usable_cpus()
                ),
            )
        }
    }
}

/// Evidence for the start method in use.
pub(crate) fn start_method_evidence(cx: &Context<'_>) -> Evidence {
    let method = cx.start_method().unwrap_or("unknown");
    let why = cx.start_method_source();
    Evidence::new(
        EvidenceSource::Environment,
        format!("start method {method} ({why})"),
    )
}

/// The file name of a path.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Is this binary a Python extension module (as opposed to a shared
/// library)?
pub(crate) fn is_extension_module(path: &Path) -> bool {
    let name = file_name(path);
    name.contains(".cpython-")
        || name.contains(".abi3.")
        || name.contains(".pypy")
        || name.ends_with(".pyd")
}

/// A library whose pool runs on GNU OpenMP, with the threads it will use
/// and the evidence for that count.
pub(crate) struct GompPool<'a> {
    pub lib: &'a Library,
    pub threads: usize,
    pub evidence: Vec<Evidence>,
    /// The variables that size it, first set wins (see [`crate::threads`]).
    pub sized_by: &'static [&'static str],
}

const OMP_ONLY: &[&str] = &["OMP_NUM_THREADS"];

/// The threads a pool starts with when no variable sizes it.
pub(crate) fn pool_default(facts: &Facts, sizing: &crate::threads::PoolSizing) -> usize {
    match sizing.default {
        crate::threads::DefaultThreads::AllCpus => default_pool_threads(facts),
        crate::threads::DefaultThreads::One => 1,
    }
}

/// Every pool that runs on GNU libgomp: OpenMP builds of OpenBLAS/BLIS,
/// MKL's GNU layer, and extension modules that use libgomp directly
/// (scikit-learn). numba's `omppool` is left to its own rule.
pub(crate) fn gnu_openmp_pools(facts: &Facts) -> Vec<GompPool<'_>> {
    let has_gomp = runtime_libraries(facts).any(|l| l.vendor.value == Vendor::GnuOpenmp);
    let mkl_layer_gnu = runtime_env(facts)
        .get("MKL_THREADING_LAYER")
        .is_some_and(|v| v.eq_ignore_ascii_case("gnu"));
    // MKL's GNU layer loads the system libgomp when it is chosen, whether
    // the environment holds a libgomp or not (PyPI's mkl ships none).
    if !has_gomp && !mkl_layer_gnu {
        return Vec::new();
    }
    let default = default_pool_threads(facts);
    let mut pools = Vec::new();
    for lib in runtime_libraries(facts) {
        let on_gomp = lib
            .openmp_runtime
            .as_ref()
            .is_some_and(|r| r.value == Vendor::GnuOpenmp);
        let layer = lib.threading_layer.as_ref().map(|t| t.value);
        let sizing = crate::threads::pool_sizing(lib);
        let (threads, evidence) = match lib.vendor.value {
            Vendor::Openblas | Vendor::Blis if on_gomp => {
                let Some(sizing) = sizing else { continue };
                count_from(facts, sizing.sized_by, pool_default(facts, sizing))
            }
            Vendor::Mkl
                if on_gomp
                    || layer == Some(ThreadingLayer::Gnu) && mkl_layer_gnu
                    || layer == Some(ThreadingLayer::RuntimeSelected) && mkl_layer_gnu =>
            {
                let Some(sizing) = sizing else { continue };
                let (n, mut ev) = count_from(facts, sizing.sized_by, default);
                ev.push(env_evidence(facts, "MKL_THREADING_LAYER"));
                (n, ev)
            }
            Vendor::GnuOpenmp => {
                let direct: Vec<&Path> = lib
                    .needed_by
                    .iter()
                    .map(|p| p.as_path())
                    .filter(|p| is_extension_module(p) && !is_numba_omppool(p))
                    .collect();
                // Found in a package with no recorded user: assume the
                // package uses it.
                let unknown_user = lib.needed_by.is_empty() && !lib.pulled_in_by.is_empty();
                // In a live process, mapped means loaded by something that
                // runs there (an extension module, or a library it loaded
                // with ctypes): no static user is needed.
                let mapped_live = facts.process.is_some();
                // A library a package loads itself (ctypes, dlopen: LightGBM's
                // lib_lightgbm.so) that needs it.
                let package_library = lib
                    .load_roots
                    .iter()
                    .any(|r| r.kind == caiclust_probe::RootKind::PackageLibrary);
                if direct.is_empty() && !unknown_user && !mapped_live && !package_library {
                    continue;
                }
                let (n, mut ev) = count_from(facts, OMP_ONLY, default);
                if direct.is_empty() && mapped_live {
                    ev.push(Evidence::new(
                        EvidenceSource::System,
                        format!("mapped into the running process ({})", lib.path.display()),
                    ));
                }
                if let Some(first) = direct.first() {
                    ev.push(Evidence::new(
                        EvidenceSource::Static,
                        format!(
                            "NEEDED by the extension module {} ({} in all)",
                            first.display(),
                            direct.len()
                        ),
                    ));
                }
                (n, ev)
            }
            _ => continue,
        };
        let threads = lib
            .runtime
            .as_ref()
            .and_then(|r| r.num_threads)
            .unwrap_or(threads);
        pools.push(GompPool {
            lib,
            threads,
            evidence,
            sized_by: sizing.map_or(OMP_ONLY, |s| s.sized_by),
        });
    }
    pools
}

/// numba's OpenMP pool module.
pub(crate) fn is_numba_omppool(path: &Path) -> bool {
    let s = path.to_string_lossy().replace('\\', "/");
    s.contains("numba/np/ufunc/omppool")
}

/// The first variable of `names` that is set decides the thread count,
/// else `default`.
pub(crate) fn count_from(facts: &Facts, names: &[&str], default: usize) -> (usize, Vec<Evidence>) {
    for name in names {
        if let Some(n) = env_count(facts, name) {
            return (n, vec![env_evidence(facts, name)]);
        }
    }
    let mut ev: Vec<Evidence> = names.iter().map(|n| env_evidence(facts, n)).collect();
    ev.push(Evidence::new(
        EvidenceSource::System,
        format!("so the pool defaults to {default} thread(s)"),
    ));
    (default, ev)
}
