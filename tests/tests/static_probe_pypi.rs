//! Acceptance: a PyPI venv (numpy, scipy, scikit-learn,
//! opencv-python-headless, threadpoolctl). Without importing anything, the
//! static probe finds every library that threadpoolctl lists after
//! importing all four packages, with the same file, kind, version and
//! threading layer. threadpoolctl is the oracle and runs here.
//!
//! Unix only: the fixture venvs' Linux Pythons, with threadpoolctl as the oracle.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use caiclust_probe::{probe_python, Api, Facts, ProbeOptions, ThreadingLayer, Vendor};
use caiclust_tests::{fixtures, run_threadpoolctl};

fn probe_venv() -> Facts {
    let fx = fixtures();
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k != "LD_LIBRARY_PATH" && k != "VIRTUAL_ENV" && k != "CONDA_PREFIX")
        .collect();
    probe_python(&ProbeOptions {
        python: Some(fx.venv_pypi.clone()),
        target_os: None,
        env: Some(env),
    })
    .expect("probe the PyPI venv")
}

#[test]
fn pypi_venv_matches_threadpoolctl() {
    let fx = fixtures();
    let oracle = run_threadpoolctl(&fx.venv_pypi, &["numpy", "scipy", "sklearn", "cv2"]);
    assert!(
        oracle.len() >= 4,
        "threadpoolctl should list at least 3 OpenBLAS copies and libgomp, got {oracle:#?}"
    );
    let facts = probe_venv();
    for pool in &oracle {
        let real: PathBuf =
            std::fs::canonicalize(&pool.filepath).expect("threadpoolctl path exists");
        let lib = facts
            .libraries
            .iter()
            .find(|l| l.path == real)
            .unwrap_or_else(|| {
                panic!(
                    "probe missed {} ({}); it found {:#?}",
                    real.display(),
                    pool.internal_api,
                    facts.libraries.iter().map(|l| &l.path).collect::<Vec<_>>()
                )
            });
        assert_eq!(
            lib.vendor.value.threadpoolctl_internal_api(),
            Some(pool.internal_api.as_str()),
            "internal_api of {}",
            real.display()
        );
        let api = match pool.user_api.as_str() {
            "blas" => Api::Blas,
            "openmp" => Api::Openmp,
            other => panic!("unexpected user_api {other}"),
        };
        assert!(
            lib.apis.contains(&api),
            "{} should have API {api:?}",
            real.display()
        );
        if let Some(version) = &pool.version {
            assert_eq!(
                lib.version.as_ref().map(|v| v.value.as_str()),
                Some(version.as_str()),
                "version of {}",
                real.display()
            );
        }
        if let Some(layer) = &pool.threading_layer {
            assert_eq!(
                lib.threading_layer
                    .as_ref()
                    .map(|t| t.value.threadpoolctl_name()),
                Some(layer.as_str()),
                "threading layer of {}",
                real.display()
            );
        }
        // Every conclusion carries evidence.
        assert!(!lib.vendor.evidence.is_empty());
        assert!(lib
            .threading_layer
            .as_ref()
            .is_none_or(|t| !t.evidence.is_empty()));
    }
}

#[test]
fn pypi_venv_reports_several_openblas_copies() {
    let fx = fixtures();
    let oracle = run_threadpoolctl(&fx.venv_pypi, &["numpy", "scipy", "sklearn", "cv2"]);
    let oracle_openblas: Vec<PathBuf> = oracle
        .iter()
        .filter(|p| p.internal_api == "openblas")
        .map(|p| std::fs::canonicalize(&p.filepath).expect("exists"))
        .collect();
    assert!(
        oracle_openblas.len() >= 2,
        "the venv should hold several OpenBLAS copies"
    );
    let facts = probe_venv();
    let dup = facts
        .duplicates
        .iter()
        .find(|d| d.vendor == Vendor::Openblas)
        .expect("duplicate OpenBLAS reported");
    let mut ours = dup.paths.clone();
    ours.sort();
    let mut theirs = oracle_openblas;
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn pypi_venv_reports_opencv_parallel_framework() {
    let fx = fixtures();
    // Oracle: OpenCV's own build information, printed by cv2 itself.
    let out = Command::new(&fx.venv_pypi)
        .args([
            "-c",
            "import cv2; print([l.split(':',1)[1].strip() for l in cv2.getBuildInformation().splitlines() if 'Parallel framework' in l][0])",
        ])
        .output()
        .expect("run cv2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let facts = probe_venv();
    let cv = facts
        .libraries
        .iter()
        .find(|l| l.vendor.value == Vendor::Opencv)
        .expect("OpenCV found");
    assert_eq!(
        cv.parallel_framework.as_ref().map(|c| c.value.as_str()),
        Some(truth.as_str())
    );
    assert!(cv.pulled_in_by.iter().any(|p| p == "cv2"));
    let expected_layer = match truth
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
        .as_str()
    {
        "pthreads" => Some(ThreadingLayer::Pthreads),
        "openmp" => Some(ThreadingLayer::Openmp),
        "tbb" => Some(ThreadingLayer::Tbb),
        _ => None,
    };
    if expected_layer.is_some() {
        assert_eq!(cv.threading_layer.as_ref().map(|t| t.value), expected_layer);
    }
}

#[test]
fn pypi_venv_python_and_packages_are_described() {
    let fx = fixtures();
    let facts = probe_venv();
    let py = facts.python.as_ref().expect("python facts");
    // Oracle: the interpreter's own answer.
    let out = Command::new(&fx.venv_pypi)
        .args([
            "-c",
            "import sys, multiprocessing as m; print(sys.prefix); print(m.get_start_method())",
        ])
        .output()
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(py.prefix, PathBuf::from(lines.next().expect("prefix")));
    assert_eq!(py.default_start_method.as_deref(), lines.next());
    assert!(py.is_virtualenv);
    for (pkg, dist) in [
        ("numpy", "numpy"),
        ("scipy", "scipy"),
        ("sklearn", "scikit-learn"),
        ("cv2", "opencv-python-headless"),
    ] {
        let p = facts
            .packages
            .iter()
            .find(|p| p.name == pkg)
            .unwrap_or_else(|| panic!("package {pkg} described"));
        assert_eq!(
            p.version.as_deref(),
            Some(fx.venv_pypi_version(dist)),
            "{pkg} version"
        );
        assert!(p.binaries > 0, "{pkg} has extension modules");
    }
    let sklearn = facts
        .packages
        .iter()
        .find(|p| p.name == "sklearn")
        .expect("sklearn");
    assert!(
        sklearn
            .libraries
            .iter()
            .any(|l| l.to_string_lossy().contains("libgomp")),
        "sklearn pulls in its libgomp"
    );
    // The facts round-trip through JSON.
    let json = serde_json::to_string(&facts).expect("serialise");
    let back = Facts::from_json(&json).expect("parse back");
    assert_eq!(back, facts);
}
