//! Runtime queries of libraries that rely on their dependencies being
//! loaded already (issue #14, point 8): numpy 1.x's bundled OpenBLAS needs
//! the `libgfortran-<hash>.so.5.0.0` beside it and has no RUNPATH; the
//! process found it through the extension module's inherited `DT_RPATH`.
//! The query child must load it the way the process did, and answer what
//! threadpoolctl, run in a real interpreter, reports.
//!
//! Both live paths are covered (`--import` and `--pid`), plus small C
//! libraries compiled here for the failure cases: a dependency that cannot
//! be loaded, or whose constructor crashes or hangs, is reported naming the
//! library and the dependency, within the deadline.
//!
//! The query helper is this test program itself: started with the
//! arguments of [`helper_args`], it runs only [`query_helper`], which
//! serves the query (and does nothing in a normal test run).

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caiclust_probe::{
    probe_pid, probe_python_imports, query_runtime, query_runtime_after, Facts, LiveOptions,
    LoadFirst, ProbeOptions, RuntimeAnswer, RuntimeQuery, RuntimeQueryOptions, Vendor,
};
use caiclust_tests::{fixtures, run_threadpoolctl, ThreadpoolInfo};

/// The deadline for the compiled libraries' queries.
const DEADLINE: Duration = Duration::from_secs(2);
/// What a query may take beyond its deadline (kill, reap, drain pipes).
const MARGIN: Duration = Duration::from_secs(3);

/// Serves a runtime query when this program was started as the helper;
/// otherwise returns at once (a normal test run).
#[test]
fn query_helper() {
    caiclust_probe::serve_runtime_query_if_requested();
}

/// This test program, running only [`query_helper`].
fn helper() -> PathBuf {
    std::env::current_exe().expect("the test program's path")
}

fn helper_args() -> Vec<std::ffi::OsString> {
    // `--quiet`: libtest prints no unfinished "test query_helper ... "
    // line in front of the first protocol line.
    [
        "query_helper",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ]
    .iter()
    .map(Into::into)
    .collect()
}

fn live_options() -> LiveOptions {
    LiveOptions {
        query_helper: Some(helper()),
        query_helper_args: helper_args(),
        query_deadline: Duration::from_secs(30),
        ..LiveOptions::default()
    }
}

fn query_options(deadline: Duration) -> RuntimeQueryOptions {
    let mut options = RuntimeQueryOptions::new(helper());
    options.helper_args = helper_args();
    options.deadline = deadline;
    options
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ------------------------------------------------------ real OpenBLAS

/// Every OpenBLAS threadpoolctl reports after importing `modules` must be
/// in `facts`, answering its runtime query exactly as threadpoolctl does.
fn assert_openblas_answers_as_threadpoolctl(python: &Path, modules: &[&str], facts: &Facts) {
    let oracle: Vec<ThreadpoolInfo> = run_threadpoolctl(python, modules)
        .into_iter()
        .filter(|p| p.internal_api == "openblas")
        .collect();
    assert!(!oracle.is_empty(), "threadpoolctl reports no OpenBLAS");
    for pool in &oracle {
        let path = canonical(&pool.filepath);
        let lib = facts
            .libraries_of(Vendor::Openblas)
            .find(|l| canonical(&l.path) == path)
            .unwrap_or_else(|| panic!("{} is not among the libraries", path.display()));
        let answer = lib
            .runtime
            .as_ref()
            .unwrap_or_else(|| panic!("{} was not asked", path.display()));
        assert_same_as_threadpoolctl(answer, pool);
    }
}

fn assert_same_as_threadpoolctl(answer: &RuntimeAnswer, pool: &ThreadpoolInfo) {
    let at = pool.filepath.display();
    assert_eq!(answer.error, None, "{at}: {answer:#?}");
    assert_eq!(
        answer.num_threads,
        Some(pool.num_threads as usize),
        "{at}: num_threads"
    );
    assert_eq!(answer.version, pool.version, "{at}: version");
    assert_eq!(
        answer.threading_layer.map(|l| l.threadpoolctl_name()),
        pool.threading_layer.as_deref(),
        "{at}: threading layer"
    );
    assert_eq!(answer.corename, pool.architecture, "{at}: architecture");
}

fn import_and_compare(python: &Path, modules: &[&str]) {
    let python = python.to_path_buf();
    let options = ProbeOptions {
        python: Some(python.clone()),
        ..ProbeOptions::default()
    };
    let names: Vec<String> = modules.iter().map(|m| (*m).to_owned()).collect();
    let facts = probe_python_imports(&options, &names, &live_options())
        .unwrap_or_else(|e| panic!("probe {} importing {modules:?}: {e}", python.display()));
    assert_openblas_answers_as_threadpoolctl(&python, modules, &facts);
}

#[test]
fn numpy1_openblas_answers_after_import() {
    import_and_compare(&fixtures().venv_numpy1, &["numpy"]);
}

/// OpenCV 4.10's bundled OpenBLAS (`libopenblas-r0-f650aae0.3.3.so`) needs
/// `libgfortran-91cc3cb1.so.3.0.0` beside it, without RUNPATH either.
#[test]
fn opencv4_openblas_answers_after_import() {
    import_and_compare(&fixtures().venv_numpy1, &["numpy", "cv2"]);
}

/// A running interpreter that imported `modules`; killed when dropped.
struct Running(std::process::Child);

impl Running {
    fn start(python: &Path, modules: &[&str]) -> Self {
        let script = format!(
            "import sys, {}\nprint('ready', flush=True)\nsys.stdin.read()",
            modules.join(", ")
        );
        let mut child = Command::new(python)
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(
            line.trim(),
            "ready",
            "{} did not import {modules:?}",
            python.display()
        );
        Self(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_and_compare(python: &Path, modules: &[&str]) {
    let running = Running::start(python, modules);
    let facts = probe_pid(running.0.id(), &live_options())
        .unwrap_or_else(|e| panic!("probe pid {}: {e}", running.0.id()));
    assert_openblas_answers_as_threadpoolctl(python, modules, &facts);
}

#[test]
fn numpy1_openblas_answers_for_a_running_process() {
    run_and_compare(&fixtures().venv_numpy1, &["numpy"]);
}

#[test]
fn opencv4_openblas_answers_for_a_running_process() {
    run_and_compare(&fixtures().venv_numpy1, &["numpy", "cv2"]);
}

// ------------------------------------------------ compiled libraries

/// The dependency's SONAME: hash-renamed, as auditwheel names them.
const DEP: &str = "libdep-0a1b2c3d.so.5.0.0";

/// A library exporting `dep_threads`, with `constructor` as the body of its
/// constructor.
fn dep_source(constructor: &str) -> String {
    format!(
        "#include <unistd.h>\n#include <stddef.h>\n\
         __attribute__((constructor)) static void on_load(void) {{ {constructor} }}\n\
         int dep_threads(void) {{ return 3; }}\n"
    )
}

/// An OpenBLAS stand-in whose thread count comes from its dependency.
const BLAS_SOURCE: &str = "int dep_threads(void);\n\
    int openblas_get_num_threads(void) { return dep_threads(); }\n";

fn cc(dir: &Path, source: &str, output: &str, extra: &[&str]) -> PathBuf {
    let src = dir.join(format!("{output}.c"));
    std::fs::write(&src, source).expect("write the C source");
    let out = dir.join(output);
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .args(extra)
        .status()
        .expect("run cc (gcc is needed to build the test libraries)");
    assert!(status.success(), "cc {output} failed");
    out
}

/// `libblas_needs_dep.so`, which needs [`DEP`] by name and has no RUNPATH,
/// and the dependency (in the same folder) with `constructor`.
fn build_pair(constructor: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let soname = format!("-Wl,-soname,{DEP}");
    let dep = cc(dir.path(), &dep_source(constructor), DEP, &[&soname]);
    let link = format!("-L{}", dir.path().display());
    let needs = format!("-l:{DEP}");
    let lib = cc(
        dir.path(),
        BLAS_SOURCE,
        "libblas_needs_dep.so",
        &[&link, &needs],
    );
    (dir, lib, dep)
}

fn ask(lib: &Path, load_first: &[LoadFirst]) -> RuntimeAnswer {
    let start = Instant::now();
    let answer = query_runtime_after(
        &RuntimeQuery::new(lib, Vendor::Openblas),
        load_first,
        &query_options(DEADLINE),
    );
    assert!(
        start.elapsed() < DEADLINE + MARGIN,
        "took {:?}",
        start.elapsed()
    );
    answer
}

fn error_of(answer: &RuntimeAnswer) -> &str {
    answer
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("no error: {answer:#?}"))
}

#[test]
fn a_dependency_loaded_first_lets_the_library_answer() {
    let (_dir, lib, dep) = build_pair("");
    let answer = ask(
        &lib,
        &[LoadFirst {
            name: DEP.into(),
            path: dep,
        }],
    );
    assert_eq!(answer.error, None, "{answer:#?}");
    assert_eq!(answer.num_threads, Some(3));
}

#[test]
fn a_dependency_not_loaded_first_is_named_with_the_library() {
    let (_dir, lib, _dep) = build_pair("");
    let answer = query_runtime(
        &RuntimeQuery::new(&lib, Vendor::Openblas),
        &query_options(DEADLINE),
    );
    let error = error_of(&answer);
    assert!(error.starts_with("cannot load: "), "{error}");
    assert!(error.contains(DEP), "{error}");
    assert!(error.contains(&*lib.to_string_lossy()), "{error}");
}

#[test]
fn a_dependency_that_cannot_be_loaded_is_named_with_the_library() {
    let (dir, lib, _dep) = build_pair("");
    let missing = dir.path().join("gone").join(DEP);
    let answer = ask(
        &lib,
        &[LoadFirst {
            name: DEP.into(),
            path: missing.clone(),
        }],
    );
    let error = error_of(&answer);
    assert!(error.starts_with("cannot load: "), "{error}");
    assert!(error.contains(&*missing.to_string_lossy()), "{error}");
    assert!(error.contains(&*lib.to_string_lossy()), "{error}");
    assert!(error.contains("No such file or directory"), "{error}");
}

#[test]
fn a_dependency_crashing_while_loaded_is_named() {
    let (_dir, lib, dep) = build_pair("volatile int *volatile p = NULL; *p = 1;");
    let answer = ask(
        &lib,
        &[LoadFirst {
            name: DEP.into(),
            path: dep,
        }],
    );
    let error = error_of(&answer);
    assert!(
        error.starts_with(&format!(
            "crashed with signal {} (SIGSEGV) while loading its dependency {DEP}",
            libc::SIGSEGV
        )),
        "{error}"
    );
}

#[test]
fn a_dependency_hanging_while_loaded_is_killed_and_named() {
    let (_dir, lib, dep) = build_pair("for (;;) pause();");
    let answer = ask(
        &lib,
        &[LoadFirst {
            name: DEP.into(),
            path: dep,
        }],
    );
    assert_eq!(
        answer.error.as_deref(),
        Some(format!("timed out after 2.0 s (killed) while loading its dependency {DEP}").as_str())
    );
}
