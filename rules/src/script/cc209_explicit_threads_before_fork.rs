//! CC209: a thread count set in code before workers are forked, which
//! `OMP_NUM_THREADS` cannot undo.

use caiclust_probe::{Evidence, EvidenceSource, Vendor};
use rustpython_parser::ast::Ranged;

use super::model::Call;
use super::thread_counts::{explicit_counts, ExplicitCount};
use super::{pools, start_method_evidence, Script, ScriptRule, Setting};
use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::registry::Rule;

const EXPLANATION: &str = r#"## What it detects
A thread count the script sets in code, above 1, that runs before worker
processes are forked:

* the count: `omp_set_num_threads(n)` (of any library, ctypes' `CDLL`
  objects included), `numba.set_num_threads(n)`,
  `torch.set_num_threads(n)`, `mkl.set_num_threads(n)`, threadpoolctl's
  `threadpool_limits(n)` and `ThreadpoolController().limit(n)`, or a
  thread-count keyword of a library call: `nthread=`, `nthreads=`,
  `num_threads=`, `n_threads=`, `n_jobs=`, `thread_count=` (xgboost,
  LightGBM, CatBoost, ...; not the process counts of joblib,
  multiprocessing, Dask or CaImAn, nor scikit-learn's `n_jobs`, which
  sizes joblib's workers while its OpenMP threads follow
  `OMP_NUM_THREADS`). A count of 1, `0` or `None` (the library's default)
  is not reported;
* the fork: later in the same function or at module level (also through
  the script's own functions called there, and anywhere in the same loop),
  a `multiprocessing.Pool`, `ProcessPoolExecutor`, started `Process` or
  CaImAn `setup_cluster` (multiprocessing backend) whose workers are
  forked, or `os.fork()`. A count at module level runs when the module is
  imported, so it also precedes the forks in functions that no
  module-level code calls (a module of tasks that others import).

The level follows the start method: an error when the workers are forked
for sure (`os.fork()`; the script asks for fork; the facts or
`--start-method` say fork), a warning when nothing says which it will be
(fork on Linux before Python 3.14; spawn elsewhere), nothing when it is
spawn or forkserver. With facts that show no GNU OpenMP runtime (LLVM and
Intel OpenMP survive fork), an error becomes a warning, unless the script
opens the runtime itself with ctypes, which no probe of the environment
sees.

## Why it is bad
An explicit count is the runtime's own setting: it wins over
`OMP_NUM_THREADS`, which gives only the default. When OpenMP code then
runs in the parent, GNU libgomp starts a pool of that many threads; a
forked worker inherits the pool's bookkeeping without its threads, and its
first OpenMP region waits for them forever. Measured here: the workers
hung with `OMP_NUM_THREADS=1` set before the interpreter started, the fix
that works when no count is set in code (CC001). So the environment
variable does not help here, and tools that set it (`caiclust env`, a job
script, conda's activation) leave the hazard in place.

## Example
```python
import multiprocessing as mp
import xgboost as xgb

def main(X, y):
    xgb.XGBClassifier(nthread=4).fit(X, y)   # CC209: 4 OpenMP threads in the parent
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(work, chunks)               # workers that run OpenMP hang
```

## Fix
Start the workers with spawn or forkserver
(`multiprocessing.get_context("forkserver")`, or `caiclust.Pool`): they
do not inherit the parent's pool. Or set the count to 1 in the parent
(`nthread=1`, `threadpool_limits(1)`) and give the workers their own; or
create the pool before the OpenMP code runs in the parent.
`OMP_NUM_THREADS=1` does not override an explicit count.

## References
HAZARDS "Learned from real pipelines" (an environment fix is not always a
fix), H01; GCC bug 60035; threadpoolctl `threadpool_limits`; CC001."#;

/// A thread count set in code before a fork.
pub struct ExplicitThreadsBeforeFork;

/// What [`pools::forks_workers`] calls `os.fork()`.
const OS_FORK: &str = "os.fork()";

static INFO: RuleInfo = RuleInfo {
    id: "CC209",
    name: "explicit-threads-before-fork",
    category: Category::HangOrCrash,
    summary: "a thread count set in code (omp_set_num_threads, threadpool_limits, nthread=, n_jobs=...) runs before workers are forked: OMP_NUM_THREADS=1 does not override it",
    explanation: EXPLANATION,
    hazards: &["H01"],
    depends_on_start_method: true,
};

impl Rule for ExplicitThreadsBeforeFork {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    /// Reads scripts, not facts: see [`crate::lint_script`].
    fn check(&self, _cx: &Context<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// An explicit thread count that runs before workers may be forked.
pub(super) struct CountBeforeFork<'c, 'a> {
    pub count: ExplicitCount<'c, 'a>,
    /// The call that forks.
    pub fork: &'c Call<'a>,
    /// What it starts: `multiprocessing.Pool`, `os.fork()`.
    pub forks: &'static str,
    pub level: Level,
    /// Why the workers are (or may be) forked.
    pub why: String,
    pub evidence: Vec<Evidence>,
}

/// How the workers of a fork point start: the level and why, with the
/// evidence; `None` when they are spawned or started by a forkserver.
fn forked(
    own: Option<&str>,
    script: &Script<'_>,
    setting: &Setting<'_>,
) -> Option<(Level, String, Vec<Evidence>)> {
    if let Some(m) = own.or(script.start_method_set()) {
        return (m == "fork").then(|| (Level::Error, "the script asks for fork".into(), vec![]));
    }
    match setting.start_method() {
        Some(("fork", why)) => Some((
            Level::Error,
            format!("the start method here is fork ({why})"),
            vec![start_method_evidence("fork", why)],
        )),
        Some(_) => None,
        None => Some((
            Level::Warning,
            "the default start method forks on Linux before Python 3.14".into(),
            vec![],
        )),
    }
}

/// Every explicit thread count above 1 that runs before workers may be
/// forked, with the most serious fork it precedes.
pub(super) fn counts_before_fork<'c, 'a>(
    script: &'c Script<'a>,
    setting: &Setting<'_>,
) -> Vec<CountBeforeFork<'c, 'a>> {
    let forks: Vec<(&Call<'a>, &'static str, Option<String>)> = script
        .model
        .calls
        .iter()
        .filter_map(|c| pools::forks_workers(c).map(|(what, m)| (c, what, m)))
        .collect();
    // Facts that show no GNU OpenMP runtime: LLVM and Intel OpenMP
    // survive fork.
    let no_gomp = setting.cx.is_some_and(|cx| {
        !crate::rules::runtime_libraries(cx.facts).any(|l| l.vendor.value == Vendor::GnuOpenmp)
    });
    let mut out = Vec::new();
    // A count the library keeps within OMP_NUM_THREADS (xgboost's, as
    // measured) is no count that defeats the variable.
    for count in explicit_counts(script)
        .into_iter()
        .filter(|c| !c.overrides.is_empty())
    {
        // The most serious fork it precedes (the first of equals).
        let mut worst: Option<(&'c Call<'a>, &'static str, Level, String, Vec<Evidence>)> = None;
        for (fork, forks, own) in &forks {
            if !script.model.runs_before(count.call, fork) {
                continue;
            }
            let Some((mut level, mut why, evidence)) = forked(own.as_deref(), script, setting)
            else {
                continue;
            };
            if level == Level::Error && no_gomp && !count.through_ctypes() {
                level = Level::Warning;
                why.push_str(
                    ", but the facts show no GNU OpenMP runtime (LLVM and Intel OpenMP survive fork)",
                );
            }
            if worst.as_ref().is_none_or(|w| level > w.2) {
                worst = Some((fork, forks, level, why, evidence));
            }
        }
        if let Some((fork, forks, level, why, evidence)) = worst {
            out.push(CountBeforeFork {
                count,
                fork,
                forks,
                level,
                why,
                evidence,
            });
        }
    }
    out
}

impl ScriptRule for ExplicitThreadsBeforeFork {
    fn lint(&self, script: &Script<'_>, setting: &Setting<'_>) -> Vec<Finding> {
        counts_before_fork(script, setting)
            .into_iter()
            .map(|h| {
                let at = h.count.call.node.range().start().to_usize();
                let fork_at = h.fork.node.range().start().to_usize();
                let env = overridden_settings(script, setting, &h.count);
                let env_note = if env.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} does not change that",
                        env.iter()
                            .map(|(text, _)| text.as_str())
                            .collect::<Vec<_>>()
                            .join(" and ")
                    )
                };
                let line = script.source.line_label(fork_at);
                let before = if h.forks == OS_FORK {
                    format!("before {OS_FORK} at {line} forks the process")
                } else {
                    format!("before {} at {line} starts workers ({})", h.forks, h.why)
                };
                let message = format!(
                    "`{}` sets a thread count in code ({} for {}) {before}: an explicit count \
                     wins over OMP_NUM_THREADS, so once OpenMP code runs in the parent with \
                     it, forked workers that run OpenMP code too hang in libgomp{env_note}",
                    h.count.what,
                    h.count.threads.describe(),
                    h.count.runtime,
                );
                let fix = if h.forks == OS_FORK {
                    "OMP_NUM_THREADS=1 does not override an explicit count: fork before this \
                     code runs, start the child with multiprocessing's spawn or forkserver \
                     instead of os.fork(), or set the count to 1 in the parent"
                } else {
                    "OMP_NUM_THREADS=1 does not override an explicit count: start the workers \
                     with spawn or forkserver (`multiprocessing.get_context(\"forkserver\")`, \
                     or caiclust.Pool), or set the count to 1 in the parent before the pool, or \
                     create the pool before this code runs"
                };
                let mut f = script.finding(&INFO, h.level, at, message, fix);
                f.evidence.push(script.evidence(fork_at));
                f.evidence.extend(h.evidence);
                f.evidence.extend(env.into_iter().map(|(_, e)| e));
                f
            })
            .collect()
    }
}

/// The settings of the variables an explicit count overrides: written by
/// the script (`os.environ["OMP_NUM_THREADS"] = "1"` at line 3), or in
/// the facts' environment. Each as a phrase and its evidence.
pub(super) fn overridden_settings(
    script: &Script<'_>,
    setting: &Setting<'_>,
    count: &ExplicitCount<'_, '_>,
) -> Vec<(String, Evidence)> {
    let mut out = Vec::new();
    for name in count.overrides {
        if let Some(w) = script.model.env_writes.iter().find(|w| w.name == *name) {
            out.push((
                format!("{name} set at {}", script.source.line_label(w.offset)),
                script.evidence(w.offset),
            ));
        } else if let Some(value) = setting.cx.and_then(|cx| cx.env(name)) {
            out.push((
                format!("{name}={value} in the environment"),
                Evidence::new(EvidenceSource::Environment, format!("{name}={value}")),
            ));
        }
    }
    out
}
