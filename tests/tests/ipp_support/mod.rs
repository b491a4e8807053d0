//! What the ipyparallel backend's tests share (`ipp_backend.rs`,
//! `ipp_batches.rs`, `ipp_slurm.rs`, `ipp_ssh.rs`): the engine-side helper
//! module, a tagged setup whose leftovers are checked, and collecting
//! results.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use caiclust_core::ipp::{IppBackend, IppConfig, IppEvent};
use caiclust_core::{Task, TaskResult};
use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};
use serde_json::Value;

/// Engine-side helpers, importable through `PYTHONPATH`.
pub const HELPERS: &str = r#"
import os, socket, time

def slow(seconds):
    time.sleep(seconds)
    return os.getpid()

def whoami():
    return {"pid": os.getpid(), "cwd": os.getcwd(), "host": socket.gethostname()}

def env(names):
    return {n: os.environ.get(n) for n in names}

def boom(message):
    raise ValueError(message)

def shout(text):
    print(text)
    return len(text)

def nap(x, seconds):
    time.sleep(seconds)
    return x

def mark(folder, x, seconds):
    # Sleeps, then notes that task x ran to its end (one line per run).
    time.sleep(seconds)
    with open(os.path.join(folder, f"runs-{os.getpid()}"), "a") as f:
        f.write(f"{x}\n")
    return x

def stubborn(seconds):
    # Ignores KeyboardInterrupt: only killing its engine stops it.
    end = time.time() + seconds
    while time.time() < end:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    return "finished"
"#;

/// The hazard workload of `core_hazards.rs`: scikit-learn's bundled GNU
/// OpenMP used at import, then KMeans in every task.
pub const HAZARD: &str = r#"
import numpy as np
from sklearn.cluster import KMeans
X = np.random.RandomState(0).rand(4000, 8)
def task(seed):
    return int(KMeans(n_clusters=4, n_init=1, random_state=seed).fit(X).n_iter_)
task(0)
"#;

pub struct Setup {
    pub tag: String,
    pub modules: tempfile::TempDir,
}

pub fn setup(test: &str) -> Setup {
    let modules = tempfile::tempdir().unwrap();
    std::fs::write(modules.path().join("ipphelp.py"), HELPERS).unwrap();
    std::fs::write(modules.path().join("hazard.py"), HAZARD).unwrap();
    Setup {
        tag: unique_tag(test),
        modules,
    }
}

impl Setup {
    pub fn config(&self, engines: usize) -> IppConfig {
        let mut c = IppConfig::new(&fixtures().venv_ipp, engines);
        c.env.insert(TAG_VAR.into(), self.tag.clone());
        c.env.insert(
            "PYTHONPATH".into(),
            self.modules.path().to_string_lossy().into_owned(),
        );
        c.startup_timeout = Duration::from_secs(60);
        c.heartbeat = Duration::from_millis(500);
        c.grace = Duration::from_millis(500);
        c
    }

    /// Nothing tagged is left, and the run folder is gone.
    pub fn assert_clean(&self, run_dir: &Path) {
        let left = orphans_after(&self.tag, Duration::from_secs(10));
        assert!(left.is_empty(), "left behind: {left:#?}");
        assert!(
            !run_dir.exists(),
            "the run folder {} is still there",
            run_dir.display()
        );
    }
}

/// Submit `tasks` as 1..=n and collect their results (by id) and every
/// other event, within `within`.
pub fn run_all(
    b: &IppBackend,
    tasks: &[Task],
    within: Duration,
) -> (BTreeMap<u64, TaskResult>, Vec<IppEvent>) {
    for (i, t) in tasks.iter().enumerate() {
        b.submit(i as u64 + 1, t).unwrap();
    }
    collect(b, tasks.len(), within)
}

pub fn collect(
    b: &IppBackend,
    n: usize,
    within: Duration,
) -> (BTreeMap<u64, TaskResult>, Vec<IppEvent>) {
    let deadline = Instant::now() + within;
    let mut results = BTreeMap::new();
    let mut events = Vec::new();
    while results.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match b.recv_timeout(left) {
            Some(IppEvent::Result(r)) => {
                assert!(
                    results.insert(r.id, r).is_none(),
                    "two results for one task"
                );
            }
            Some(ev) => events.push(ev),
            None => panic!(
                "only {} of {n} results within {within:?}: {results:#?}; events {events:#?}",
                results.len()
            ),
        }
    }
    (results, events)
}

pub fn value(r: &TaskResult) -> &Value {
    r.value()
        .unwrap_or_else(|| panic!("task {} did not succeed: {:?}", r.id, r.outcome))
}

/// How many times each task ran to its end, from the lines `ipphelp:mark`
/// wrote in `folder`.
pub fn runs_in(folder: &Path) -> BTreeMap<u64, usize> {
    let mut runs = BTreeMap::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            *runs.entry(line.parse::<u64>().unwrap()).or_insert(0) += 1;
        }
    }
    runs
}

/// No result comes after the last expected one (a duplicate would).
pub fn assert_no_more_results(b: &IppBackend) {
    while let Some(ev) = b.recv_timeout(Duration::from_millis(500)) {
        assert!(
            !matches!(ev, IppEvent::Result(_)),
            "an extra result: {ev:?}"
        );
    }
}
