//! core against the hang of HAZARDS H01, with real runtimes: a parent that
//! used GNU OpenMP, then runs tasks in workers. Three workloads: PyPI
//! scikit-learn (its vendored libgomp), Debian numpy on openblas-openmp
//! (through `LD_LIBRARY_PATH`, see `hazard::install`),
//! and a C library built here with `gcc -fopenmp`, loaded with ctypes.
//!
//! For each: Python's fork Pool hangs (shown with a timeout); a cluster
//! with the auto plan completes with the results a single plain process
//! computes; and with fork forced, the watchdog reports the hang and its
//! cause (CC001) within its deadline and the run ends with the failures.
//!
//! Unix only: fork, `gcc -fopenmp` and the Linux fixture interpreters.
#![cfg(unix)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caiclust_core::{Cluster, Failure, Outcome, StartMethod, Task};
use caiclust_tests::hazard::{self, GOMP, OPENBLAS, SKLEARN};
use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};
use serde_json::{json, Value};

struct Workload {
    python: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

/// `module` (one of [`hazard`]'s) defines `task(i)` and uses the runtime at
/// import, as the parent of a fork would have.
fn workload(python: &Path, module: &'static str) -> Workload {
    let dir = tempfile::tempdir().unwrap();
    let env = hazard::install(dir.path(), module);
    Workload {
        python: python.to_path_buf(),
        env,
        dir,
    }
}

/// What one plain process computes: the oracle.
fn expected(w: &Workload, n: usize) -> Vec<Value> {
    let out = Command::new(&w.python)
        .arg("-c")
        .arg(format!(
            "import json, hazard; print(json.dumps([hazard.task(i) for i in range({n})]))"
        ))
        .envs(w.env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Python's own way: import the module in the parent, then a fork Pool.
/// `true` when it finished within `timeout`, `false` when it hung.
fn python_fork_pool_finishes(w: &Workload, timeout: Duration) -> bool {
    let script = "import multiprocessing as mp, hazard\n\
                  with mp.get_context('fork').Pool(2) as p:\n    print(p.map(hazard.task, range(4)))\n";
    let mut child = Command::new(&w.python)
        .arg("-c")
        .arg(script)
        .envs(w.env.iter().cloned())
        .env_remove("OMP_NUM_THREADS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert!(st.success(), "the fork Pool failed: {out}");
            return true;
        }
        if t0.elapsed() > timeout {
            caiclust_core::tree::signal_tree(child.id(), caiclust_core::tree::StopSignal::Kill);
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

/// The facts of `w`'s interpreter as its workers will run it: with the
/// workload's environment (`LD_LIBRARY_PATH` included), which the
/// builder's own probe, reading this process's environment, would miss.
fn facts_for(w: &Workload) -> caiclust_core::probe::Facts {
    let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    env.extend(w.env.iter().cloned());
    caiclust_core::probe::probe_python(&caiclust_core::probe::ProbeOptions {
        python: Some(w.python.clone()),
        env: Some(env),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("probe {}: {e}", w.python.display()))
}

fn auto_plan_completes(w: &Workload) {
    let want = expected(w, 6);
    let tag = unique_tag("hazard-auto");
    {
        let mut b = Cluster::builder()
            .auto(true)
            .python(&w.python)
            .facts(facts_for(w))
            .env(TAG_VAR, &tag);
        for (k, v) in &w.env {
            b = b.env(k, v);
        }
        let cluster = b.build().unwrap();
        assert_ne!(
            cluster.settings().start_method,
            StartMethod::Fork,
            "the rules see the hazard in {}",
            w.python.display()
        );
        let results = cluster.map((0..6).map(|i| Task::python("hazard:task", json!([i]))));
        let got: Vec<Value> = results
            .iter()
            .map(|r| {
                r.value()
                    .cloned()
                    .unwrap_or_else(|| panic!("{:?}", r.outcome))
            })
            .collect();
        assert!(
            got.iter().zip(&want).all(|(a, b)| close(a, b)),
            "{got:?} != {want:?}"
        );
    }
    assert!(orphans_after(&tag, Duration::from_secs(3)).is_empty());
}

fn forced_fork_is_caught_by_the_watchdog(w: &Workload) {
    let tag = unique_tag("hazard-fork");
    let stall = Duration::from_secs(3);
    {
        let mut b = Cluster::builder()
            .workers(2)
            .start_method(StartMethod::Fork)
            .force_fork(true)
            .python(&w.python)
            .preload("hazard")
            .stall_after(stall)
            .timeout(Duration::from_secs(45))
            .grace(Duration::from_millis(300))
            .env(TAG_VAR, &tag);
        for (k, v) in &w.env {
            b = b.env(k, v);
        }
        let cluster = b.build().unwrap();
        let t0 = Instant::now();
        let results = cluster.map((0..2).map(|i| Task::python("hazard:task", json!([i]))));
        let took = t0.elapsed();
        let notices = cluster.notices();
        assert!(
            took < Duration::from_secs(40),
            "the run took {took:?}: {:?}; {notices:?}",
            results.iter().map(|r| &r.outcome).collect::<Vec<_>>()
        );
        for r in &results {
            match &r.outcome {
                Outcome::Failed {
                    failure: Failure::Hung { after_ms, cause },
                } => {
                    assert!(cause.contains("CC001"), "{cause}");
                    assert!(*after_ms >= stall.as_millis() as u64);
                    assert!(*after_ms < 30_000, "{after_ms}");
                }
                other => panic!("expected the watchdog to stop task {}: {other:?}", r.id),
            }
        }
        assert!(
            notices
                .iter()
                .any(|n| n.message.contains("likely cause") && n.message.contains("CC001")),
            "{notices:?}"
        );
    }
    assert!(orphans_after(&tag, Duration::from_secs(3)).is_empty());
}

fn check(w: Workload) {
    assert!(
        !python_fork_pool_finishes(&w, Duration::from_secs(10)),
        "Python's fork Pool was expected to hang on {}",
        w.dir.path().display()
    );
    auto_plan_completes(&w);
    forced_fork_is_caught_by_the_watchdog(&w);
}

#[test]
fn pypi_scikit_learn_gnu_openmp() {
    check(workload(&fixtures().venv_pypi, SKLEARN));
}

#[test]
fn debian_numpy_on_openblas_openmp() {
    check(workload(&fixtures().debian_python, OPENBLAS));
}

#[test]
fn c_library_built_with_gcc_fopenmp() {
    check(workload(&fixtures().debian_python, GOMP));
}

/// A command that runs Python's own fork Pool after using OpenMP (how a
/// CaImAn script is launched): the watchdog judges its forked children as
/// forked, names CC001, and stops the whole tree.
#[test]
fn a_command_whose_fork_pool_hangs_is_diagnosed() {
    let w = workload(&fixtures().venv_pypi, SKLEARN);
    let tag = unique_tag("hazard-command");
    {
        let mut b = Cluster::builder()
            .workers(1)
            .start_method(StartMethod::Spawn)
            .stall_after(Duration::from_secs(3))
            .timeout(Duration::from_secs(45))
            .grace(Duration::from_millis(300))
            .env(TAG_VAR, &tag);
        for (k, v) in &w.env {
            b = b.env(k, v);
        }
        let cluster = b.build().unwrap();
        let script = "import multiprocessing as mp, hazard\n\
                      with mp.get_context('fork').Pool(2) as p:\n    print(p.map(hazard.task, range(4)))\n";
        let t0 = Instant::now();
        let results = cluster.map([Task::command([
            w.python.to_string_lossy().as_ref(),
            "-c",
            script,
        ])]);
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "{:?} {:?} {:?}",
            t0.elapsed(),
            results[0].outcome,
            cluster.notices()
        );
        match &results[0].outcome {
            Outcome::Failed {
                failure: Failure::Hung { cause, .. },
            } => {
                assert!(
                    cause.contains("in forked child") && cause.contains("CC001"),
                    "{cause}"
                );
            }
            other => panic!("expected the watchdog to stop the command: {other:?}"),
        }
    }
    let left = orphans_after(&tag, Duration::from_secs(3));
    assert!(left.is_empty(), "left behind: {left:?}");
}
