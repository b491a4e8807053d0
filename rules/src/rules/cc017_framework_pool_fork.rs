//! CC017: a machine-learning framework's own thread pool forked after the
//! parent ran it (TensorFlow's intra-op pool).

use std::collections::BTreeSet;

use caiclust_probe::{Evidence, EvidenceSource, PackageFacts};

use crate::context::Context;
use crate::finding::{Finding, Level, RuleInfo};
use crate::recommend::EnvSetting;
use crate::registry::Rule;
use crate::rules::{default_pool_threads, env_count, env_evidence, finding, start_method_evidence};
use crate::uses::{use_by, why_unknown, with_dependents, Use};
use crate::Category;

const EXPLANATION: &str = r#"## What it detects
A framework whose own thread pool does not survive `fork`, in an
environment whose workers are forked: TensorFlow (its intra-op pool, an
Eigen thread pool sized by `TF_NUM_INTRAOP_THREADS`, by default one thread
per core).

With scripts the level follows what they run, read statically, as for
CC001: an error where the parent calls the framework (or a package that
requires it) before the workers are forked *and* the workers call it
again; a warning where the scripts only import it; nothing where no
script reaches it. Without scripts it is a warning the hazard policy
presumes (`presumed` in the JSON): `caiclust run`, `caiclust map` and
`Cluster` avoid fork all the same.

PyTorch's intra-op pool on Linux is GNU OpenMP, the `libgomp` its wheel
bundles: CC001 covers it, reached through `torch`. CUDA contexts
(TensorFlow, PyTorch, CuPy on a GPU) are CC015.

## Why it is bad
Once the parent has run an operation, TensorFlow's pool threads exist; a
forked child inherits the pool's state but not its threads, and its first
operation that the pool would run in parallel waits for them forever
(measured here with PyPI `tensorflow-cpu` and `multiprocessing.Pool`: the
map never returns). A framework only imported in the parent has started
no pool, and forked workers run it normally (measured).

`OMP_NUM_THREADS=1` does not help: the pool is not OpenMP (measured: the
run still hangs). `TF_NUM_INTRAOP_THREADS=1`, set before the interpreter
starts, does: operations then run on the calling thread (measured).
A count set in code (`tf.config.threading.set_intra_op_parallelism_threads(n)`)
takes precedence over the variable.

## Example
`model.predict(x)` in the parent, then a fork `Pool` whose tasks call
`model.predict` again: the workers hang.

## Fix
Start workers with `spawn` or `forkserver`, or set
`TF_NUM_INTRAOP_THREADS=1` before the interpreter starts.

## References
TensorFlow issues #5448 and #8220 ("TensorFlow hangs with
multiprocessing"); HAZARDS H19; `tests/verdicts/tensorflow_*.py` and
VERDICTS.md (measured)."#;

/// Framework pools that will be forked after they started.
pub struct FrameworkPoolFork;

static INFO: RuleInfo = RuleInfo {
    id: "CC017",
    name: "framework-pool-fork",
    category: Category::HangOrCrash,
    summary: "a framework's own thread pool (TensorFlow's intra-op pool) is forked after the parent ran it: workers hang",
    explanation: EXPLANATION,
    hazards: &["H19"],
    depends_on_start_method: true,
};

/// A framework with a pool of its own that a forked child cannot use.
struct FrameworkPool {
    /// Import name.
    package: &'static str,
    /// For messages.
    pool: &'static str,
    /// The variable that sizes the pool; at 1 it starts no threads and
    /// forked workers run (measured for TensorFlow).
    sized_by: &'static str,
}

/// The frameworks, as data.
static FRAMEWORKS: &[FrameworkPool] = &[FrameworkPool {
    package: "tensorflow",
    pool: "TensorFlow's intra-op thread pool",
    sized_by: "TF_NUM_INTRAOP_THREADS",
}];

impl Rule for FrameworkPoolFork {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        if !cx.forks() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for fw in FRAMEWORKS {
            for pkg in cx.facts.packages.iter().filter(|p| p.name == fw.package) {
                out.extend(check_one(cx, fw, pkg));
            }
        }
        out
    }
}

fn check_one(cx: &Context<'_>, fw: &FrameworkPool, pkg: &PackageFacts) -> Option<Finding> {
    let usage = cx.plan.usage.as_ref();
    let set_in_code = usage.and_then(|u| u.threads_for([fw.package.to_string()].iter()));
    let threads = match set_in_code {
        Some(Some(n)) => n,
        Some(None) => default_pool_threads(cx.facts),
        None => env_count(cx.facts, fw.sized_by).unwrap_or_else(|| default_pool_threads(cx.facts)),
    };
    if threads <= 1 {
        return None;
    }
    let judged = match usage {
        None => Use::Unknown,
        Some(u) => use_by(
            &with_dependents(cx.facts, BTreeSet::from([fw.package.to_string()])),
            u,
        ),
    };
    if judged == Use::NotReached {
        return None;
    }
    let version = pkg.version.as_deref().unwrap_or("(version unknown)");
    let mut ev = vec![
        Evidence::new(
            EvidenceSource::Static,
            format!("{} {version} at {}", fw.package, pkg.path.display()),
        ),
        env_evidence(cx.facts, fw.sized_by),
    ];
    if let Some(n) = set_in_code {
        ev.push(Evidence::new(
            EvidenceSource::SourceCode,
            format!(
                "the script sets {} before the workers are forked, which {} does not undo",
                n.map_or("a thread count in code".to_string(), |n| format!(
                    "a thread count of {n} in code"
                )),
                fw.sized_by
            ),
        ));
    }
    ev.push(start_method_evidence(cx));
    let what = format!(
        "{} ({} {version}) runs up to {threads} threads and workers are forked",
        fw.pool, fw.package
    );
    let how = format!(
        "Workers hang when the parent runs {} before the workers are forked and a worker runs it again",
        fw.package
    );
    let (level, presumed, message) = match judged {
        Use::AcrossFork => (
            Level::Error,
            false,
            format!("{what}: the script runs {} before the fork and in the workers, which hang", fw.package),
        ),
        Use::Loaded => (
            Level::Warning,
            false,
            format!("{what}, but the scripts do not run it both before the fork and in the workers: they do not hang here. {how}"),
        ),
        _ => (
            Level::Warning,
            true,
            format!("{what}; {}. {how}", why_unknown(usage)),
        ),
    };
    let env_fix = if set_in_code.is_some() {
        Vec::new()
    } else {
        vec![EnvSetting {
            name: fw.sized_by.to_string(),
            value: "1".into(),
            reason: format!(
                "{} then runs operations on the calling thread, so forked workers do not wait for pool threads they lack (measured)",
                fw.package
            ),
            answers: vec![INFO.id.to_string()],
        }]
    };
    let fix = if env_fix.is_empty() {
        "use the spawn or forkserver start method (the thread count set in code wins over the variable)".to_string()
    } else {
        format!(
            "use the spawn or forkserver start method, or set {}=1 before the interpreter starts (OMP_NUM_THREADS does not help: the pool is not OpenMP)",
            fw.sized_by
        )
    };
    let mut f = finding(&INFO, message, ev, fix, pkg.path.display().to_string());
    f.level = level;
    f.presumed = presumed;
    f.env_fix = env_fix;
    Some(f)
}
