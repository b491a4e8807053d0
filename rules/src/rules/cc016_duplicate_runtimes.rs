//! CC016: several copies of one runtime.

use caiclust_probe::{DuplicateRuntime, Evidence, EvidenceSource};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{env_evidence, finding};
use crate::threads::pool_sizing;

const EXPLANATION: &str = r#"## What it detects
One runtime present in copies that make several thread pools in one
process (numpy's, scipy's and OpenCV's own OpenBLAS; the system libgomp
and a wheel's hash-renamed libgomp), while the thread variable that
limits every copy is unset.

Copies the loader knows by one name are alternatives, not pools of their
own: wheels that vendor the same hash-renamed libgomp (one SONAME) get
the copy mapped first, which serves them all. Builds without threading
(a serial OpenBLAS) have no pool and are not counted.

## Why it is bad
Each pool has its own threads: oversubscription multiplies, and a
runtime call (threadpoolctl, `cv2.setNumThreads`) limits only one of them.

## Example
PyPI numpy + scipy + opencv-python-headless load three OpenBLAS (0.3.31,
0.3.30, 0.3.15).

## Fix
Set the thread variables before the interpreter starts: they reach every
copy.

## References
HAZARDS H20 (verified)."#;

/// Several copies of one runtime.
pub struct DuplicateRuntimes;

static INFO: RuleInfo = RuleInfo {
    id: "CC016",
    name: "duplicate-runtimes",
    category: Category::Note,
    summary: "one runtime is present in copies that make several thread pools",
    explanation: EXPLANATION,
    hazards: &["H20"],
    depends_on_start_method: false,
};

/// The variables that limit every copy: each copy's own (an OpenMP
/// build of OpenBLAS reads `OMP_NUM_THREADS`, a pthreads one
/// `OPENBLAS_NUM_THREADS`), from the table in [`crate::threads`].
fn limiting_variables(cx: &Context<'_>, paths: &[std::path::PathBuf]) -> Vec<&'static str> {
    let mut vars: Vec<&'static str> = Vec::new();
    for lib in cx
        .facts
        .libraries
        .iter()
        .filter(|l| paths.contains(&l.path))
    {
        if let Some(s) = pool_sizing(lib) {
            if !vars.contains(&s.limit_variable()) {
                vars.push(s.limit_variable());
            }
        }
    }
    vars
}

impl Rule for DuplicateRuntimes {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        for dup in &cx.facts.duplicates {
            // Alternatives of one name make one pool.
            if dup.pool_count() < 2 {
                continue;
            }
            let vars = limiting_variables(cx, &dup.paths);
            // No pool in any copy (single-threaded builds), or every copy
            // limited already.
            if vars.is_empty() || vars.iter().all(|v| cx.env(v).is_some()) {
                continue;
            }
            let mut ev: Vec<Evidence> = dup
                .paths
                .iter()
                .map(|p| Evidence::new(EvidenceSource::Static, format!("copy {}", p.display())))
                .collect();
            ev.extend(dup.alternatives().map(|g| {
                Evidence::new(
                    EvidenceSource::Static,
                    format!(
                        "{} share the name {}: one of them is mapped, and serves the others",
                        join_paths(&g.paths, " and "),
                        g.name.as_deref().unwrap_or("?")
                    ),
                )
            }));
            for v in &vars {
                ev.push(env_evidence(cx.facts, v));
            }
            let names: Vec<String> = dup.paths.iter().map(|p| p.display().to_string()).collect();
            out.push(finding(
                &INFO,
                message(dup),
                ev,
                format!(
                    "set {} before the interpreter starts: {} every copy",
                    vars.join(" and "),
                    if vars.len() == 1 {
                        "it limits"
                    } else {
                        "they limit"
                    }
                ),
                names.first().cloned().unwrap_or_default(),
            ));
        }
        out
    }
}

fn join_paths(paths: &[std::path::PathBuf], sep: &str) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

/// "3 copies of GNU OpenMP make 2 thread pools: A; B or C (alternatives
/// known as N: ...)", or "each with its own pool" when no copies are
/// alternatives.
fn message(dup: &DuplicateRuntime) -> String {
    if dup.alternatives().next().is_none() {
        return format!(
            "{} copies of {}, each with its own pool: {}",
            dup.paths.len(),
            dup.vendor,
            join_paths(&dup.paths, ", ")
        );
    }
    let pools: Vec<String> = dup
        .groups
        .iter()
        .map(|g| {
            if g.paths.len() > 1 {
                format!(
                    "{} (alternatives known as {}: the first one mapped serves the others)",
                    join_paths(&g.paths, " or "),
                    g.name.as_deref().unwrap_or("one name")
                )
            } else {
                join_paths(&g.paths, "")
            }
        })
        .collect();
    format!(
        "{} copies of {} make {} thread pools in one process: {}",
        dup.paths.len(),
        dup.vendor,
        dup.pool_count(),
        pools.join("; ")
    )
}
