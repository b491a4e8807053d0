//! core: standby interpreters (`worker::prestart_python`), a fork
//! template started before the pool that needs it, with the real numpy
//! venv. A cluster takes the standby and its workers get the cluster's
//! environment (thread limits among it) as a freshly started server would;
//! a standby started under other loader variables is not taken and is
//! stopped; `stop_standbys` leaves none.
//!
//! Standbys are per process: the tests of this file run one at a time.
//!
//! Unix only: the fixture venvs' Linux Pythons as workers.
#![cfg(unix)]

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use caiclust_core::worker::{prestart_python, standby_pid, stop_standbys};
use caiclust_core::{Cluster, Outcome, StartMethod, Task};
use caiclust_tests::fixtures;
use serde_json::{json, Value};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const MODULE: &str = r#"
import os, sys

def where():
    import numpy  # from site-packages: site ran in the template
    return {
        "no_site": sys.flags.no_site,
        "late": os.environ.get("CAICLUST_TEST_LATE"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "ld": os.environ.get("LD_LIBRARY_PATH"),
        "cwd": os.getcwd(),
        "numpy": numpy.__version__,
        "mark": os.environ.get("CAICLUST_PYTHON_WORKER"),
    }
"#;

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z" | "X")
        )
    })
}

/// Wait (10 s at most) for `pid` to be gone.
fn wait_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid})");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Start a standby for `python` and wait until it is there.
fn standby_for(python: &Path) -> u32 {
    assert!(prestart_python(python, &["pickle".to_string()]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = standby_pid(python) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no standby started");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_where(python: &Path, dir: &Path, extra: &[(&str, &str)]) -> Value {
    let mut b = Cluster::builder()
        .workers(1)
        .start_method(StartMethod::Forkserver)
        .python(python)
        .env("CAICLUST_SYS_PATH", dir.to_string_lossy())
        .env("CAICLUST_TEST_LATE", "set after the standby started")
        .env("OMP_NUM_THREADS", "3");
    for (k, v) in extra {
        b = b.env(*k, *v);
    }
    let c = b.build().expect("a cluster");
    let results = c.map(vec![Task::python("standby_probe:where", json!([]))]);
    match &results[0].outcome {
        Outcome::Succeeded { value, .. } => value.clone(),
        other => panic!("the task failed: {other:?}"),
    }
}

fn module_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a folder");
    std::fs::write(dir.path().join("standby_probe.py"), MODULE).expect("the module");
    dir
}

#[test]
fn a_cluster_takes_the_standby_and_gives_its_workers_the_pools_environment() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let python = fixtures().venv_numpy;
    let dir = module_dir();
    let pid = standby_for(&python);
    let got = run_where(&python, dir.path(), &[]);
    // Started with -S: this worker was forked from the standby.
    assert_eq!(got["no_site"], 1, "{got}");
    assert_eq!(got["late"], "set after the standby started", "{got}");
    assert_eq!(got["omp"], "3", "{got}");
    assert_eq!(got["mark"], "1", "{got}");
    let cwd = std::env::current_dir().expect("a working folder");
    assert_eq!(got["cwd"], cwd.to_string_lossy().as_ref(), "{got}");
    assert!(
        got["numpy"].as_str().is_some_and(|v| !v.is_empty()),
        "{got}"
    );
    // Taken: none waits any more, and the cluster stopped it with itself.
    assert_eq!(standby_pid(&python), None);
    wait_gone(pid, "the standby outlived its cluster");
}

#[test]
fn a_standby_started_under_other_loader_variables_is_not_taken() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let python = fixtures().venv_numpy;
    let dir = module_dir();
    let pid = standby_for(&python);
    let ld = "/nonexistent-caiclust-standby-test";
    let got = run_where(&python, dir.path(), &[("LD_LIBRARY_PATH", ld)]);
    // A server started for the cluster, with the loader variable at exec.
    assert_eq!(got["no_site"], 0, "{got}");
    assert_eq!(got["ld"], ld, "{got}");
    assert_eq!(got["omp"], "3", "{got}");
    // The standby that did not fit was stopped, not left waiting.
    assert_eq!(standby_pid(&python), None);
    wait_gone(pid, "the unfit standby is still running");
}

#[test]
fn stop_standbys_leaves_none_and_one_waits_per_interpreter() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let python = fixtures().venv_numpy;
    let pid = standby_for(&python);
    // Asking again while one waits starts no second one.
    assert!(prestart_python(&python, &[]));
    assert_eq!(standby_for(&python), pid);
    assert_eq!(stop_standbys(), 1);
    assert_eq!(standby_pid(&python), None);
    assert!(!alive(pid), "the standby {pid} is still running");
    assert_eq!(stop_standbys(), 0);
}
