//! Acceptance for issue #14, point 2: an OpenBLAS built without threading
//! (Debian's `libopenblas0-serial`) has no thread pool. The static probe
//! tells the three Debian builds apart from the code of
//! `openblas_get_parallel` (their config strings cannot: the text
//! `SINGLE_THREADED` is in every build), as threadpoolctl does in a live
//! process (the oracle, run here); a serial copy is never counted as a
//! pool: not among duplicates, not in oversubscription.
//!
//! Unix only: Debian's OpenBLAS builds, symlinks, and threadpoolctl in a Linux Python as the oracle.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use caiclust_core::rules::{evaluate, Config, Plan};
use caiclust_probe::{
    probe_python, probe_tree, Confidence, Facts, Library, ProbeOptions, ThreadingLayer, Vendor,
};
use caiclust_tests::{fixtures, run_threadpoolctl_with_env};

fn env_with(ld_library_path: Option<&Path>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k != "LD_LIBRARY_PATH"
                && k != "VIRTUAL_ENV"
                && k != "CONDA_PREFIX"
                && !k.contains("NUM_THREADS")
        })
        .collect();
    if let Some(dir) = ld_library_path {
        env.insert("LD_LIBRARY_PATH".into(), dir.to_string_lossy().into_owned());
    }
    env
}

/// The OpenBLAS that implements the BLAS (not an interface library).
fn openblas(facts: &Facts) -> &Library {
    facts
        .libraries_of(Vendor::Openblas)
        .find(|l| l.forwards_to.is_none())
        .expect("an OpenBLAS")
}

fn serial_dir() -> PathBuf {
    let fx = fixtures();
    fx.openblas_pthread_dir
        .parent()
        .expect("multiarch folder")
        .join("openblas-serial")
}

#[test]
fn each_debian_openblas_build_has_the_threading_threadpoolctl_reports() {
    let fx = fixtures();
    for dir in [
        serial_dir(),
        fx.openblas_pthread_dir.clone(),
        fx.openblas_openmp_dir.clone(),
    ] {
        let shown = dir.to_string_lossy().into_owned();
        let oracle = run_threadpoolctl_with_env(
            &fx.debian_python,
            &["numpy"],
            &[("LD_LIBRARY_PATH", shown.as_str())],
        );
        let pool = oracle
            .iter()
            .find(|p| p.internal_api == "openblas")
            .expect("threadpoolctl lists OpenBLAS");
        let facts = probe_python(&ProbeOptions {
            python: Some(fx.debian_python.clone()),
            target_os: None,
            env: Some(env_with(Some(&dir))),
        })
        .expect("probe Debian's python");
        let lib = openblas(&facts);
        assert_eq!(
            lib.path,
            std::fs::canonicalize(&pool.filepath).expect("exists"),
            "{shown}"
        );
        let layer = lib.threading_layer.as_ref().expect("a threading layer");
        assert_eq!(
            Some(layer.value.threadpoolctl_name()),
            pool.threading_layer.as_deref(),
            "{shown}"
        );
        assert_eq!(layer.confidence, Confidence::High, "{shown}: {layer:?}");
        assert!(
            layer
                .evidence
                .iter()
                .any(|e| e.detail.contains("openblas_get_parallel returns")),
            "{shown}: {layer:?}"
        );
        if layer.value == ThreadingLayer::Disabled {
            assert_eq!(pool.num_threads, 1, "a serial build runs one thread");
        }
    }
}

#[test]
fn a_serial_openblas_is_never_counted_as_a_pool() {
    let fx = fixtures();
    let serial = std::fs::canonicalize(serial_dir().join("libopenblas.so.0")).expect("serial");
    // A threaded OpenBLAS with another SONAME: the two could coexist.
    let wheel_libs = fx
        .venv_ml
        .parent()
        .and_then(Path::parent)
        .expect("prefix")
        .join("lib/python3.11/site-packages/numpy.libs");
    let threaded = std::fs::read_dir(&wheel_libs)
        .expect("numpy.libs")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("openblas"))
        .expect("numpy's OpenBLAS");
    let dir = tempfile::tempdir().expect("tempdir");
    for (sub, target) in [("debian", &serial), ("wheel", &threaded)] {
        let folder = dir.path().join(sub);
        std::fs::create_dir_all(&folder).expect("mkdir");
        let name = target.file_name().expect("a file name");
        std::os::unix::fs::symlink(target, folder.join(name)).expect("symlink");
    }
    let facts = probe_tree(
        dir.path(),
        &ProbeOptions {
            python: None,
            target_os: None,
            env: Some(env_with(None)),
        },
    )
    .expect("probe the tree");
    let lib = facts
        .libraries
        .iter()
        .find(|l| l.path == serial)
        .expect("the serial build is listed");
    assert_eq!(
        lib.threading_layer.as_ref().map(|t| t.value),
        Some(ThreadingLayer::Disabled)
    );
    assert!(
        facts
            .libraries
            .iter()
            .any(|l| l.path == std::fs::canonicalize(&threaded).expect("exists")),
        "the threaded one too"
    );
    assert!(
        facts.duplicates.iter().all(|d| !d.paths.contains(&serial)),
        "{:#?}",
        facts.duplicates
    );
    let plan = Plan {
        workers: Some(2),
        ..Plan::default()
    };
    let report = evaluate(&facts, &plan, &Config::default());
    let shown = serial.display().to_string();
    for f in &report.findings {
        if matches!(f.rule_id.as_str(), "CC006" | "CC016") {
            assert!(!f.message.contains(&shown), "{}: {}", f.rule_id, f.message);
        }
    }
}
