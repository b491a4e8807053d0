//! CC006: workers × threads per worker > usable CPUs.

use caiclust_probe::{Api, Evidence, EvidenceSource, Facts, Library, ThreadingLayer, Vendor};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{
    count_from, default_pool_threads, finding, library_evidence, planned_workers, runtime_libraries,
};

const EXPLANATION: &str = r#"## What it detects
A runtime whose thread pool, in each worker, has so many threads that
workers × threads exceeds the usable CPUs. Workers are the planned count,
else CaImAn's default of usable CPUs − 1. Each pool's size is its thread
variable (`OMP_NUM_THREADS` for OpenMP and OpenMP builds of OpenBLAS,
`OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS`, `BLIS_NUM_THREADS`,
`VECLIB_MAXIMUM_THREADS`, `OPENCV_FOR_THREADS_NUM`), else the CPUs in the
affinity mask (BLIS: 1).

## Why it is bad
Every BLAS/OpenMP/OpenCV pool defaults to all CPUs, in every worker: with 8
workers on 8 CPUs that is 64 busy threads. The run slows down, nodes
overload, and spinning OpenMP/OpenBLAS barriers look like stalls.

## Example
`Pool(7)` on 8 CPUs with PyPI numpy and no `OPENBLAS_NUM_THREADS`.

## Fix
In each worker's environment set the thread variables to
max(1, usable CPUs ÷ workers) (`caiclust recommend` lists them).

## References
CaImAn #361, #857, #1475; joblib `_prepare_worker_env`; HAZARDS H05."#;

/// Too many threads for the CPUs.
pub struct Oversubscription;

static INFO: RuleInfo = RuleInfo {
    id: "CC006",
    name: "oversubscription",
    category: Category::Oversubscription,
    summary: "workers × threads per worker exceeds the usable CPUs",
    explanation: EXPLANATION,
    hazards: &["H05"],
};

/// The variables that size `lib`'s pool, most specific first, and its
/// default when none is set.
pub(crate) fn pool_variables(
    facts: &Facts,
    lib: &Library,
) -> Option<(&'static [&'static str], usize)> {
    let all = default_pool_threads(facts);
    let layer = lib.threading_layer.as_ref().map(|t| t.value);
    let openmp = lib.openmp_runtime.is_some() || layer == Some(ThreadingLayer::Openmp);
    if layer == Some(ThreadingLayer::Disabled) || layer == Some(ThreadingLayer::Sequential) {
        return None;
    }
    Some(match lib.vendor.value {
        Vendor::Openblas if openmp => (&["OMP_NUM_THREADS"], all),
        Vendor::Openblas => (
            &[
                "OPENBLAS_NUM_THREADS",
                "GOTO_NUM_THREADS",
                "OMP_NUM_THREADS",
            ],
            all,
        ),
        Vendor::Mkl => (&["MKL_NUM_THREADS", "OMP_NUM_THREADS"], all),
        Vendor::Blis => (&["BLIS_NUM_THREADS", "OMP_NUM_THREADS"], 1),
        Vendor::Accelerate => (&["VECLIB_MAXIMUM_THREADS"], all),
        Vendor::Opencv => (&["OPENCV_FOR_THREADS_NUM"], all),
        v if v.is_openmp() => (&["OMP_NUM_THREADS"], all),
        _ => return None,
    })
}

impl Rule for Oversubscription {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let usable = cx.usable_cpus();
        let (workers, workers_why) = planned_workers(cx);
        let mut out = Vec::new();
        for lib in runtime_libraries(cx.facts) {
            if !lib
                .apis
                .iter()
                .any(|a| matches!(a, Api::Blas | Api::Openmp | Api::Opencv))
            {
                continue;
            }
            let Some((vars, default)) = pool_variables(cx.facts, lib) else {
                continue;
            };
            let (threads, env_ev) = count_from(cx.facts, vars, default);
            if workers.saturating_mul(threads) <= usable {
                continue;
            }
            let mut ev = library_evidence(lib);
            ev.extend(env_ev);
            ev.push(Evidence::new(
                EvidenceSource::System,
                format!("{usable} usable CPUs"),
            ));
            ev.push(Evidence::new(
                EvidenceSource::Environment,
                workers_why.clone(),
            ));
            let per = (usable / workers.max(1)).max(1);
            out.push(finding(
                &INFO,
                format!(
                    "{} runs {threads} threads in each of {workers} workers: {} threads on {usable} usable CPUs ({} limits it)",
                    lib.path.display(),
                    workers * threads,
                    vars[0]
                ),
                ev,
                format!("set {}={per} in each worker's environment", vars[0]),
                lib.path.display().to_string(),
            ));
        }
        out
    }
}
