//! The start-method hook of `caiclust run`
//! (`core/src/program/sitecustomize.py`), tested with real interpreters
//! and real processes by `tests/python/test_startup_hook.py`: the PyPI
//! venv's CPython and Debian's (whose own `sitecustomize` must still
//! run). Each must report "N passed, 0 failed".
//!
//! Unix only: the fixture venvs' Linux Pythons.
#![cfg(unix)]

use std::path::Path;
use std::process::Command;

use caiclust_tests::fixtures;

#[test]
fn the_hook_changes_the_default_forces_on_request_and_chains_sitecustomize() {
    let fx = fixtures();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hook = root.join("../core/src/program/sitecustomize.py");
    let script = root.join("tests/python/test_startup_hook.py");
    let out = Command::new(&fx.venv_pypi)
        .arg(&script)
        .arg(&hook)
        .arg(&fx.venv_pypi)
        .arg(&fx.debian_python)
        .env_remove("PYTHONPATH")
        .env_remove("CAICLUST_START_METHOD")
        .env_remove("CAICLUST_START_METHOD_FORCE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .unwrap_or("");
    assert!(last.ends_with(" 0 failed"), "{stdout}\n{stderr}");
    let passed: usize = last
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 10, "{last}");
}
