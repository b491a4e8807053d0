//! How a cluster runs: start method, worker count, environment, limits.
//! Filled from the rules' recommendation (`Cluster::auto`) or chosen
//! explicitly (`Cluster::builder`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use caiclust_probe::{
    collect_host, Facts, HostFacts, OsFamily, ScanSummary, Subject, SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};

/// How worker processes come to life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMethod {
    /// A fresh process (fork+exec, or CreateProcess) per worker: the
    /// environment applies before anything loads. All platforms.
    Spawn,
    /// Workers forked from a clean single-threaded server, started once for
    /// the pool's environment. Unix.
    Forkserver,
    /// Workers forked from a process holding the parent's state: for Python
    /// callables a template that imported the task modules, for Rust
    /// functions this process itself. Unix; refused when the rules see a
    /// fork hazard unless forced.
    Fork,
}

impl StartMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
            StartMethod::Fork => "fork",
        }
    }

    /// Can this platform use it?
    pub fn supported(self) -> bool {
        cfg!(unix) || self == StartMethod::Spawn
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StartMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::Forkserver),
            "fork" => Ok(StartMethod::Fork),
            other => Err(format!(
                "unknown start method '{other}' (expected spawn, forkserver or fork)"
            )),
        }
    }
}

/// When to stop a run early, as GNU parallel's `--halt`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct HaltPolicy {
    pub when: HaltWhen,
    /// Stop after this many (or this fraction of) tasks ended so.
    pub trigger: HaltTrigger,
}

/// `soon` stops starting tasks and lets running ones finish; `now` also
/// stops the running ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HaltWhen {
    #[default]
    Never,
    Soon,
    Now,
}

/// What counts towards the halt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltTrigger {
    Failures(Threshold),
    Successes(Threshold),
    Done(Threshold),
}

impl Default for HaltTrigger {
    fn default() -> Self {
        HaltTrigger::Failures(Threshold::Count(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    Count(u64),
    /// Percent of all tasks submitted, checked once at least 3 have ended
    /// (as GNU parallel does).
    Percent(f64),
}

impl Threshold {
    fn reached(self, n: u64, ended: u64, total: u64) -> bool {
        match self {
            Threshold::Count(c) => n >= c.max(1),
            Threshold::Percent(p) => {
                ended >= 3 && total > 0 && (n as f64) * 100.0 >= p * total as f64
            }
        }
    }
}

impl HaltPolicy {
    /// Has the run reached the halt?
    pub fn triggered(&self, succeeded: u64, failed: u64, total: u64) -> bool {
        let ended = succeeded + failed;
        match (self.when, self.trigger) {
            (HaltWhen::Never, _) => false,
            (_, HaltTrigger::Failures(t)) => failed > 0 && t.reached(failed, ended, total),
            (_, HaltTrigger::Successes(t)) => succeeded > 0 && t.reached(succeeded, ended, total),
            (_, HaltTrigger::Done(t)) => ended > 0 && t.reached(ended, ended, total),
        }
    }
}

impl FromStr for HaltPolicy {
    type Err = String;
    /// `never`, `soon,fail=3`, `now,fail=10%`, `now,success=1`,
    /// `soon,done=5`, or GNU parallel's old numbers: 0 (never), 1
    /// (soon,fail=1), 2 (now,fail=1).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("bad halt policy '{s}' (expected never, soon|now,fail|success|done=N or N%)")
        };
        match s.trim() {
            "never" | "0" => return Ok(HaltPolicy::default()),
            "1" => {
                return Ok(HaltPolicy {
                    when: HaltWhen::Soon,
                    trigger: HaltTrigger::Failures(Threshold::Count(1)),
                })
            }
            "2" => {
                return Ok(HaltPolicy {
                    when: HaltWhen::Now,
                    trigger: HaltTrigger::Failures(Threshold::Count(1)),
                })
            }
            _ => {}
        }
        let (when, rest) = s.split_once(',').ok_or_else(bad)?;
        let when = match when.trim() {
            "soon" => HaltWhen::Soon,
            "now" => HaltWhen::Now,
            _ => return Err(bad()),
        };
        let (what, value) = rest.split_once('=').ok_or_else(bad)?;
        let value = value.trim();
        let threshold = if let Some(p) = value.strip_suffix('%') {
            let p: f64 = p.parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            Threshold::Percent(p)
        } else {
            let n: u64 = value.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad());
            }
            Threshold::Count(n)
        };
        let trigger = match what.trim() {
            "fail" => HaltTrigger::Failures(threshold),
            "success" => HaltTrigger::Successes(threshold),
            "done" => HaltTrigger::Done(threshold),
            _ => return Err(bad()),
        };
        Ok(HaltPolicy { when, trigger })
    }
}

/// Everything a running cluster needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    pub start_method: StartMethod,
    /// Set in every worker's and command's environment, on top of this
    /// process's own.
    pub env: BTreeMap<String, String>,
    /// The Python interpreter for Python callables.
    pub python: PathBuf,
    /// The program whose `main` calls `serve_if_requested`, for Rust tasks.
    pub rust_worker: Option<PathBuf>,
    /// Python modules a fork template imports before forking workers (fork
    /// start method): what the parent would have imported. The policy
    /// judges fork with them loaded.
    pub preload: Vec<String>,
    /// Python modules the forkserver's server imports before it forks
    /// workers (multiprocessing's `set_forkserver_preload`): the
    /// third-party packages a Python parent uses, so that each worker
    /// starts with them loaded. Nothing else runs there. A module that
    /// fails to import is reported on the server's standard error and
    /// skipped; on Linux, an import that starts an OpenMP runtime's
    /// threads (which forked workers would wait for forever) makes the
    /// server start again without preloads.
    pub forkserver_preload: Vec<String>,
    pub timeout: Option<Duration>,
    /// Between TERM and KILL.
    pub grace: Duration,
    /// Attempts per task (1 = no retry).
    pub max_attempts: u32,
    pub halt: HaltPolicy,
    /// Replace a worker after it served this many tasks.
    pub recycle_after: Option<u64>,
    /// The watchdog looks at a task that ran this long without finishing.
    pub stall_after: Option<Duration>,
    /// Outputs larger than this stay in a temporary file.
    pub output_memory_limit: usize,
    /// Workers that may not start in a row before the pool gives up.
    pub max_start_failures: u32,
    /// The Rust task functions, for the fork start method (the template is
    /// this process; other start methods start the worker program).
    pub registry: Option<crate::worker::Registry>,
    /// Start all Python workers (and their fork server) when the cluster
    /// starts, as `multiprocessing.Pool` does, rather than with the first
    /// Python tasks: for a caller that is about to send some.
    pub python_workers_now: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            workers: 1,
            start_method: StartMethod::Spawn,
            env: BTreeMap::new(),
            python: PathBuf::from(if cfg!(windows) { "python" } else { "python3" }),
            rust_worker: None,
            preload: Vec::new(),
            forkserver_preload: Vec::new(),
            timeout: None,
            grace: Duration::from_secs(2),
            max_attempts: 1,
            halt: HaltPolicy::default(),
            recycle_after: None,
            stall_after: None,
            output_memory_limit: 4 << 20,
            max_start_failures: 3,
            registry: None,
            python_workers_now: false,
        }
    }
}

/// Facts about this machine only, for plans that need no Python: the
/// host (CPUs, cgroup quota, affinity, Slurm) and the environment.
pub fn host_only_facts() -> Facts {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let host: HostFacts = collect_host(&env);
    Facts {
        schema_version: SCHEMA_VERSION,
        producer: format!("caiclust-core {}", env!("CARGO_PKG_VERSION")),
        collected_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        subject: Subject::Tree {
            root: PathBuf::from("."),
        },
        target_os: OsFamily::current(),
        host,
        python: None,
        packages: Vec::new(),
        libraries: Vec::new(),
        duplicates: Vec::new(),
        env: caiclust_probe::relevant_env(&env),
        scan: ScanSummary::default(),
        process: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_policies_parse_like_gnu_parallel() {
        let p: HaltPolicy = "now,fail=1".parse().unwrap();
        assert_eq!(p.when, HaltWhen::Now);
        assert!(p.triggered(0, 1, 10));
        assert!(!p.triggered(5, 0, 10));
        let p: HaltPolicy = "soon,fail=20%".parse().unwrap();
        assert!(
            !p.triggered(0, 2, 10),
            "only 2 ended: under the 3 GNU parallel waits for"
        );
        assert!(p.triggered(1, 2, 10));
        assert!(!p.triggered(2, 1, 10));
        let p: HaltPolicy = "now,success=2".parse().unwrap();
        assert!(p.triggered(2, 0, 10) && !p.triggered(1, 5, 10));
        assert_eq!("2".parse::<HaltPolicy>().unwrap().when, HaltWhen::Now);
        assert!(!"never"
            .parse::<HaltPolicy>()
            .unwrap()
            .triggered(0, 100, 100));
        for bad in [
            "sometimes,fail=1",
            "now",
            "now,fail=0",
            "now,fail=x",
            "now,fail=200%",
            "now,oops=1",
        ] {
            let e = bad.parse::<HaltPolicy>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn start_methods_round_trip() {
        for m in [
            StartMethod::Spawn,
            StartMethod::Forkserver,
            StartMethod::Fork,
        ] {
            assert_eq!(m.as_str().parse::<StartMethod>().unwrap(), m);
        }
        assert!("vfork"
            .parse::<StartMethod>()
            .unwrap_err()
            .contains("vfork"));
    }
}
