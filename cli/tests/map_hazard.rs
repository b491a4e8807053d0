//! `caiclust map` on the hang of HAZARDS H01 with real runtimes: the module
//! uses GNU OpenMP at import (as the parent of Python's fork Pool would),
//! then every task uses it again. With the auto plan the run completes with
//! the results a plain single process computes; with fork forced, the
//! watchdog names the cause (CC001) and the run ends with the failures
//! reported. (tests/tests/core_hazards.rs shows Python's fork Pool hanging
//! on the same workloads.)
//!
//! Unix only: the fork hazards of Linux Pythons and OpenMP.
#![cfg(unix)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use caiclust_tests::fixtures;
use caiclust_tests::hazard::{self, GOMP, OPENBLAS, SKLEARN};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_caiclust");

fn setup(module: &str) -> (tempfile::TempDir, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let env = hazard::install(dir.path(), module);
    (dir, env)
}

fn oracle(python: &Path, env: &[(String, String)], n: usize) -> Vec<Value> {
    let out = Command::new(python)
        .arg("-c")
        .arg(format!(
            "import json, hazard; print(json.dumps([hazard.task(str(i)) for i in range({n})]))"
        ))
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn auto_plan_completes(python: &Path, module: &str) {
    let (_dir, env) = setup(module);
    let want = oracle(python, &env, 4);
    let out = Command::new(BIN)
        .args(["map", "--no-bar", "-k", "--python"])
        .arg(python)
        .args(["-f", "hazard:task", ":::", "0", "1", "2", "3"])
        .envs(env.iter().cloned())
        .env_remove("OMP_NUM_THREADS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["value"].clone())
        .collect();
    assert_eq!(got.len(), 4, "{stderr}");
    for (g, w) in got.iter().zip(&want) {
        let close = match (g.as_f64(), w.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
            _ => g == w,
        };
        assert!(close, "{got:?} != {want:?}");
    }
}

#[test]
fn auto_plan_completes_pypi_scikit_learn() {
    auto_plan_completes(&fixtures().venv_pypi, SKLEARN);
}

#[test]
fn auto_plan_completes_debian_openblas_openmp() {
    auto_plan_completes(&fixtures().debian_python, OPENBLAS);
}

#[test]
fn auto_plan_completes_gcc_fopenmp_library() {
    auto_plan_completes(&fixtures().debian_python, GOMP);
}

#[test]
fn forced_fork_ends_with_the_hangs_reported_and_their_cause() {
    let python = fixtures().venv_pypi;
    let (_dir, env) = setup(SKLEARN);
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .args(["map", "--no-auto", "-j", "2", "--no-bar", "--python"])
        .arg(&python)
        .args([
            "-f",
            "hazard:task",
            "--start-method",
            "fork",
            "--force-fork",
            "--stall",
            "3",
            "--timeout",
            "120",
            ":::",
            "0",
            "1",
        ])
        .envs(env.iter().cloned())
        .env_remove("OMP_NUM_THREADS")
        .output()
        .unwrap();
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(took < Duration::from_secs(60), "{took:?}: {stderr}");
    assert_eq!(out.status.code(), Some(2), "two tasks failed: {stderr}");
    assert!(stderr.contains("CC001"), "{stderr}");
    assert!(stderr.contains("hung"), "{stderr}");
}
