//! The rules and the recommendation on real environments: the fixture
//! venvs and Debian's interpreter (`scripts/setup-test-envs.sh`). Missing
//! fixtures fail, never skip.
//!
//! Unix only: the fixture venvs and Debian's interpreter are Linux programs; the workload runs in its own process group.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caiclust_probe::{probe_python, Facts, ProbeOptions};
use caiclust_rules::{evaluate, recommend, Config, Level, Plan, Report};

fn env_without(remove: &[&str], add: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| !remove.contains(&k.as_str()))
        .collect();
    // The fixtures' own thread limits must not leak in from the caller.
    for k in [
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
    ] {
        env.remove(k);
    }
    for (k, v) in add {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

fn probe(python: &Path, env: BTreeMap<String, String>) -> Facts {
    probe_python(&ProbeOptions {
        python: Some(python.to_path_buf()),
        env: Some(env),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("probe {}: {e}", python.display()))
}

fn fork() -> Plan {
    Plan {
        start_method: Some("fork".into()),
        workers: None,
        ..Plan::default()
    }
}

fn errors(report: &Report) -> Vec<&caiclust_rules::Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.level == Level::Error)
        .collect()
}

/// CC001 for a pool that is only installed (no script, no live process):
/// a warning the policy presumes, so the plan is judged unsafe all the
/// same (issue #14, point 5).
fn presumed_gomp_warnings(report: &Report) -> Vec<&caiclust_rules::Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.rule_id == "CC001" && f.level == Level::Warning && f.presumed)
        .collect()
}

#[test]
fn pypi_sklearn_with_fork_is_a_presumed_warning_naming_libgomp() {
    let fx = caiclust_tests::fixtures();
    let facts = probe(&fx.venv_pypi, env_without(&["LD_LIBRARY_PATH"], &[]));
    let report = evaluate(&facts, &fork(), &Config::default());
    assert!(errors(&report).iter().all(|f| f.rule_id != "CC001"));
    let warned = presumed_gomp_warnings(&report);
    let gomp = warned
        .iter()
        .find(|f| f.message.contains("libgomp"))
        .unwrap_or_else(|| panic!("no CC001 naming libgomp: {:#?}", report.findings));
    assert!(
        gomp.location
            .as_deref()
            .unwrap_or_default()
            .contains("libgomp"),
        "{gomp:#?}"
    );
    let fix = gomp.fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains("spawn") && fix.contains("OMP_NUM_THREADS=1"),
        "{fix}"
    );
    assert!(
        gomp.message
            .contains("before the workers are forked and a worker runs OpenMP code again"),
        "{}",
        gomp.message
    );
    let verdict = caiclust_rules::assess(&facts, &fork(), &Config::default());
    assert_eq!(verdict.start_method_hazards, ["CC001"], "{verdict:?}");
    assert!(verdict.only_presumed());
}

#[test]
fn debian_numpy_with_openblas_openmp_is_a_presumed_warning() {
    let fx = caiclust_tests::fixtures();
    let (k, v) = fx.debian_openblas_openmp_env();
    let facts = probe(
        &fx.debian_python,
        env_without(&["LD_LIBRARY_PATH"], &[(&k, &v)]),
    );
    let report = evaluate(&facts, &Plan::default(), &Config::default());
    assert!(
        presumed_gomp_warnings(&report)
            .iter()
            .any(|f| f.message.contains("libopenblas")),
        "{:#?}",
        report.findings
    );
}

#[test]
fn debian_numpy_with_omp_num_threads_1_has_no_error() {
    // The OpenMP build, whose pool OMP_NUM_THREADS=1 keeps from starting.
    let fx = caiclust_tests::fixtures();
    let (k, v) = fx.debian_openblas_openmp_env();
    let facts = probe(
        &fx.debian_python,
        env_without(&["LD_LIBRARY_PATH"], &[(&k, &v), ("OMP_NUM_THREADS", "1")]),
    );
    assert!(
        facts
            .libraries
            .iter()
            .any(|l| l.path.starts_with(&fx.openblas_openmp_dir)),
        "the OpenMP OpenBLAS is what numpy loads: {:#?}",
        facts.libraries
    );
    let report = evaluate(&facts, &Plan::default(), &Config::default());
    assert!(errors(&report).is_empty(), "{:#?}", report.findings);
}

#[test]
fn debian_numpy_with_pthreads_openblas_has_no_error() {
    let fx = caiclust_tests::fixtures();
    let dir = fx.openblas_pthread_dir.display().to_string();
    let facts = probe(
        &fx.debian_python,
        env_without(&["LD_LIBRARY_PATH"], &[("LD_LIBRARY_PATH", &dir)]),
    );
    let report = evaluate(&facts, &fork(), &Config::default());
    assert!(errors(&report).is_empty(), "{:#?}", report.findings);
}

#[test]
fn pypi_numpy_alone_with_fork_has_no_error() {
    let fx = caiclust_tests::fixtures();
    let facts = probe(&fx.venv_numpy, env_without(&["LD_LIBRARY_PATH"], &[]));
    let report = evaluate(&facts, &fork(), &Config::default());
    assert!(errors(&report).is_empty(), "{:#?}", report.findings);
    assert_eq!(
        recommend(&facts, &Config::default()).start_method.value,
        "fork"
    );
}

/// The hang of HAZARDS H01 (PyPI scikit-learn: KMeans in the parent, then
/// KMeans in fork workers), and the same workload run the recommended way.
const KMEANS_WORKLOAD: &str = r#"
import multiprocessing as mp
import sys
import numpy as np
from sklearn.cluster import KMeans

X = np.random.RandomState(0).rand(4000, 8)

def fit(seed):
    return int(KMeans(n_clusters=4, n_init=1, random_state=seed).fit(X).n_iter_)

if __name__ == "__main__":
    fit(0)  # starts libgomp's pool in the parent
    ctx = mp.get_context(sys.argv[1])
    with ctx.Pool(2) as pool:
        print(pool.map(fit, range(4)))
    print("done")
"#;

/// Runs the workload; `Some(stdout)` when it finished in time, `None` when
/// it had to be killed.
fn run_workload(
    python: &Path,
    method: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("workload.py");
    std::fs::File::create(&script)
        .unwrap()
        .write_all(KMEANS_WORKLOAD.as_bytes())
        .unwrap();
    let mut child = Command::new(python)
        .arg(&script)
        .arg(method)
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the workload");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            assert!(status.success(), "workload failed ({status}): {out}");
            return Some(out);
        }
        if start.elapsed() > timeout {
            // Kill the whole group: the parent and its hung workers.
            let pgid = child.id() as i32;
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_advice_works_fork_hangs_and_the_recommendation_completes() {
    let fx = caiclust_tests::fixtures();
    let base = env_without(&["LD_LIBRARY_PATH"], &[]);
    let facts = probe(&fx.venv_pypi, base.clone());

    // As found: fork hangs (libgomp's pool does not survive fork).
    let hung = run_workload(&fx.venv_pypi, "fork", &base, Duration::from_secs(20));
    assert!(
        hung.is_none(),
        "expected the fork workload to hang, it finished: {hung:?}"
    );

    // The recommendation: its start method and env, set before the
    // interpreter starts.
    let advice = recommend(&facts, &Config::default());
    assert_ne!(advice.start_method.value, "fork", "{advice:#?}");
    assert!(
        advice.env.iter().any(|e| e.name == "OMP_NUM_THREADS"),
        "{advice:#?}"
    );
    let mut env = base.clone();
    for e in &advice.env {
        env.insert(e.name.clone(), e.value.clone());
    }
    let out = run_workload(
        &fx.venv_pypi,
        &advice.start_method.value,
        &env,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("the recommended run hung: {advice:#?}"));
    assert!(out.contains("done"), "{out}");
}
