//! CC002: numba's OpenMP layer on GNU OpenMP with fork.

use std::collections::BTreeSet;

use caiclust_probe::{Evidence, EvidenceSource};

use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::recommend::EnvSetting;
use crate::registry::Rule;
use crate::rules::{env_evidence, finding, start_method_evidence};
use crate::uses::{use_by, why_unknown, with_dependents, Use};

const EXPLANATION: &str = r#"## What it detects
numba is installed with its OpenMP threading layer (`omppool`, built on GNU
libgomp), numba will choose that layer (no TBB layer available, or
`NUMBA_THREADING_LAYER=omp`), and workers are started with `fork`.

The level follows the evidence of use, as CC001's: with scripts, an error
where the parent runs numba-compiled code (a call of an `@njit`/`@jit`
function, or of a package that requires numba) before its workers are
forked and the workers run it again; a warning where the scripts only
import numba; nothing where no script reaches it. Without scripts, an
error for a live process whose layer is running, else a warning the
hazard policy presumes (`presumed` in the JSON): `caiclust run`,
`caiclust map` and `Cluster` avoid fork all the same.

## Why it is bad
numba refuses to run parallel code in a child forked from a process that
already used GNU OpenMP: it terminates the child ("fork() called from a
process already using GNU OpenMP, this is unsafe"). `multiprocessing.Pool`
then waits forever for the dead worker's result.

## Example
`@njit(parallel=True)` function called in the parent, then again in the
workers of a fork `Pool`.

## Fix
Use the spawn or forkserver start method; or `NUMBA_THREADING_LAYER=workqueue`
(or `tbb` when installed). `NUMBA_NUM_THREADS=1` is **not** a fix: numba's
OpenMP layer still terminates every forked worker (measured here with PyPI
numba; `cli/tests/run_workloads/numba_prange_pool.py`).

## References
numba docs, "Selecting a threading layer for safe parallel execution";
HAZARDS H01 ("What survives fork")."#;

/// numba's GNU OpenMP layer with fork: numba kills forked workers.
pub struct NumbaGnuOpenmpFork;

static INFO: RuleInfo = RuleInfo {
    id: "CC002",
    name: "numba-gnu-openmp-fork",
    category: Category::HangOrCrash,
    summary: "numba's OpenMP layer runs on GNU libgomp and workers are forked: numba kills them",
    explanation: EXPLANATION,
    hazards: &["H01"],
    depends_on_start_method: true,
};

impl Rule for NumbaGnuOpenmpFork {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        // NUMBA_NUM_THREADS=1 does not help: the layer still kills forked
        // workers (measured; see the explanation).
        if !cx.forks() {
            return Vec::new();
        }
        let chosen = cx.env("NUMBA_THREADING_LAYER").map(str::to_ascii_lowercase);
        let live = cx
            .facts
            .process
            .as_ref()
            .and_then(|p| p.python_runtime.as_ref())
            .and_then(|r| r.numba_threading_layer.clone());
        let mut out = Vec::new();
        for pkg in cx.facts.packages.iter().filter(|p| p.name == "numba") {
            let layers: Vec<&str> = pkg
                .threading_layers
                .iter()
                .map(|c| c.value.as_str())
                .collect();
            let gnu_omp = pkg.threading_layers.iter().find(|c| {
                c.value.starts_with("omp") && c.value.to_ascii_lowercase().contains("gnu")
            });
            let Some(gnu_omp) = gnu_omp else { continue };
            let has_tbb = layers.iter().any(|l| l.starts_with("tbb"));
            // numba's default order is tbb, omp, workqueue.
            let picks_omp = match (&live, chosen.as_deref()) {
                (Some(l), _) => l == "omp",
                (None, Some("omp")) => true,
                (None, Some("default") | None) => !has_tbb,
                (None, Some(_)) => false,
            };
            if !picks_omp {
                continue;
            }
            let mut ev = vec![Evidence::new(
                EvidenceSource::Static,
                format!(
                    "numba at {} has threading layers: {}",
                    pkg.path.display(),
                    layers.join(", ")
                ),
            )];
            ev.extend(gnu_omp.evidence.iter().cloned());
            ev.push(env_evidence(cx.facts, "NUMBA_THREADING_LAYER"));
            if let Some(l) = &live {
                ev.push(Evidence::new(
                    EvidenceSource::Runtime,
                    format!("numba.threading_layer() = {l}"),
                ));
            }
            ev.push(start_method_evidence(cx));
            let mut f = finding(
                &INFO,
                format!(
                    "numba ({}) will run parallel code on its GNU OpenMP layer and workers are forked: numba terminates each forked worker and the pool waits forever",
                    pkg.path.display()
                ),
                ev,
                "use the spawn or forkserver start method, or set NUMBA_THREADING_LAYER=workqueue before the interpreter starts",
                pkg.path.display().to_string(),
            );
            judge_by_use(cx, &mut f);
            if f.level == Level::Allow {
                continue;
            }
            f.env_fix = vec![EnvSetting {
                name: "NUMBA_THREADING_LAYER".into(),
                value: "workqueue".into(),
                reason: "numba's workqueue layer survives fork; its GNU OpenMP layer kills forked workers".into(),
                answers: vec![INFO.id.to_string()],
            }];
            out.push(f);
        }
        out
    }
}

/// The level by what the scripts run, as CC001's: an error where the
/// parent runs numba-compiled code (or a package that requires numba)
/// before the fork and the workers run it again (numba's GNU OpenMP layer
/// is launched in the parent, then refuses the child); a warning where the
/// scripts only import it; `allow` (dropped) where no script reaches it.
/// Without scripts a warning the policy presumes; a live process whose
/// layer is running is an error.
fn judge_by_use(cx: &Context<'_>, f: &mut Finding) {
    const HOW: &str = "Workers die when the parent runs numba's parallel code before the workers are forked and a worker runs parallel code again";
    let launched = cx
        .facts
        .process
        .as_ref()
        .and_then(|p| p.python_runtime.as_ref())
        .is_some_and(|r| r.numba_threading_layer.as_deref() == Some("omp"));
    let judged = match cx.plan.usage.as_ref() {
        None if launched => return,
        None => Use::Unknown,
        Some(u) => use_by(
            &with_dependents(cx.facts, BTreeSet::from(["numba".to_string()])),
            u,
        ),
    };
    match judged {
        Use::AcrossFork => f.evidence.insert(
            0,
            Evidence::new(
                EvidenceSource::SourceCode,
                "the script runs numba-compiled code before the workers are forked and in the workers",
            ),
        ),
        Use::NotReached => f.level = Level::Allow,
        Use::Loaded => {
            f.level = Level::Warning;
            f.message = format!(
                "{}; the scripts do not run numba's parallel code both before the fork and in the workers: they do not die here. {HOW}",
                f.message
            );
        }
        Use::Unknown => {
            f.level = Level::Warning;
            f.presumed = true;
            f.message = format!(
                "{}; {}. {HOW}",
                f.message,
                why_unknown(cx.plan.usage.as_ref())
            );
        }
    }
}
