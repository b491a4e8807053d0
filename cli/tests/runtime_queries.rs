//! Runtime queries, run through the real `caiclust` binary as the helper.
//!
//! Two halves. Hostile libraries (C sources in `tests/fixtures/hostile/`,
//! compiled here with `cc`) crash, hang or exit in their constructors or
//! query functions: each query must come back with a clear error within its
//! deadline, nothing may be loaded into this process, and no query child may
//! be left running. Real libraries (the PyPI venv's OpenBLAS copies and
//! libgomp, Debian's OpenMP and pthreads OpenBLAS) must answer what
//! threadpoolctl, run in a real Python process with the same environment,
//! reports.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use caiclust_probe::{
    query_runtime, RuntimeAnswer, RuntimeQuery, RuntimeQueryOptions, Vendor, RUNTIME_QUERY_ENV,
};
use caiclust_tests::{
    fixtures, parse_threadpoolctl, run_threadpoolctl, run_threadpoolctl_with_env, workspace_root,
    ThreadpoolInfo,
};

/// The deadline given to queries of hostile libraries.
const HOSTILE_DEADLINE: Duration = Duration::from_secs(2);
/// What a query may take beyond its deadline (kill, reap, drain pipes).
const MARGIN: Duration = Duration::from_secs(2);
/// The deadline for real libraries: generous, they answer in milliseconds.
const REAL_DEADLINE: Duration = Duration::from_secs(30);

fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_caiclust"))
}

/// Options with this process's environment plus `extra`.
fn options(extra: &[(&str, &str)], deadline: Duration) -> RuntimeQueryOptions {
    let mut options = RuntimeQueryOptions::new(helper());
    for (k, v) in extra {
        options.env.insert((*k).to_owned(), (*v).to_owned());
    }
    options.deadline = deadline;
    options
}

// ---------------------------------------------------------------- hostile

/// `tests/fixtures/hostile/<name>.c` compiled into `lib<name>.so` in a
/// fresh temporary folder.
fn compile(name: &str) -> (tempfile::TempDir, PathBuf) {
    let source = workspace_root()
        .join("tests/fixtures/hostile")
        .join(format!("{name}.c"));
    let dir = tempfile::tempdir().expect("temporary folder");
    let lib = dir.path().join(format!("lib{name}.so"));
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&source)
        .output()
        .expect("run cc (gcc is needed to build the hostile libraries)");
    assert!(
        out.status.success(),
        "cc {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, lib)
}

/// Query a hostile library as OpenBLAS and check the time it took.
fn query_hostile(lib: &Path, extra: &[(&str, &str)]) -> RuntimeAnswer {
    let start = Instant::now();
    let answer = query_runtime(
        &RuntimeQuery::new(lib, Vendor::Openblas),
        &options(extra, HOSTILE_DEADLINE),
    );
    let took = start.elapsed();
    assert!(
        took < HOSTILE_DEADLINE + MARGIN,
        "querying {} took {took:?}: {answer:#?}",
        lib.display()
    );
    answer
}

/// After a query of a library in `dir`: this process never loaded it, and
/// no process that was started for it (the child, or anything the library
/// forked) is still running. Query children are recognised by their
/// initial environment, which holds the query, hence the library's path.
fn assert_unaffected_and_nothing_left(dir: &Path) {
    let dir_text = dir.to_string_lossy().into_owned();
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    assert!(
        !maps.contains(&dir_text),
        "a hostile library was loaded into the test process:\n{maps}"
    );
    // SIGKILL is delivered asynchronously: give the kernel a moment.
    let start = Instant::now();
    loop {
        let left = query_processes_for(&dir_text);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "query processes for {dir_text} are still running: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of running processes whose initial environment holds a query that
/// mentions `text`. A zombie's environment reads as empty, so zombies
/// (dead, waiting for a reaper) do not count.
fn query_processes_for(text: &str) -> Vec<String> {
    let marker = format!("{RUNTIME_QUERY_ENV}=");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Unreadable: gone meanwhile.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let environ = String::from_utf8_lossy(&environ);
        if environ
            .split('\0')
            .any(|var| var.starts_with(&marker) && var.contains(text))
        {
            found.push(pid.to_owned());
        }
    }
    found
}

fn error_of(answer: &RuntimeAnswer) -> &str {
    answer
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("expected an error, got {answer:#?}"))
}

#[test]
fn segv_in_constructor_is_a_crash_while_loading() {
    let (dir, lib) = compile("segv");
    let answer = query_hostile(&lib, &[]);
    let error = error_of(&answer);
    assert!(
        error.starts_with("crashed with signal 11 (SIGSEGV) while loading"),
        "{error}"
    );
    assert!(answer.calls.is_empty(), "{answer:#?}");
    assert_unaffected_and_nothing_left(dir.path());
}

#[test]
fn hang_in_constructor_times_out_and_is_killed() {
    let (dir, lib) = compile("hang");
    let answer = query_hostile(&lib, &[]);
    let error = error_of(&answer);
    assert!(
        error.starts_with("timed out after 2.0 s (killed) while loading"),
        "{error}"
    );
    assert_unaffected_and_nothing_left(dir.path());
}

#[test]
fn exit_in_constructor_is_reported() {
    let (dir, lib) = compile("exit");
    let answer = query_hostile(&lib, &[]);
    let error = error_of(&answer);
    assert!(
        error.starts_with(
            "exited with status 3 before answering (the library's constructor called exit?)"
        ),
        "{error}"
    );
    assert_unaffected_and_nothing_left(dir.path());
}

#[test]
fn hang_in_query_function_times_out_naming_it() {
    let (dir, lib) = compile("hang_in_call");
    let answer = query_hostile(&lib, &[]);
    let error = error_of(&answer);
    assert!(
        error.starts_with("timed out after 2.0 s (killed) while calling openblas_get_config"),
        "{error}"
    );
    assert_eq!(answer.calls, ["openblas_get_config"]);
    assert_unaffected_and_nothing_left(dir.path());
}

#[test]
fn library_without_query_functions_is_reported() {
    let (dir, lib) = compile("inert");
    let answer = query_hostile(&lib, &[]);
    let error = error_of(&answer);
    assert!(
        error.starts_with("the library exports none of the query functions"),
        "{error}"
    );
    assert!(error.contains("openblas_get_num_threads"), "{error}");
    assert_unaffected_and_nothing_left(dir.path());
}

#[test]
fn unloadable_library_reports_the_loader_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libmissing.so");
    let answer = query_hostile(&missing, &[]);
    let error = error_of(&answer);
    assert!(error.starts_with("cannot load: "), "{error}");
    assert!(error.contains("libmissing.so"), "{error}");
    assert!(error.contains("No such file or directory"), "{error}");

    // Not a library at all.
    let text = dir.path().join("libtext.so");
    std::fs::write(&text, "not an ELF file\n").unwrap();
    let answer = query_hostile(&text, &[]);
    let error = error_of(&answer);
    assert!(error.starts_with("cannot load: "), "{error}");
    assert!(error.contains("libtext.so"), "{error}");
    assert_unaffected_and_nothing_left(dir.path());
}

#[test]
fn noisy_library_with_affixed_api_still_answers() {
    let (dir, lib) = compile("chatty");
    let answer = query_hostile(&lib, &[("OPENBLAS_NUM_THREADS", "4")]);
    assert_eq!(answer.error, None, "{answer:#?}");
    assert_eq!(
        answer.calls,
        [
            "scipy_openblas_get_config64_",
            "scipy_openblas_get_parallel64_",
            "scipy_openblas_get_corename64_",
            "scipy_openblas_get_num_threads64_",
        ]
    );
    assert_eq!(answer.version.as_deref(), Some("9.8.7"));
    assert_eq!(
        answer.config.as_deref(),
        Some("OpenBLAS 9.8.7 FAKE USE64BITINT")
    );
    assert_eq!(answer.corename.as_deref(), Some("Chatty"));
    assert_eq!(
        answer.threading_layer,
        Some(caiclust_probe::ThreadingLayer::Pthreads)
    );
    // The child's environment is the one given, not this process's.
    assert_eq!(answer.num_threads, Some(4));
    assert_unaffected_and_nothing_left(dir.path());
}

#[test]
fn forked_grandchild_is_killed_and_does_not_delay_the_answer() {
    let (dir, lib) = compile("forks");
    let start = Instant::now();
    let answer = query_hostile(&lib, &[]);
    assert_eq!(answer.error, None, "{answer:#?}");
    assert_eq!(answer.num_threads, Some(5));
    // Not held up by the grandchild keeping the pipes open.
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_unaffected_and_nothing_left(dir.path());
}

#[test]
fn all_hostile_libraries_in_a_row_leave_this_process_running() {
    let mut dirs = Vec::new();
    for name in ["segv", "hang", "exit", "hang_in_call", "forks"] {
        let (dir, lib) = compile(name);
        let answer = query_hostile(&lib, &[]);
        assert!(
            answer.error.is_some() || name == "forks",
            "{name}: {answer:#?}"
        );
        dirs.push(dir);
    }
    // Still here, and so is everything we own: nothing else to check but
    // that no query child survived.
    for dir in &dirs {
        assert_unaffected_and_nothing_left(dir.path());
    }
}

// ------------------------------------------------------------ real libraries

/// The vendor of one threadpoolctl pool.
fn vendor_of(pool: &ThreadpoolInfo) -> Vendor {
    match (pool.internal_api.as_str(), pool.prefix.as_str()) {
        ("openblas", _) => Vendor::Openblas,
        ("mkl", _) => Vendor::Mkl,
        ("blis", _) => Vendor::Blis,
        ("flexiblas", _) => Vendor::Flexiblas,
        ("openmp", "libgomp") => Vendor::GnuOpenmp,
        ("openmp", "libomp") => Vendor::LlvmOpenmp,
        ("openmp", "libiomp") => Vendor::IntelOpenmp,
        ("openmp", "vcomp") => Vendor::MsvcOpenmp,
        other => panic!("unexpected threadpoolctl pool {other:?}"),
    }
}

/// The answer says what threadpoolctl said about the same file.
fn assert_agrees(pool: &ThreadpoolInfo, answer: &RuntimeAnswer, context: &str) {
    let what = format!("{} ({context})", pool.filepath.display());
    assert_eq!(answer.error, None, "{what}: {answer:#?}");
    assert_eq!(answer.version, pool.version, "version of {what}");
    assert_eq!(
        answer.threading_layer.map(|l| l.threadpoolctl_name()),
        pool.threading_layer.as_deref(),
        "threading layer of {what}"
    );
    assert_eq!(
        answer.num_threads,
        Some(pool.num_threads as usize),
        "num_threads of {what}: {answer:#?}"
    );
    if pool.internal_api == "openblas" {
        assert_eq!(answer.corename, pool.architecture, "architecture of {what}");
    }
}

/// Query every pool threadpoolctl reported, with the oracle's environment
/// (this process's plus `extra`); return the answers.
fn query_each(
    pools: &[ThreadpoolInfo],
    extra: &[(&str, &str)],
    context: &str,
) -> Vec<RuntimeAnswer> {
    pools
        .iter()
        .map(|pool| {
            let answer = query_runtime(
                &RuntimeQuery::new(&pool.filepath, vendor_of(pool)),
                &options(extra, REAL_DEADLINE),
            );
            assert_agrees(pool, &answer, context);
            answer
        })
        .collect()
}

const PYPI_MODULES: [&str; 4] = ["numpy", "scipy", "sklearn", "cv2"];

#[test]
fn pypi_openblas_copies_and_libgomp_agree_with_threadpoolctl() {
    let fx = fixtures();
    let pools = run_threadpoolctl(&fx.venv_pypi, &PYPI_MODULES);
    let openblas = pools
        .iter()
        .filter(|p| p.internal_api == "openblas")
        .count();
    assert!(
        openblas >= 3,
        "numpy, scipy and cv2 each bring OpenBLAS: {pools:#?}"
    );
    assert!(
        pools.iter().any(|p| p.prefix == "libgomp"),
        "scikit-learn brings libgomp: {pools:#?}"
    );
    let answers = query_each(&pools, &[], "PyPI venv");
    // numpy's copy has the scipy_ prefix and 64_ suffix; found without
    // being told.
    let numpy = pools
        .iter()
        .position(|p| p.filepath.to_string_lossy().contains("numpy.libs"))
        .expect("numpy's OpenBLAS");
    assert!(
        answers[numpy]
            .calls
            .contains(&"scipy_openblas_get_config64_".to_owned()),
        "{:#?}",
        answers[numpy]
    );
}

#[test]
fn pypi_thread_variables_reach_the_child_as_they_reach_python() {
    let fx = fixtures();
    for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"] {
        let extra = [(var, "1")];
        let pools = run_threadpoolctl_with_env(&fx.venv_pypi, &PYPI_MODULES, &extra);
        let answers = query_each(&pools, &extra, &format!("{var}=1"));
        for (pool, answer) in pools.iter().zip(&answers) {
            // OMP_NUM_THREADS limits both kinds (pthreads OpenBLAS reads it
            // after its own variables); OPENBLAS_NUM_THREADS only OpenBLAS.
            if var == "OMP_NUM_THREADS" || pool.internal_api == "openblas" {
                assert_eq!(
                    answer.num_threads,
                    Some(1),
                    "{var}=1 for {}",
                    pool.filepath.display()
                );
            }
        }
    }
}

#[test]
fn pypi_static_affixes_lead_to_the_same_answers() {
    let fx = fixtures();
    let pools = run_threadpoolctl(&fx.venv_pypi, &PYPI_MODULES);
    let env: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k != "LD_LIBRARY_PATH" && k != "VIRTUAL_ENV" && k != "CONDA_PREFIX")
        .collect();
    let facts = caiclust_probe::probe_python(&caiclust_probe::ProbeOptions {
        python: Some(fx.venv_pypi.clone()),
        target_os: None,
        env: Some(env),
    })
    .expect("probe the PyPI venv");
    for pool in &pools {
        let real = std::fs::canonicalize(&pool.filepath).unwrap();
        let lib = facts
            .libraries
            .iter()
            .find(|l| l.path == real)
            .unwrap_or_else(|| panic!("the static probe missed {}", real.display()));
        let query = RuntimeQuery::for_library(lib);
        let answer = query_runtime(&query, &options(&[], REAL_DEADLINE));
        assert_agrees(pool, &answer, "affixes from the static probe");
        let prefix = lib.symbol_prefix.clone().unwrap_or_default();
        let suffix = lib.symbol_suffix.clone().unwrap_or_default();
        assert!(
            answer
                .calls
                .iter()
                .all(|c| c.starts_with(&prefix) && c.ends_with(&suffix)),
            "calls of {} should use the static affixes {prefix:?}/{suffix:?}: {:?}",
            real.display(),
            answer.calls
        );
    }
}

#[test]
fn affinity_pins_the_child_as_taskset_pins_python() {
    let fx = fixtures();
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&fx.venv_pypi)
        .args(["-m", "threadpoolctl", "-i", "numpy", "sklearn"])
        .output()
        .expect("run taskset (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pools = parse_threadpoolctl(&String::from_utf8_lossy(&out.stdout)).expect("JSON");
    assert!(!pools.is_empty());
    for pool in &pools {
        let mut options = options(&[], REAL_DEADLINE);
        options.affinity = Some(vec![0]);
        let answer = query_runtime(
            &RuntimeQuery::new(&pool.filepath, vendor_of(pool)),
            &options,
        );
        assert_agrees(pool, &answer, "pinned to CPU 0");
        assert_eq!(answer.num_threads, Some(1), "{}", pool.filepath.display());
    }
}

/// Debian's numpy with the OpenBLAS build in `dir` (through
/// `LD_LIBRARY_PATH`, whatever the system's alternative is), compared with
/// Debian's threadpoolctl.
fn debian_agrees(dir: &Path, ld_library_path: Option<&Path>, layer: &str) {
    let fx = fixtures();
    let lib = dir.join("libopenblas.so.0");
    let real = std::fs::canonicalize(&lib).expect("Debian OpenBLAS is installed");
    let ld = ld_library_path.map(|p| p.to_string_lossy().into_owned());
    for threads in [None, Some("1")] {
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if let Some(ld) = &ld {
            extra.push(("LD_LIBRARY_PATH", ld));
        }
        if let Some(n) = threads {
            extra.push(("OMP_NUM_THREADS", n));
            extra.push(("OPENBLAS_NUM_THREADS", n));
        }
        let pools = run_threadpoolctl_with_env(&fx.debian_python, &["numpy"], &extra);
        let pool = pools
            .iter()
            .find(|p| p.internal_api == "openblas")
            .unwrap_or_else(|| panic!("threadpoolctl found no OpenBLAS: {pools:#?}"));
        assert_eq!(
            std::fs::canonicalize(&pool.filepath).unwrap(),
            real,
            "Debian's numpy loaded another OpenBLAS"
        );
        assert_eq!(pool.threading_layer.as_deref(), Some(layer));
        let context = format!("Debian, {extra:?}");
        let answer = query_runtime(
            &RuntimeQuery::new(&lib, Vendor::Openblas),
            &options(&extra, REAL_DEADLINE),
        );
        assert_agrees(pool, &answer, &context);
        if threads.is_some() {
            assert_eq!(answer.num_threads, Some(1), "{context}");
        }
        // The OpenMP runtimes threadpoolctl saw (libgomp for the OpenMP
        // build) agree too.
        let openmp: Vec<ThreadpoolInfo> = pools
            .iter()
            .filter(|p| p.internal_api == "openmp")
            .cloned()
            .collect();
        if layer == "openmp" {
            assert!(!openmp.is_empty(), "no OpenMP runtime listed: {pools:#?}");
        }
        query_each(&openmp, &extra, &context);
    }
}

#[test]
fn debian_openmp_openblas_agrees_with_threadpoolctl() {
    let fx = fixtures();
    debian_agrees(
        &fx.openblas_openmp_dir,
        Some(&fx.openblas_openmp_dir),
        "openmp",
    );
}

#[test]
fn debian_pthreads_openblas_agrees_with_threadpoolctl() {
    let fx = fixtures();
    debian_agrees(
        &fx.openblas_pthread_dir,
        Some(&fx.openblas_pthread_dir),
        "pthreads",
    );
}
