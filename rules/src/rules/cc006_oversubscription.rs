//! CC006: workers × threads per worker > usable CPUs.

use caiclust_probe::{Api, Evidence, EvidenceSource};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{
    count_from, default_pool_threads, finding, library_evidence, planned_workers, pool_default,
    runtime_libraries,
};
use crate::threads::{pool_sizing, PACKAGE_POOLS};

const EXPLANATION: &str = r#"## What it detects
A runtime whose thread pool, in each worker, has so many threads that
workers × threads exceeds the usable CPUs. Workers are the planned count,
else CaImAn's default of usable CPUs − 1. Each pool's size is its thread
variable (`OMP_NUM_THREADS` for OpenMP and OpenMP builds of OpenBLAS,
`OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS`, `BLIS_NUM_THREADS`,
`VECLIB_MAXIMUM_THREADS`, `OPENCV_FOR_THREADS_NUM`: the table in
`rules/src/threads.rs`), else the CPUs in the affinity mask (BLIS: 1).
Packages with pools of their own count too: numba (`NUMBA_NUM_THREADS`),
numexpr (`NUMEXPR_NUM_THREADS`), TensorFlow's intra-op pool
(`TF_NUM_INTRAOP_THREADS`, which `OMP_NUM_THREADS` does not limit).

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
    depends_on_start_method: false,
};

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
            let Some(sizing) = pool_sizing(lib) else {
                continue;
            };
            let vars = sizing.sized_by;
            let (threads, env_ev) = count_from(cx.facts, vars, pool_default(cx.facts, sizing));
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
        out.extend(package_pools(cx, usable, workers, &workers_why));
        out
    }
}

/// The packages with pools of their own ([`PACKAGE_POOLS`]) that
/// oversubscribe, sized by their first variable.
fn package_pools(
    cx: &Context<'_>,
    usable: usize,
    workers: usize,
    workers_why: &str,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for pool in PACKAGE_POOLS.iter().filter(|p| !p.counted_as_library) {
        let Some(pkg) = cx.facts.packages.iter().find(|p| p.name == pool.package) else {
            continue;
        };
        let var = &pool.sized_by[..1];
        let (threads, env_ev) = count_from(cx.facts, var, default_pool_threads(cx.facts));
        if workers.saturating_mul(threads) <= usable {
            continue;
        }
        let mut ev = vec![Evidence::new(
            EvidenceSource::Static,
            format!("{} at {}", pool.package, pkg.path.display()),
        )];
        ev.extend(env_ev);
        ev.push(Evidence::new(
            EvidenceSource::System,
            format!("{usable} usable CPUs"),
        ));
        ev.push(Evidence::new(
            EvidenceSource::Environment,
            workers_why.to_string(),
        ));
        let per = (usable / workers.max(1)).max(1);
        out.push(finding(
            &INFO,
            format!(
                "{}'s own pool runs {threads} threads in each of {workers} workers: {} threads on {usable} usable CPUs ({} limits it)",
                pool.package,
                workers * threads,
                var[0]
            ),
            ev,
            format!("set {}={per} in each worker's environment", var[0]),
            pkg.path.display().to_string(),
        ));
    }
    out
}
