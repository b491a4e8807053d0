//! `caiclust-check --python ENV script.py` judges the environment's fork
//! hazards by what the script runs (issue #14, points 4 and 5): a GNU
//! OpenMP pool is an error only where the script runs it in the parent
//! before the fork and again in the workers, a warning where the script
//! only loads it, and nothing where the script never imports what reaches
//! it. The scripts are the verdict fixtures (`tests/verdicts/`), whose real
//! runs `scripts/verdicts.py` measures; the environment is the real
//! `venv-ml` fixture (PyPI scikit-learn, LightGBM, xgboost).
//!
//! Unix only: the fixture venvs' Linux Pythons, run and read live.
#![cfg(unix)]

mod check_support;
use check_support::*;

use std::path::PathBuf;

use serde_json::Value;

fn verdict_script(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/verdicts")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// (level of CC001 if reported, the policy's start-method hazards).
fn cc001(script: &str, env: &[(&str, &str)]) -> (Option<String>, Vec<String>) {
    let fx = caiclust_tests::fixtures();
    let python = fx.venv_ml.to_string_lossy().into_owned();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_caiclust-check"));
    let path = if script.contains('/') {
        script.to_string()
    } else {
        verdict_script(script)
    };
    cmd.args(["--python", &python, "--format", "json", &path]);
    cmd.env_remove("OMP_NUM_THREADS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("caiclust-check runs");
    let report: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{script}: {e}: {}", stderr(&o)));
    let level = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["rule_id"] == "CC001")
        .map(|f| f["level"].as_str().unwrap_or_default().to_string());
    let hazards = report["verdict"]["start_method_hazards"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (level, hazards)
}

#[test]
fn openmp_run_before_the_fork_and_in_the_workers_is_an_error() {
    let (level, hazards) = cc001("kmeans_parent_and_workers.py", &[]);
    assert_eq!(level.as_deref(), Some("error"));
    assert_eq!(hazards, ["CC001"]);
}

#[test]
fn openmp_only_loaded_is_a_warning_and_fork_stays_safe() {
    for script in ["kmeans_workers_only.py", "kmeans_parent_only.py"] {
        let (level, hazards) = cc001(script, &[]);
        assert_eq!(level.as_deref(), Some("warning"), "{script}");
        assert!(hazards.is_empty(), "{script}: {hazards:?}");
    }
}

#[test]
fn a_script_that_imports_only_numpy_gets_no_libgomp_finding() {
    let (level, hazards) = cc001("numpy_only.py", &[]);
    assert_eq!(level, None);
    assert!(hazards.is_empty(), "{hazards:?}");
}

#[test]
fn one_thread_per_pool_from_the_environment_is_safe() {
    let (level, hazards) = cc001("kmeans_parent_and_workers.py", &[("OMP_NUM_THREADS", "1")]);
    assert_eq!(level, None);
    assert!(hazards.is_empty(), "{hazards:?}");
}

#[test]
fn the_scripts_own_start_method_is_judged() {
    // `METHOD = "spawn"` then `get_context(METHOD)`: read through the
    // constant, no fork, no CC001.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(verdict_script("kmeans_parent_and_workers.py")).unwrap();
    let spawned = dir.path().join("spawned.py");
    std::fs::write(
        &spawned,
        text.replace("METHOD = \"fork\"", "METHOD = \"spawn\""),
    )
    .unwrap();
    let (level, hazards) = cc001(spawned.to_str().unwrap(), &[]);
    assert_eq!(level, None);
    assert!(hazards.is_empty(), "{hazards:?}");
}

#[test]
fn a_count_set_in_code_defeats_the_variable_where_the_library_lets_it() {
    // LightGBM's num_threads=2 hangs forked workers with
    // OMP_NUM_THREADS=1 exported; xgboost keeps its nthread within it
    // (both measured by scripts/verdicts.py).
    let (level, hazards) = cc001("lightgbm_num_threads.py", &[("OMP_NUM_THREADS", "1")]);
    assert_eq!(level.as_deref(), Some("error"));
    assert_eq!(hazards, ["CC001"]);
    let (level, hazards) = cc001("xgboost_nthread.py", &[("OMP_NUM_THREADS", "1")]);
    assert_eq!(level, None);
    assert!(hazards.is_empty(), "{hazards:?}");
}

/// Point 7: PyPI's mkl (no libgomp of its own) on its GNU layer, chosen by
/// `MKL_THREADING_LAYER=GNU`: the layer loads the system libgomp, whose
/// pool forked workers inherit. Before, no libgomp in the environment
/// meant no finding.
#[test]
fn mkl_on_its_gnu_layer_is_a_gnu_openmp_pool_without_a_libgomp_installed() {
    let fx = caiclust_tests::fixtures();
    let python = fx.venv_mkl.to_string_lossy().into_owned();
    let check = |layer: Option<&str>| -> Value {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_caiclust-check"));
        cmd.args(["--python", &python, "--format", "json"]);
        cmd.env_remove("OMP_NUM_THREADS")
            .env_remove("MKL_NUM_THREADS");
        match layer {
            Some(l) => cmd.env("MKL_THREADING_LAYER", l),
            None => cmd.env_remove("MKL_THREADING_LAYER"),
        };
        let o = cmd.output().expect("caiclust-check runs");
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)))
    };
    let cc001 = |report: &Value| -> Option<Value> {
        report["findings"]
            .as_array()?
            .iter()
            .find(|f| f["rule_id"] == "CC001")
            .cloned()
    };
    let gnu = check(Some("GNU"));
    let f = cc001(&gnu).expect("CC001 with MKL_THREADING_LAYER=GNU");
    // Installed, no script: a warning the policy presumes (point 5).
    assert_eq!(f["level"], "warning");
    assert_eq!(f["presumed"], true);
    assert_eq!(gnu["verdict"]["start_method_hazards"][0], "CC001", "{gnu}");
    assert!(
        f["message"]
            .as_str()
            .unwrap_or_default()
            .contains("MKL on its GNU threading layer"),
        "{f}"
    );
    assert_eq!(
        cc001(&check(None)),
        None,
        "Intel's layer (the default) survives fork"
    );
}

/// A live process (`--pid`): whether libgomp's pool threads exist sets
/// the level (issue #14, point 5). After scikit-learn ran OpenMP code its
/// pool threads wait in libgomp (`OMP_WAIT_POLICY=passive` makes them
/// block at once rather than spin first): an error, with that evidence.
/// A process that only imported scikit-learn has no such threads: a
/// warning the policy presumes. The oracle for "will a forked child hang"
/// is the verdict table (`kmeans_parent_and_workers.py`, measured).
#[test]
fn a_live_process_is_an_error_only_once_its_libgomp_pool_threads_exist() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let fx = caiclust_tests::fixtures();
    for (ran, want) in [(true, "error"), (false, "warning")] {
        let code = format!(
            "import sys\nimport numpy as np\nfrom sklearn.cluster import KMeans\n{}print('ready', flush=True)\nsys.stdin.read()\n",
            if ran {
                "KMeans(n_clusters=3, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(20000, 8)))\n"
            } else {
                ""
            }
        );
        let mut child = Command::new(&fx.venv_pypi)
            .args(["-c", &code])
            .env_remove("OMP_NUM_THREADS")
            .env("OMP_WAIT_POLICY", "passive")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready");
        let o = Command::new(env!("CARGO_BIN_EXE_caiclust-check"))
            .args(["--pid", &child.id().to_string(), "--start-method", "fork"])
            .args(["--format", "json"])
            .output()
            .expect("caiclust-check runs");
        drop(child.stdin.take());
        let _ = child.kill();
        let _ = child.wait();
        let report: Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
        let f = report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["rule_id"] == "CC001")
            .cloned()
            .unwrap_or_else(|| panic!("no CC001 (ran={ran}): {report}"));
        assert_eq!(f["level"], want, "ran={ran}: {f}");
        let waiting = f["evidence"].as_array().expect("evidence").iter().any(|e| {
            e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("wait in libgomp")
        });
        assert_eq!(waiting, ran, "ran={ran}: {f}");
        assert_eq!(f["presumed"] == true, !ran, "ran={ran}: {f}");
    }
}

/// A script that imports a module of its own (beside it) may run OpenMP
/// code there on both sides of the fork: its code is not read, so the
/// pool is judged as if no script were known (a presumed warning the
/// policy avoids), never "not reached".
#[test]
fn a_scripts_own_module_leaves_the_pool_presumed_not_unreached() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("pipeline.py"),
        "from sklearn.cluster import KMeans\n\ndef fit(x):\n    return KMeans(n_clusters=2).fit(x).inertia_\n",
    )
    .expect("write module");
    let script = dir.path().join("main.py");
    std::fs::write(
        &script,
        "import multiprocessing\nimport numpy as np\nimport pipeline\n\nMETHOD = 'fork'\n\nif __name__ == '__main__':\n    print(pipeline.fit(np.ones((8, 2))))\n    with multiprocessing.get_context(METHOD).Pool(2) as p:\n        print(p.map(pipeline.fit, [np.ones((8, 2))]))\n",
    )
    .expect("write script");
    let (level, hazards) = cc001(&script.to_string_lossy(), &[]);
    assert_eq!(level.as_deref(), Some("warning"));
    assert_eq!(hazards, ["CC001"], "the policy still avoids fork");
    // Without the module beside it, `pipeline` is an unknown package that
    // reaches nothing: no CC001.
    std::fs::remove_file(dir.path().join("pipeline.py")).expect("remove");
    let (level, hazards) = cc001(&script.to_string_lossy(), &[]);
    assert_eq!(level, None);
    assert!(hazards.is_empty(), "{hazards:?}");
}
