//! Acceptance (live probing): `caiclust probe --pid` and `--import` report
//! exactly what threadpoolctl sees inside the process, with equal thread
//! counts, versions and threading layers; MKL's run-time layer and Debian's
//! BLIS builds are named correctly.
//!
//! Unix only: live Linux Pythons from the fixture venvs.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use caiclust_core::probe::{
    query_runtime, Api, Facts, Library, RuntimeQuery, RuntimeQueryOptions, ThreadingLayer, Vendor,
};
use caiclust_tests::{
    dpkg_owner, fixtures, parse_threadpoolctl, run_threadpoolctl_with_env, ThreadpoolInfo,
};

fn caiclust() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caiclust"))
}

/// A Python process that imports the modules, prints threadpoolctl's view
/// of itself, and waits for its stdin to close.
struct Target {
    child: Child,
    oracle: Vec<ThreadpoolInfo>,
}

impl Target {
    fn start(python: &Path, modules: &[&str], env: &[(&str, &str)]) -> Target {
        let script = format!(
            "import sys, json\n{}\nimport threadpoolctl\nprint(json.dumps(threadpoolctl.threadpool_info()), flush=True)\nsys.stdin.read()\n",
            modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("\n")
        );
        let mut cmd = Command::new(python);
        cmd.arg("-c")
            .arg(script)
            .env_remove("OMP_NUM_THREADS")
            .env_remove("OPENBLAS_NUM_THREADS")
            .env_remove("LD_LIBRARY_PATH")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start python");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read threadpoolctl output");
        let oracle = parse_threadpoolctl(&line).expect("threadpoolctl JSON");
        Target { child, oracle }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn probe_json(args: &[&str]) -> Facts {
    let out = caiclust()
        .arg("probe")
        .arg("--json")
        .args(args)
        .output()
        .expect("run caiclust");
    assert!(
        out.status.success(),
        "caiclust {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Facts::from_json(&String::from_utf8_lossy(&out.stdout)).expect("facts")
}

/// BLAS and OpenMP runtimes as threadpoolctl counts them.
fn pools(facts: &Facts) -> Vec<&Library> {
    facts
        .libraries
        .iter()
        .filter(|l| l.format.is_some() && l.forwards_to.is_none())
        .filter(|l| l.apis.iter().any(|a| matches!(a, Api::Blas | Api::Openmp)))
        .filter(|l| l.vendor.value.threadpoolctl_internal_api().is_some())
        .collect()
}

fn assert_matches_oracle(facts: &Facts, oracle: &[ThreadpoolInfo]) {
    let mut ours: Vec<PathBuf> = pools(facts).iter().map(|l| l.path.clone()).collect();
    let mut theirs: Vec<PathBuf> = oracle
        .iter()
        .map(|p| std::fs::canonicalize(&p.filepath).expect("exists"))
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "exactly the libraries threadpoolctl lists");
    for pool in oracle {
        let real = std::fs::canonicalize(&pool.filepath).expect("exists");
        let lib = facts
            .libraries
            .iter()
            .find(|l| l.path == real)
            .expect("listed");
        let rt = lib
            .runtime
            .as_ref()
            .unwrap_or_else(|| panic!("{} was asked at run time", real.display()));
        assert_eq!(rt.error, None, "{}", real.display());
        assert_eq!(
            rt.num_threads,
            Some(pool.num_threads as usize),
            "num_threads of {}",
            real.display()
        );
        if let Some(v) = &pool.version {
            assert_eq!(
                lib.version.as_ref().map(|c| c.value.as_str()),
                Some(v.as_str()),
                "{}",
                real.display()
            );
        }
        if let Some(layer) = &pool.threading_layer {
            assert_eq!(
                lib.threading_layer
                    .as_ref()
                    .map(|c| c.value.threadpoolctl_name()),
                Some(layer.as_str()),
                "{}",
                real.display()
            );
        }
        assert!(
            rt.disagreements.is_empty(),
            "{}: {:?}",
            real.display(),
            rt.disagreements
        );
    }
}

#[test]
fn pid_matches_threadpoolctl_inside_the_process() {
    let fx = fixtures();
    for env in [
        vec![],
        vec![("OMP_NUM_THREADS", "1")],
        vec![("OPENBLAS_NUM_THREADS", "1")],
    ] {
        let target = Target::start(&fx.venv_pypi, &["numpy", "scipy", "sklearn", "cv2"], &env);
        assert!(target.oracle.len() >= 4);
        if !env.is_empty() {
            assert!(
                target.oracle.iter().any(|p| p.num_threads == 1),
                "the variable took effect: {env:?}"
            );
        }
        let facts = probe_json(&["--pid", &target.child.id().to_string()]);
        assert_matches_oracle(&facts, &target.oracle);
        let process = facts.process.as_ref().expect("process facts");
        for (k, v) in &env {
            assert_eq!(process.initial_env.get(*k).map(String::as_str), Some(*v));
        }
        assert!(process
            .python
            .as_ref()
            .is_some_and(|p| p.value.contains("3.11")));
    }
}

#[test]
fn import_mode_reports_python_facts_without_threadpoolctl() {
    let fx = fixtures();
    let python = fx.venv_pypi.to_string_lossy().into_owned();
    let facts = probe_json(&["--python", &python, "--import", "numpy,scipy,sklearn,cv2"]);
    let rt = facts
        .process
        .as_ref()
        .and_then(|p| p.python_runtime.as_ref())
        .expect("python runtime facts");
    assert_eq!(rt.imported, ["numpy", "scipy", "sklearn", "cv2"]);
    assert!(rt.import_errors.is_empty(), "{:?}", rt.import_errors);
    // Oracles: the interpreter's own answers in a separate run.
    let out = Command::new(&fx.venv_pypi)
        .args([
            "-c",
            "import cv2, multiprocessing as m, threading; print(cv2.getNumThreads()); print(m.get_start_method()); print(threading.active_count())",
        ])
        .output()
        .expect("oracle");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        rt.cv2_num_threads.map(|n| n.to_string()).as_deref(),
        Some(lines[0])
    );
    assert_eq!(rt.default_start_method.as_deref(), Some(lines[1]));
    assert_eq!(
        rt.active_threads.map(|n| n.to_string()).as_deref(),
        Some(lines[2])
    );
    // threadpoolctl is not needed by --import, but it is the oracle here.
    let oracle =
        caiclust_tests::run_threadpoolctl(&fx.venv_pypi, &["numpy", "scipy", "sklearn", "cv2"]);
    assert_matches_oracle(&facts, &oracle);
}

#[test]
fn import_of_a_missing_module_is_reported_not_fatal() {
    let fx = fixtures();
    let python = fx.venv_pypi.to_string_lossy().into_owned();
    let facts = probe_json(&["--python", &python, "--import", "numpy,no_such_module_xyz"]);
    let rt = facts
        .process
        .as_ref()
        .and_then(|p| p.python_runtime.as_ref())
        .expect("facts");
    assert_eq!(rt.imported, ["numpy"]);
    assert!(rt
        .import_errors
        .get("no_such_module_xyz")
        .is_some_and(|e| e.contains("ModuleNotFoundError")));
    assert!(facts
        .libraries
        .iter()
        .any(|l| l.vendor.value == Vendor::Openblas));
    // A name that is not a module name is refused before anything runs.
    let out = caiclust()
        .args(["probe", "--python", &python, "--import", "os;rm"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

/// threadpoolctl's view of MKL loaded into a Python process with `env`.
fn mkl_oracle(python: &Path, mkl_rt: &Path, layer: &str) -> ThreadpoolInfo {
    let out = Command::new(python)
        .args([
            "-c",
            &format!(
                "import ctypes, json, threadpoolctl; ctypes.CDLL({:?}); print(json.dumps(threadpoolctl.threadpool_info()))",
                mkl_rt.to_string_lossy()
            ),
        ])
        .env("MKL_THREADING_LAYER", layer)
        .output()
        .expect("oracle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_threadpoolctl(&String::from_utf8_lossy(&out.stdout))
        .expect("json")
        .into_iter()
        .find(|p| p.internal_api == "mkl")
        .expect("threadpoolctl sees MKL")
}

#[test]
fn mkl_threading_layer_follows_mkl_threading_layer() {
    let fx = fixtures();
    let lib_dir = fx
        .venv_mkl
        .parent()
        .and_then(Path::parent)
        .expect("venv")
        .join("lib");
    let mkl_rt = std::fs::read_dir(&lib_dir)
        .expect("venv lib")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libmkl_rt.so"))
        })
        .expect("libmkl_rt.so.* in the MKL venv");
    for (layer, expected) in [
        ("INTEL", ThreadingLayer::Intel),
        ("GNU", ThreadingLayer::Gnu),
        ("SEQUENTIAL", ThreadingLayer::Sequential),
    ] {
        let oracle = mkl_oracle(&fx.venv_mkl, &mkl_rt, layer);
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        env.insert("MKL_THREADING_LAYER".into(), layer.into());
        let answer = query_runtime(
            &RuntimeQuery {
                library: mkl_rt.clone(),
                vendor: Vendor::Mkl,
                symbol_prefix: None,
                symbol_suffix: None,
            },
            &RuntimeQueryOptions {
                helper: PathBuf::from(env!("CARGO_BIN_EXE_caiclust")),
                helper_args: Vec::new(),
                env,
                affinity: None,
                deadline: Duration::from_secs(30),
            },
        );
        assert_eq!(answer.error, None, "{layer}");
        assert_eq!(answer.threading_layer, Some(expected), "{layer}");
        assert_eq!(
            answer.threading_layer.map(|l| l.threadpoolctl_name()),
            oracle.threading_layer.as_deref(),
            "{layer} vs threadpoolctl"
        );
        assert_eq!(answer.version, oracle.version, "{layer}");
        assert_eq!(
            answer.num_threads,
            Some(oracle.num_threads as usize),
            "{layer}"
        );
    }
}

#[test]
fn debian_blis_builds_are_named_though_threadpoolctl_skips_them() {
    let fx = fixtures();
    let debian = fx.debian_python.to_string_lossy().into_owned();
    for (flavour, layer) in [
        ("blis-openmp", ThreadingLayer::Openmp),
        ("blis-pthread", ThreadingLayer::Pthreads),
    ] {
        let dir = format!("/usr/lib/{}/{flavour}", fx.multiarch);
        // threadpoolctl does not see it (that is the point).
        let oracle = run_threadpoolctl_with_env(
            &fx.debian_python,
            &["numpy"],
            &[("LD_LIBRARY_PATH", dir.as_str())],
        );
        assert!(
            oracle.iter().all(|p| p.internal_api != "blis"),
            "{oracle:?}"
        );
        for live in [false, true] {
            let mut cmd = caiclust();
            cmd.args(["probe", "--json", "--python", &debian])
                .env("LD_LIBRARY_PATH", &dir);
            if live {
                cmd.args(["--import", "numpy"]);
            }
            let out = cmd.output().expect("run");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let facts = Facts::from_json(&String::from_utf8_lossy(&out.stdout)).expect("facts");
            let blis: Vec<&Library> = facts
                .libraries
                .iter()
                .filter(|l| l.vendor.value == Vendor::Blis)
                .collect();
            assert_eq!(blis.len(), 1, "{flavour} live={live}: {blis:#?}");
            let lib = blis[0];
            assert!(lib.path.starts_with(&dir), "{}", lib.path.display());
            assert_eq!(dpkg_owner(&lib.path), format!("libblis4-{}", &flavour[5..]));
            assert_eq!(
                lib.threading_layer.as_ref().map(|c| c.value),
                Some(layer),
                "{flavour} live={live}"
            );
        }
    }
}

#[test]
fn import_mode_needs_no_threadpoolctl() {
    // The numba venv has numpy and numba but no threadpoolctl.
    let fx = fixtures();
    let has_tpc = Command::new(&fx.venv_numba)
        .args(["-c", "import threadpoolctl"])
        .output()
        .expect("python")
        .status
        .success();
    assert!(!has_tpc, "this test needs a venv without threadpoolctl");
    let python = fx.venv_numba.to_string_lossy().into_owned();
    let facts = probe_json(&["--python", &python, "--import", "numpy,numba"]);
    let rt = facts
        .process
        .as_ref()
        .and_then(|p| p.python_runtime.as_ref())
        .expect("facts");
    assert_eq!(rt.imported, ["numpy", "numba"]);
    let ob = facts
        .libraries
        .iter()
        .find(|l| l.vendor.value == Vendor::Openblas)
        .expect("numpy's OpenBLAS is loaded");
    let answer = ob.runtime.as_ref().expect("asked at run time");
    assert_eq!(answer.error, None);
    assert!(answer.num_threads.is_some_and(|n| n >= 1));
}

#[test]
fn pid_errors_are_clear() {
    let out = caiclust()
        .args(["probe", "--pid", "4294967295"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no process with pid 4294967295"), "{err}");
    // A process that is gone by the time it is read.
    let mut child = Command::new("true").spawn().expect("spawn");
    let pid = child.id();
    child.wait().expect("reap");
    let out = caiclust()
        .args(["probe", "--pid", &pid.to_string()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&pid.to_string()));
}
