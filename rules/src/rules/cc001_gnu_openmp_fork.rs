//! CC001: GNU OpenMP pools that will be forked.

use caiclust_probe::{Evidence, EvidenceSource, Vendor};

use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::recommend::EnvSetting;
use crate::registry::Rule;
use crate::rules::{
    default_pool_threads, file_name, finding, gnu_openmp_pools, library_evidence,
    start_method_evidence, GompPool,
};
use crate::script::ScriptUsage;
use crate::uses::{reaching_packages, use_of, used_by, why_unknown, Use};

const EXPLANATION: &str = r#"## What it detects
A pool that runs on GNU OpenMP (`libgomp`) with more than one thread, in an
environment whose workers are started with `fork`: scikit-learn's bundled
`libgomp-*.so`, the OpenMP builds of OpenBLAS (Debian `libopenblas0-openmp`)
and BLIS, MKL's GNU threading layer. One finding covers every such pool
in the environment (MKL on the GNU layer and scikit-learn's libgomp are one
hazard with one fix), each with its evidence. MKL on its GNU layer
(`MKL_THREADING_LAYER=GNU`) counts even where the environment holds no
libgomp: the layer loads the system's.

With scripts (`caiclust-check --python ENV script.py`, `caiclust run
script.py`), the level follows what the scripts run, read statically: an
error where the parent calls a package that reaches the pool before its
workers are forked *and* the workers' tasks call one again (the hang needs
both: the parent's pool threads, then an OpenMP region in the child); a
warning where the scripts only import such a package; nothing where no
package they import reaches it, directly or through the packages those
require. A thread count the script sets in code before the fork
(`num_threads=2` for LightGBM, `threadpool_limits(2)`; not xgboost's
`nthread`, which stays within `OMP_NUM_THREADS`) sizes the pool whatever
the variables say. Without scripts, the level follows the evidence of use
the facts hold: an error for a live process whose libgomp pool threads
exist, a warning where the runtime is only installed. The hazard policy
still presumes such a warning will bite (`presumed` in the JSON), so
`caiclust run`, `caiclust map` and `Cluster`, which run code the rules
cannot read, avoid fork there all the same.

## Why it is bad
libgomp's thread pool does not survive `fork`: the child inherits the
bookkeeping of worker threads that no longer exist, and its first OpenMP
region waits for them forever (GCC bug 60035). The pool hangs with no error.
LLVM `libomp`, Intel `libiomp5` and pthreads builds of OpenBLAS survive
fork; a libgomp pool limited to one thread never starts worker threads and
does not hang.

## Example
PyPI scikit-learn on Linux (Python < 3.14): the parent runs `KMeans`, then
`multiprocessing.Pool()` (fork) runs `KMeans` in workers: they hang.

## Fix
Start workers with `spawn` or `forkserver`, or set `OMP_NUM_THREADS=1`
before the interpreter starts (not in `os.environ` after import), or use a
pthreads build of the BLAS.

The variable is only the default: it does not help where the code sets a
thread count itself (`omp_set_num_threads(n)`, `threadpool_limits(n)`,
`torch.set_num_threads(n)`, an `nthread=`, `num_threads=` or `n_jobs=`
argument of xgboost, LightGBM and the like). Such a count starts a libgomp pool of that size whatever
`OMP_NUM_THREADS` says, and forked workers hang with the variable set
(measured here); there only `spawn` or `forkserver` helps. These facts
cannot show code: `caiclust-check script.py` reports those counts (CC209).

## References
GCC bug 60035; OpenBLAS #294, #240; HAZARDS H01 and "Learned from real
pipelines"; CC209."#;

/// GNU OpenMP pools that will be forked.
pub struct GnuOpenmpFork;

static INFO: RuleInfo = RuleInfo {
    id: "CC001",
    name: "gnu-openmp-fork",
    category: Category::HangOrCrash,
    summary: "a GNU OpenMP (libgomp) pool with more than one thread is forked: workers hang",
    explanation: EXPLANATION,
    hazards: &["H01"],
    depends_on_start_method: true,
};

impl Rule for GnuOpenmpFork {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        if !cx.forks() {
            return Vec::new();
        }
        let usage = cx.plan.usage.as_ref();
        let all: Vec<GompPool<'_>> = gnu_openmp_pools(cx.facts)
            .into_iter()
            .map(|p| with_counts_in_code(cx, p, usage))
            .filter(|p| p.threads > 1)
            .collect();
        let (pools, judged) = judge_by_use(cx, all, usage);
        // One hazard, one finding: every pool on libgomp (MKL's GNU layer,
        // an OpenMP OpenBLAS, scikit-learn's own libgomp) hangs the same
        // workers, and one fix covers them all.
        let Some(threads) = pools.iter().map(|p| p.threads).max() else {
            return Vec::new();
        };
        let mut ev = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut mkl: Vec<String> = Vec::new();
        for p in &pools {
            let name = file_name(&p.lib.path);
            match p.lib.vendor.value {
                // mkl_rt and its GNU layer library are one MKL pool.
                Vendor::Mkl => mkl.push(name),
                Vendor::GnuOpenmp => names.push(format!("GNU OpenMP {name}")),
                _ => names.push(format!("{name} (on GNU OpenMP libgomp)")),
            }
            ev.extend(library_evidence(p.lib));
            if let Some(r) = &p.lib.openmp_runtime {
                ev.extend(r.evidence.iter().cloned());
            }
            ev.extend(p.evidence.iter().cloned());
        }
        if !mkl.is_empty() {
            names.insert(
                0,
                format!("MKL on its GNU threading layer ({})", mkl.join(", ")),
            );
        }
        if let (Some(usage), Use::AcrossFork) = (usage, judged) {
            ev.extend(use_evidence(cx, &pools, usage));
        }
        // Without scripts, a live process whose libgomp threads are seen
        // waiting has started its pool: an error. Anything else is only
        // installed (libgomp's threads spin a while after each region
        // before they block, so none seen waiting proves nothing): a
        // warning the policy still presumes ([`Finding::presumed`]).
        let started = match (judged, live_evidence(cx)) {
            (Use::Unknown, Some((true, e))) => {
                ev.push(e);
                true
            }
            _ => false,
        };
        ev.push(start_method_evidence(cx));
        dedup_keep_order(&mut ev);
        let (what, verb) = match names.as_slice() {
            [one] => (one.clone(), "runs a pool"),
            many => (many.join(", "), "run pools"),
        };
        // Point at the runtime that hangs when it is itself in use, else at
        // the first library whose pool runs on it.
        let at = pools
            .iter()
            .find(|p| p.lib.vendor.value == Vendor::GnuOpenmp)
            .unwrap_or(&pools[0]);
        // The environment fix: every pool limited to one thread by the
        // variable it reads first (a libgomp pool that never starts
        // threads survives fork).
        let mut env_fix: Vec<EnvSetting> = Vec::new();
        for p in &pools {
            let var = p.sized_by[0];
            if !env_fix.iter().any(|e| e.name == var) {
                env_fix.push(EnvSetting {
                    name: var.to_string(),
                    value: "1".into(),
                    reason: format!(
                        "{} then never starts pool threads, so forked workers do not hang in libgomp (unless code sets a thread count itself: CC209)",
                        file_name(&p.lib.path)
                    ),
                    answers: vec![INFO.id.to_string()],
                });
            }
        }
        let fix_vars: Vec<String> = env_fix.iter().map(|e| format!("{}=1", e.name)).collect();
        let mut f = finding(
            &INFO,
            format!(
                "{what} {verb} of up to {threads} threads and workers are forked: the workers hang in libgomp"
            ),
            ev,
            format!(
                "use the spawn or forkserver start method, or set {} before the interpreter starts (not where the code sets a thread count itself: omp_set_num_threads, threadpool_limits, nthread=, num_threads=; there only spawn or forkserver helps)",
                fix_vars.join(" ")
            ),
            at.lib.path.display().to_string(),
        );
        f.env_fix = env_fix;
        const HOW: &str = "Workers hang when the parent starts the pool's threads (runs OpenMP code) before the workers are forked and a worker runs OpenMP code again";
        if judged == Use::Loaded {
            f.level = Level::Warning;
            f.message = format!(
                "{what} {verb} of up to {threads} threads and workers are forked, but the scripts do not run it both before the fork and in the workers: they do not hang here. {HOW}"
            );
        } else if judged == Use::Unknown && !started {
            f.level = Level::Warning;
            f.presumed = true;
            f.message = format!(
                "{what} {verb} of up to {threads} threads and workers are forked; {}. {HOW}",
                why_unknown(usage)
            );
        }
        vec![f]
    }
}

/// A live process: whether its GNU OpenMP pool threads exist (threads
/// blocked in a libgomp), with the evidence; `None` without a process or
/// when its threads could not be read.
fn live_evidence(cx: &Context<'_>) -> Option<(bool, Evidence)> {
    let waiting = cx.facts.process.as_ref()?.threads_waiting_in.as_ref()?;
    let in_gomp: usize = waiting
        .iter()
        .filter(|(path, _)| {
            cx.facts
                .libraries
                .iter()
                .any(|l| &l.path == *path && l.vendor.value == Vendor::GnuOpenmp)
                || file_name(path).starts_with("libgomp")
        })
        .map(|(_, n)| n)
        .sum();
    let detail = if in_gomp > 0 {
        format!("{in_gomp} thread(s) of the process wait in libgomp: its pool has started")
    } else {
        "no thread of the process waits in libgomp: its pool has not started".to_string()
    };
    Some((in_gomp > 0, Evidence::new(EvidenceSource::Runtime, detail)))
}

/// A pool sized by a count the scripts set in code before the fork (which
/// the variables do not undo): at least that many threads.
fn with_counts_in_code<'a>(
    cx: &Context<'a>,
    mut pool: GompPool<'a>,
    usage: Option<&ScriptUsage>,
) -> GompPool<'a> {
    let Some(usage) = usage else { return pool };
    let reaching = reaching_packages(cx.facts, pool.lib);
    let Some(count) = usage.threads_for(reaching.iter()) else {
        return pool;
    };
    let threads = count.unwrap_or_else(|| default_pool_threads(cx.facts));
    if threads > pool.threads {
        pool.threads = threads;
        pool.evidence.push(Evidence::new(
            EvidenceSource::SourceCode,
            format!(
                "the script sets {} before the workers are forked, which OMP_NUM_THREADS does not undo",
                match count {
                    Some(n) => format!("a thread count of {n} in code"),
                    None => "a thread count in code".to_string(),
                }
            ),
        ));
    }
    pool
}

/// The pools the scripts reach, and how the most serious of them is used:
/// with no script known, every pool as it is ([`Use::Unknown`]); else the
/// pools used across the fork when there are any, else those only loaded.
fn judge_by_use<'a>(
    cx: &Context<'a>,
    pools: Vec<GompPool<'a>>,
    usage: Option<&ScriptUsage>,
) -> (Vec<GompPool<'a>>, Use) {
    let judged: Vec<(Use, GompPool<'a>)> = pools
        .into_iter()
        .map(|p| (use_of(cx.facts, p.lib, usage), p))
        .filter(|(u, _)| *u != Use::NotReached)
        .collect();
    let Some(worst) = judged.iter().map(|(u, _)| *u).max() else {
        return (Vec::new(), Use::NotReached);
    };
    let pools = judged
        .into_iter()
        .filter(|(u, _)| *u == worst)
        .map(|(_, p)| p)
        .collect();
    (pools, worst)
}

/// Where the scripts run the pools: the packages called before the fork
/// and in the workers that reach them.
fn use_evidence(cx: &Context<'_>, pools: &[GompPool<'_>], usage: &ScriptUsage) -> Vec<Evidence> {
    let mut before = Vec::new();
    let mut workers = Vec::new();
    for p in pools {
        let (b, w) = used_by(cx.facts, p.lib, usage);
        before.extend(b);
        workers.extend(w);
    }
    before.sort();
    before.dedup();
    workers.sort();
    workers.dedup();
    vec![
        Evidence::new(
            EvidenceSource::SourceCode,
            format!(
                "the script calls {} before the workers are forked",
                before.join(", ")
            ),
        ),
        Evidence::new(
            EvidenceSource::SourceCode,
            format!("the workers' tasks call {}", workers.join(", ")),
        ),
    ]
}

/// Drop repeated evidence (the same variable read for several pools).
fn dedup_keep_order(ev: &mut Vec<Evidence>) {
    let mut seen = std::collections::BTreeSet::new();
    ev.retain(|e| seen.insert(e.clone()));
}
