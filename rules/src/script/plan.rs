//! A script's process plan, read statically (nothing is executed): the
//! pools it creates and how many workers each runs, the start method it
//! forces, and whether it starts processes when it is imported. `caiclust
//! run -- python script.py` plans threads from it.
//!
//! The pools are the calls the script rules know, resolved through imports
//! and assignments by the script model: `multiprocessing.Pool` (also from
//! `get_context(M)` and as `multiprocessing.pool.Pool`),
//! `concurrent.futures.ProcessPoolExecutor`, CaImAn's `setup_cluster` and
//! `multiprocessing.Process`. Worker counts are read from literals and from
//! names bound once to a literal (see [`WorkerCount`]). The thread counts
//! the script sets in code come with them ([`ScriptThreadCount`]).

use std::fmt;
use std::path::Path;

use rustpython_parser::ast::{self, Ranged};
use serde::{Deserialize, Serialize};

use super::cc201_pool_without_main_guard::unguarded_starts;
use super::constants::{Constants, Literal};
use super::model::{self, Call};
use super::source::Source;
use super::thread_counts::{explicit_counts, Threads};
use super::usage::ScriptUsage;
use super::{notebook, pools, Script, ScriptError, Text};

/// Top-level modules whose import suggests worker processes, even when no
/// pool call is seen (they start them inside library functions:
/// `joblib.Parallel`, `sklearn`'s `n_jobs` through joblib, Dask's
/// `LocalCluster`...).
const POOL_MODULES: &[&str] = &[
    "multiprocessing",
    "multiprocess",
    "concurrent",
    "caiman",
    "joblib",
    "loky",
    "ipyparallel",
    "dask",
    "distributed",
    "ray",
    "pathos",
    "mpire",
    "billiard",
    "torch.multiprocessing",
];

/// What a script does with worker processes, read statically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptPlan {
    /// Every pool-creating call, in source order.
    pub pools: Vec<ScriptPool>,
    /// `multiprocessing.set_start_method(M)` (any alias), if the script
    /// calls it with a literal (the first such call).
    pub start_method_set: Option<String>,
    /// Does the script create processes (a pool, a `Process`, a
    /// `Manager`, `setup_cluster`...) in code that runs at import time
    /// (module level, outside the `if __name__ == "__main__":` guard),
    /// directly or through its own functions called there? Then spawn and
    /// forkserver would re-run it in every worker (CC201's condition).
    /// Never for a notebook: a kernel's `__main__` is not a file a worker
    /// re-imports.
    pub unguarded: bool,
    /// Does the script import modules that commonly create process pools
    /// (`multiprocessing`, `concurrent.futures`, `caiman`, `joblib`,
    /// `ipyparallel`, `dask`...), anywhere, even if no pool call was seen?
    pub may_use_pools: bool,
    /// The thread counts above 1 the script sets in code
    /// (`omp_set_num_threads(2)`, `threadpool_limits(4)`, `nthread=4`,
    /// ...), in source order. They win over `OMP_NUM_THREADS`: where one
    /// runs before workers are forked, no environment makes fork safe
    /// (CC209).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thread_counts: Vec<ScriptThreadCount>,
    /// The packages the script imports and calls, and where the calls run
    /// (the parent before a fork, the workers): the hazard rules'
    /// evidence that a runtime is used, not only installed.
    #[serde(default)]
    pub usage: ScriptUsage,
}

/// A thread count the script sets in code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptThreadCount {
    /// `path:line:column`, or `path:cell N:line:column` in a notebook.
    pub location: String,
    /// As written, shortened: `omp_set_num_threads(2)`,
    /// `XGBClassifier(nthread=4)`.
    pub call: String,
    /// The count, when the source shows it; `None` when it is computed
    /// at run time or counts the CPUs (`n_jobs=-1`).
    pub threads: Option<usize>,
    /// It runs before a call that may fork workers (a pool, a started
    /// `Process`, CaImAn's `setup_cluster`, `os.fork()`), whatever start
    /// method they get.
    pub before_fork: bool,
}

/// One call that creates worker processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptPool {
    pub kind: ScriptPoolKind,
    pub workers: WorkerCount,
    /// The start method this pool itself asks for:
    /// `get_context("fork").Pool(...)`,
    /// `ProcessPoolExecutor(mp_context=get_context("spawn"))`,
    /// `multiprocessing.pool.Pool(context=...)`; `None`: the default
    /// context (or a method computed at run time).
    pub start_method: Option<String>,
    /// `path:line:column`, or `path:cell N:line:column` in a notebook, as
    /// findings give it.
    pub location: String,
    /// The call as written, on one line and shortened:
    /// `mp.Pool(processes=N)`.
    pub call: String,
}

/// What creates the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScriptPoolKind {
    /// `multiprocessing.Pool`, from any context.
    Pool,
    /// `concurrent.futures.ProcessPoolExecutor`.
    ProcessPoolExecutor,
    /// CaImAn's `caiman.cluster.setup_cluster` with the multiprocessing
    /// (or `local`) backend, which creates a `multiprocessing.Pool`, or
    /// with the `single` backend: no pool, the work runs in the main
    /// process (1 worker).
    CaimanSetupCluster,
    /// One `multiprocessing.Process`.
    Process,
}

impl ScriptPoolKind {
    /// The constructor's full name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pool => "multiprocessing.Pool",
            Self::ProcessPoolExecutor => "concurrent.futures.ProcessPoolExecutor",
            Self::CaimanSetupCluster => "caiman.cluster.setup_cluster",
            Self::Process => "multiprocessing.Process",
        }
    }
}

impl fmt::Display for ScriptPoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many workers a pool runs, as the call shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerCount {
    /// A positive literal (`Pool(4)`, `Pool(processes=4)`), or a name bound
    /// once to one at module level or in the same function (`N = 4;
    /// Pool(N)`). A `Process` outside loops and comprehensions is 1;
    /// CaImAn's `single` backend is 1.
    Given(usize),
    /// The count left to the library: no argument or `None`.
    LibraryDefault,
    /// Computed at run time (`os.cpu_count() - 1`, a parameter, `*args`),
    /// or not a valid count (`0`); a `Process` created in a loop or a
    /// comprehension.
    Unknown,
}

/// Read a script's or a notebook's (`.ipynb`) process plan from its file:
/// the text as Python reads it (UTF-8 or the declared encoding), or the
/// notebook's code cells.
pub fn read_script_plan(path: &Path) -> Result<ScriptPlan, ScriptError> {
    plan_of(&Text::read(path)?.source(path))
}

/// Read a process plan from a file's text: Python source, or a notebook's
/// JSON when `path` ends in `.ipynb`. `path` is only used in locations and
/// errors.
pub fn script_plan(path: &Path, source: &str) -> Result<ScriptPlan, ScriptError> {
    let text = if notebook::is_notebook(path) {
        Text::notebook(path, source.to_string())?
    } else {
        Text::script(source)
    };
    plan_of(&text.source(path))
}

fn plan_of(source: &Source<'_>) -> Result<ScriptPlan, ScriptError> {
    let suite = source.parse()?;
    let script = Script::new(source, &suite);
    let constants = &script.constants;
    let mut pools: Vec<(usize, ScriptPool)> = script
        .model
        .calls
        .iter()
        .filter_map(|c| Some((offset(c), pool_of(source, constants, c)?)))
        .collect();
    pools.sort_by_key(|(offset, _)| *offset);
    let may_use_pools = script.model.imports.iter().any(|i| {
        POOL_MODULES.iter().any(|m| {
            i.module
                .strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
    });
    let forks: Vec<&Call<'_>> = script
        .model
        .calls
        .iter()
        .filter(|c| pools::forks_workers(c).is_some())
        .collect();
    let counts = explicit_counts(&script);
    let mut usage = super::usage::usage_of(&script.model);
    usage
        .unread_code
        .extend(super::usage::local_modules(source.path, &usage.imports));
    for c in counts.iter().filter(|c| !c.overrides.is_empty()) {
        if forks.iter().any(|f| script.model.runs_before(c.call, f)) {
            let threads = match c.threads {
                Threads::Given(n) => Some(n),
                Threads::AllCpus | Threads::Computed => None,
            };
            let package = c.package.as_deref().unwrap_or("*");
            super::usage::record_threads(&mut usage.threads_before_fork, package, threads);
        }
    }
    let thread_counts = counts
        .into_iter()
        .filter(|c| !c.overrides.is_empty())
        .map(|c| ScriptThreadCount {
            location: source.location(offset(c.call)),
            call: c.what,
            threads: match c.threads {
                Threads::Given(n) => Some(n),
                Threads::AllCpus | Threads::Computed => None,
            },
            before_fork: forks.iter().any(|f| script.model.runs_before(c.call, f)),
        })
        .collect();
    Ok(ScriptPlan {
        pools: pools.into_iter().map(|(_, p)| p).collect(),
        start_method_set: script.start_method_set().map(str::to_string),
        unguarded: !unguarded_starts(&script).is_empty(),
        may_use_pools,
        thread_counts,
        usage,
    })
}

fn offset(call: &Call<'_>) -> usize {
    call.node.range().start().to_usize()
}

/// The pool a call creates, if it creates one.
fn pool_of(source: &Source<'_>, constants: &Constants<'_>, call: &Call<'_>) -> Option<ScriptPool> {
    use ScriptPoolKind as K;
    let (plain, method) = model::strip_context(&call.callee);
    let count = |position, keyword| count(constants, call, position, keyword);
    let context = |position, keyword| call.arg(position, keyword).and_then(pools::context_method);
    let (kind, workers, method) = match plain.as_str() {
        // Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None)
        "multiprocessing.Pool" => (K::Pool, count(0, "processes"), method),
        // multiprocessing.pool.Pool(..., context=None)
        "multiprocessing.pool.Pool" => (K::Pool, count(0, "processes"), context(4, "context")),
        // ProcessPoolExecutor(max_workers=None, mp_context=None, ...)
        "concurrent.futures.ProcessPoolExecutor"
        | "concurrent.futures.process.ProcessPoolExecutor" => (
            K::ProcessPoolExecutor,
            count(0, "max_workers"),
            context(1, "mp_context"),
        ),
        "multiprocessing.Process" | "multiprocessing.process.Process" => {
            let repeated = call.in_loop.is_some() || call.in_comprehension;
            let workers = if repeated {
                WorkerCount::Unknown
            } else {
                WorkerCount::Given(1)
            };
            (K::Process, workers, method)
        }
        // setup_cluster(backend='multiprocessing', n_processes=None, single_thread=False, ...)
        // CaImAn (1.10 on) decides on the backend first: with the
        // multiprocessing backend `single_thread=True` still creates the
        // pool (CC204).
        "caiman.cluster.setup_cluster" => match pools::caiman_backend(call)? {
            "multiprocessing" | "local" => (K::CaimanSetupCluster, count(1, "n_processes"), None),
            "single" => (K::CaimanSetupCluster, WorkerCount::Given(1), None),
            _ => return None,
        },
        _ => return None,
    };
    let offset = offset(call);
    Some(ScriptPool {
        kind,
        workers,
        start_method: method.filter(|m| !m.is_empty()).map(str::to_string),
        location: source.location(offset),
        call: call_text(source, call.node),
    })
}

/// A worker count argument, read.
fn count(
    constants: &Constants<'_>,
    call: &Call<'_>,
    position: usize,
    keyword: &str,
) -> WorkerCount {
    match call.arg(position, keyword) {
        // `Pool(*args)`, `Pool(**options)` may pass it.
        None if model::splats(call.node) => WorkerCount::Unknown,
        None => WorkerCount::LibraryDefault,
        Some(a) => match constants.value(a.expr, call.function) {
            Some(Literal::None) => WorkerCount::LibraryDefault,
            Some(Literal::Int(n)) if n > 0 => WorkerCount::Given(n),
            _ => WorkerCount::Unknown,
        },
    }
}

/// The call's text on one line, shortened.
fn call_text(source: &Source<'_>, c: &ast::ExprCall) -> String {
    let (start, end) = (c.range.start().to_usize(), c.range.end().to_usize());
    let text = source.text.get(start..end).unwrap_or_default();
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    const MAX: usize = 80;
    if one_line.chars().count() > MAX {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

impl ScriptPlan {
    /// Does the script set a thread count in code before it may fork
    /// workers? Then `OMP_NUM_THREADS=1` does not make fork safe.
    pub fn sets_threads_before_fork(&self) -> bool {
        self.thread_counts.iter().any(|c| c.before_fork)
    }

    /// The start method the script forces for (some of) its pools:
    /// `set_start_method(M)`, or a pool's own context. The one that matters
    /// most for safety: `"fork"` if any pool forks by its own request, then
    /// the method set for the program, then the first pool's own.
    pub fn forced_start_method(&self) -> Option<&str> {
        let own = || self.pools.iter().filter_map(|p| p.start_method.as_deref());
        own()
            .find(|m| *m == "fork")
            .or(self.start_method_set.as_deref())
            .or_else(|| own().next())
    }

    /// Worker processes the program will run at once, as the libraries
    /// would count them on this host, with the reason (where the number
    /// comes from). `logical_cpus`: `os.cpu_count()`; `affinity_cpus`: the
    /// CPUs in the affinity mask (`os.process_cpu_count()` from Python
    /// 3.13), if known; `python`: the interpreter's (major, minor), if
    /// known.
    ///
    /// The largest of the pools whose count is given or left to the
    /// library (several may be alive at once; the largest is the honest
    /// bound), where the script's `Process`es count together. If no
    /// count could be read, the library default of the first pool's kind
    /// (one per CPU, as `Pool()`, for `Process`es). `None` when the script
    /// creates no pool.
    ///
    /// Library defaults: `Pool()` and `ProcessPoolExecutor()` run
    /// `os.cpu_count()` workers before Python 3.13 and
    /// `os.process_cpu_count()` (the affinity mask) from 3.13 (with the
    /// version unknown, `os.cpu_count()`, the larger); CaImAn's
    /// `setup_cluster()` runs `max(psutil.cpu_count() - 1, 1)` (logical
    /// CPUs). `ProcessPoolExecutor`'s cap of 61 on Windows is not applied.
    pub fn workers(
        &self,
        logical_cpus: usize,
        affinity_cpus: Option<usize>,
        python: Option<(u32, u32)>,
    ) -> Option<(usize, String)> {
        let host = Host {
            logical: logical_cpus.max(1),
            affinity: affinity_cpus.map(|a| a.max(1)),
            python,
        };
        let mut best: Option<(usize, String)> = None;
        let mut consider = |n: usize, why: String| {
            if best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, why));
            }
        };
        // The `Process`es count together, at the place of the first.
        let processes: Vec<&ScriptPool> = self
            .pools
            .iter()
            .filter(|p| p.kind == ScriptPoolKind::Process && p.workers != WorkerCount::Unknown)
            .collect();
        let mut processes_counted = false;
        for p in &self.pools {
            match (p.kind, p.workers) {
                (_, WorkerCount::Unknown) => {}
                (ScriptPoolKind::Process, _) => {
                    if !processes_counted {
                        processes_counted = true;
                        let (n, why) = process_count(&processes);
                        consider(n, why);
                    }
                }
                (_, WorkerCount::Given(n)) => consider(n, p.place()),
                (kind, WorkerCount::LibraryDefault) => {
                    let (n, how) = host.default(kind);
                    consider(n, format!("{} defaults to {how}", p.place()));
                }
            }
        }
        let unknown: Vec<&ScriptPool> = self
            .pools
            .iter()
            .filter(|p| p.workers == WorkerCount::Unknown)
            .collect();
        match (best, unknown.first()) {
            (Some((n, why)), None) => Some((n, why)),
            (Some((n, why)), Some(first)) => {
                let more = match unknown.len() - 1 {
                    0 => String::new(),
                    1 => " and 1 more".into(),
                    k => format!(" and {k} more"),
                };
                Some((
                    n,
                    format!(
                        "{why} (not counted: {}{more}, whose worker count could not be read)",
                        first.place()
                    ),
                ))
            }
            (None, Some(first)) => {
                let (n, how) = host.default(first.kind);
                let why = if first.kind == ScriptPoolKind::Process {
                    format!(
                        "the number of processes {} starts could not be read (it is in a loop or a comprehension); assuming one per CPU, as Pool() would: {how}",
                        first.place()
                    )
                } else {
                    format!(
                        "the worker count of {} could not be read; assuming the library default, {how}",
                        first.place()
                    )
                };
                Some((n, why))
            }
            (None, None) => None,
        }
    }
}

impl ScriptPool {
    /// "`mp.Pool(2)` at run.py:12:10", for reasons.
    fn place(&self) -> String {
        format!("`{}` at {}", self.call, self.location)
    }
}

/// The `Process`es whose count is known, together.
fn process_count(processes: &[&ScriptPool]) -> (usize, String) {
    let n = processes
        .iter()
        .map(|p| match p.workers {
            WorkerCount::Given(n) => n,
            _ => 1,
        })
        .sum();
    let why = match processes {
        [one] => one.place(),
        many => {
            let places: Vec<&str> = many.iter().map(|p| p.location.as_str()).collect();
            format!(
                "{} `multiprocessing.Process` calls, at {}",
                many.len(),
                places.join(", ")
            )
        }
    };
    (n, why)
}

/// The host, as the libraries' defaults read it.
struct Host {
    logical: usize,
    affinity: Option<usize>,
    python: Option<(u32, u32)>,
}

impl Host {
    /// The library's default worker count for a kind of pool, and how it
    /// is computed.
    fn default(&self, kind: ScriptPoolKind) -> (usize, String) {
        let logical = self.logical;
        if kind == ScriptPoolKind::CaimanSetupCluster {
            let n = logical.saturating_sub(1).max(1);
            return (n, format!("max(psutil.cpu_count() - 1, 1) = {n}"));
        }
        match (self.python, self.affinity) {
            (Some(v), Some(a)) if v >= (3, 13) => (a, format!("os.process_cpu_count() = {a}")),
            (Some(v), None) if v >= (3, 13) => (
                logical,
                format!(
                    "os.process_cpu_count() = {logical} (the affinity mask is unknown: all logical CPUs)"
                ),
            ),
            (Some(_), _) => (logical, format!("os.cpu_count() = {logical}")),
            (None, affinity) => {
                let later = match affinity.filter(|a| *a != logical) {
                    Some(a) => format!("; from Python 3.13 it is os.process_cpu_count() = {a}"),
                    None => String::new(),
                };
                (
                    logical,
                    format!("os.cpu_count() = {logical} (the Python version is unknown{later})"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(src: &str) -> ScriptPlan {
        script_plan(Path::new("run.py"), src).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (kind, workers, start method) of each pool.
    fn pools(src: &str) -> Vec<(ScriptPoolKind, WorkerCount, Option<String>)> {
        plan(src)
            .pools
            .into_iter()
            .map(|p| (p.kind, p.workers, p.start_method))
            .collect()
    }

    use ScriptPoolKind::{CaimanSetupCluster, Pool, Process, ProcessPoolExecutor};
    use WorkerCount::{Given, LibraryDefault, Unknown};

    /// Thread counts set in code travel with the plan, so that `caiclust
    /// run` knows that OMP_NUM_THREADS=1 will not make fork safe.
    #[test]
    fn thread_counts_set_in_code_are_in_the_plan() {
        let p = plan(
            "import multiprocessing as mp\nimport lightgbm as lgb\nimport xgboost as xgb\n\
             from threadpoolctl import threadpool_limits\n\
             def main():\n\
             \x20   lgb.LGBMClassifier(num_threads=4)\n\
             \x20   xgb.XGBClassifier(nthread=4)\n\
             \x20   with mp.Pool(2) as pool:\n\
             \x20       pool.map(abs, [1])\n\
             \x20   threadpool_limits(limits=-1)\n",
        );
        let counts: Vec<(&str, Option<usize>, bool)> = p
            .thread_counts
            .iter()
            .map(|c| (c.call.as_str(), c.threads, c.before_fork))
            .collect();
        assert_eq!(
            counts,
            [
                ("LGBMClassifier(num_threads=4)", Some(4), true),
                ("threadpool_limits(limits=-1)", None, false),
            ]
        );
        assert_eq!(p.thread_counts[0].location, "./run.py:6:5");
        assert!(p.sets_threads_before_fork());
        assert!(!plan("import multiprocessing as mp\nmp.Pool(2)\n").sets_threads_before_fork());
        // Absent from the JSON when there are none.
        let json = serde_json::to_string(&plan("import os\n")).unwrap();
        assert!(!json.contains("thread_counts"), "{json}");
    }

    #[test]
    fn pool_counts_from_arguments_and_constants() {
        let src = "\
import multiprocessing as mp
from multiprocessing import Pool
from multiprocessing.pool import Pool as RawPool
import os
N = 3
def main(k):
    m = 5
    mp.Pool(4)
    mp.Pool(processes=2)
    Pool()
    Pool(None)
    mp.Pool(N)
    mp.Pool(m)
    mp.Pool(k)
    mp.Pool(os.cpu_count() - 1)
    mp.Pool(0)
    mp.Pool(*args)
    mp.Pool(**options)
    RawPool(6)
";
        let got: Vec<WorkerCount> = pools(src).into_iter().map(|(_, w, _)| w).collect();
        assert_eq!(
            got,
            [
                Given(4),
                Given(2),
                LibraryDefault,
                LibraryDefault,
                Given(3),
                Given(5),
                Unknown,
                Unknown,
                Unknown,
                Unknown,
                Unknown,
                Given(6)
            ]
        );
    }

    #[test]
    fn start_methods_of_pools_and_contexts() {
        let src = "\
import multiprocessing as mp
from multiprocessing import get_context
from concurrent.futures import ProcessPoolExecutor
import multiprocessing.pool
ctx = mp.get_context('spawn')
with get_context('fork').Pool(processes=2) as p:
    pass
ctx.Pool(3)
ProcessPoolExecutor(max_workers=4, mp_context=mp.get_context('forkserver'))
ProcessPoolExecutor(2, ctx)
ProcessPoolExecutor()
mp.get_context().Pool()
multiprocessing.pool.Pool(1, context=ctx)
";
        let m = |s: &str| Some(s.to_string());
        assert_eq!(
            pools(src),
            [
                (Pool, Given(2), m("fork")),
                (Pool, Given(3), m("spawn")),
                (ProcessPoolExecutor, Given(4), m("forkserver")),
                (ProcessPoolExecutor, Given(2), m("spawn")),
                (ProcessPoolExecutor, LibraryDefault, None),
                (Pool, LibraryDefault, None),
                (Pool, Given(1), m("spawn")),
            ]
        );
    }

    #[test]
    fn setup_cluster_backends() {
        let src = "\
import caiman as cm
from caiman.cluster import setup_cluster
cm.cluster.setup_cluster(backend='multiprocessing', n_processes=6)
setup_cluster('local', 3)
setup_cluster()
setup_cluster(n_processes=None, single_thread=True)
setup_cluster(backend='single')
setup_cluster(backend='ipyparallel', n_processes=8)
setup_cluster(backend=choice)
";
        assert_eq!(
            pools(src),
            [
                (CaimanSetupCluster, Given(6), None),
                (CaimanSetupCluster, Given(3), None),
                (CaimanSetupCluster, LibraryDefault, None),
                (CaimanSetupCluster, LibraryDefault, None),
                (CaimanSetupCluster, Given(1), None),
            ]
        );
    }

    #[test]
    fn processes_in_loops_are_unknown() {
        let src = "\
import multiprocessing as mp
a = mp.Process(target=f)
b = mp.get_context('fork').Process(target=f)
for i in range(4):
    mp.Process(target=f).start()
ps = [mp.Process(target=f) for i in range(4)]
";
        assert_eq!(
            pools(src),
            [
                (Process, Given(1), None),
                (Process, Given(1), Some("fork".into())),
                (Process, Unknown, None),
                (Process, Unknown, None),
            ]
        );
    }

    #[test]
    fn forced_start_method_prefers_fork() {
        let p = plan("import multiprocessing as mp\nmp.set_start_method('spawn')\nmp.Pool()\n");
        assert_eq!(p.start_method_set.as_deref(), Some("spawn"));
        assert_eq!(p.forced_start_method(), Some("spawn"));
        let p = plan(
            "import multiprocessing as mp\nmp.set_start_method('spawn')\nmp.get_context('fork').Pool()\n",
        );
        assert_eq!(p.forced_start_method(), Some("fork"));
        let p = plan("import multiprocessing as mp\nmp.get_context('forkserver').Pool()\n");
        assert_eq!(p.start_method_set, None);
        assert_eq!(p.forced_start_method(), Some("forkserver"));
        assert_eq!(
            plan("import multiprocessing as mp\nmp.Pool()\n").forced_start_method(),
            None
        );
    }

    #[test]
    fn unguarded_follows_cc201() {
        let guarded = "\
import multiprocessing as mp
def main():
    with mp.Pool(2) as p:
        pass
if __name__ == '__main__':
    main()
";
        assert!(!plan(guarded).unguarded);
        let through_function = "\
import multiprocessing as mp
def main():
    with mp.Pool(2) as p:
        pass
main()
";
        assert!(plan(through_function).unguarded);
        assert!(plan("import multiprocessing as mp\nmp.Manager()\n").unguarded);
        assert!(!plan("import multiprocessing as mp\n").unguarded);
    }

    #[test]
    fn may_use_pools_from_imports() {
        for src in [
            "import joblib\n",
            "from concurrent import futures\n",
            "import concurrent.futures\n",
            "from dask.distributed import Client\n",
            "def f():\n    import caiman as cm\n",
            "import torch.multiprocessing as mp\n",
        ] {
            assert!(plan(src).may_use_pools, "{src}");
        }
        for src in ["import numpy\n", "import torch\n", "import joblibx\n"] {
            assert!(!plan(src).may_use_pools, "{src}");
        }
    }

    fn one(src: &str) -> ScriptPlan {
        plan(&format!(
            "import multiprocessing as mp\nimport caiman as cm\n{src}"
        ))
    }

    #[test]
    fn workers_take_the_largest_pool() {
        let p = one("mp.Pool(2)\nmp.Pool(6)\nmp.Pool(6)\n");
        assert_eq!(
            p.workers(8, Some(8), Some((3, 12))),
            Some((6, "`mp.Pool(6)` at ./run.py:4:1".into()))
        );
        assert_eq!(one("").workers(8, None, None), None);
    }

    #[test]
    fn library_defaults_follow_the_python_version() {
        let p = one("mp.Pool()\n");
        let at = "`mp.Pool()` at ./run.py:3:1 defaults to";
        assert_eq!(
            p.workers(8, Some(2), Some((3, 12))),
            Some((8, format!("{at} os.cpu_count() = 8")))
        );
        assert_eq!(
            p.workers(8, Some(2), Some((3, 13))),
            Some((2, format!("{at} os.process_cpu_count() = 2")))
        );
        assert_eq!(
            p.workers(8, None, Some((3, 14))),
            Some((
                8,
                format!("{at} os.process_cpu_count() = 8 (the affinity mask is unknown: all logical CPUs)")
            ))
        );
        assert_eq!(
            p.workers(8, Some(2), None),
            Some((
                8,
                format!("{at} os.cpu_count() = 8 (the Python version is unknown; from Python 3.13 it is os.process_cpu_count() = 2)")
            ))
        );
        // CaImAn counts logical CPUs, less one.
        let c = one("cm.cluster.setup_cluster()\n");
        assert_eq!(c.workers(8, Some(2), Some((3, 13))).map(|w| w.0), Some(7));
        assert_eq!(c.workers(1, None, None).map(|w| w.0), Some(1));
        assert_eq!(
            one("mp.Pool()\n").workers(0, None, None).map(|w| w.0),
            Some(1)
        );
    }

    #[test]
    fn unknown_counts_fall_back_or_are_named() {
        let p = one("mp.Pool(k)\n");
        assert_eq!(
            p.workers(4, None, Some((3, 11))),
            Some((4, "the worker count of `mp.Pool(k)` at ./run.py:3:1 could not be read; assuming the library default, os.cpu_count() = 4".into()))
        );
        let p = one("cm.cluster.setup_cluster(n_processes=k)\nmp.Pool(k)\n");
        assert_eq!(p.workers(4, None, Some((3, 11))).map(|w| w.0), Some(3));
        let p = one("mp.Pool(k)\nmp.Pool(3)\nmp.Pool(j)\nmp.Pool(i)\n");
        assert_eq!(
            p.workers(8, None, Some((3, 11))),
            Some((3, "`mp.Pool(3)` at ./run.py:4:1 (not counted: `mp.Pool(k)` at ./run.py:3:1 and 2 more, whose worker count could not be read)".into()))
        );
        let p = one("for i in range(n):\n    mp.Process(target=f)\n");
        let (n, why) = p.workers(6, None, Some((3, 11))).unwrap();
        assert_eq!(n, 6);
        assert!(why.contains("assuming one per CPU"), "{why}");
    }

    #[test]
    fn processes_count_together() {
        let p = one("a = mp.Process(target=f)\nb = mp.Process(target=g)\nc = mp.Process(target=h)\nmp.Pool(2)\n");
        assert_eq!(
            p.workers(8, None, Some((3, 11))),
            Some((
                3,
                "3 `multiprocessing.Process` calls, at ./run.py:3:5, ./run.py:4:5, ./run.py:5:5"
                    .into()
            ))
        );
    }

    #[test]
    fn long_calls_are_shortened_to_one_line() {
        let p = one("mp.Pool(\n    processes=2,\n    initializer=init,\n)\n");
        assert_eq!(p.pools[0].call, "mp.Pool( processes=2, initializer=init, )");
        let long = format!(
            "mp.Pool(2, initializer=f, initargs=({}))\n",
            "1, ".repeat(40)
        );
        let call = &one(&long).pools[0].call;
        assert!(call.ends_with('…') && call.chars().count() == 81, "{call}");
    }
}
