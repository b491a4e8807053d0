//! Acceptance: numba's available threading layers, read from its pool
//! modules' dependencies without importing numba. Oracle: `numba -s`, which
//! imports each layer for real.
//!
//! Unix only: numba in a Linux fixture venv.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::process::Command;

use caiclust_probe::{probe_python, ProbeOptions, Vendor};
use caiclust_tests::fixtures;

/// Layers `python -m numba -s` says are available: `omp`, `tbb`, `workqueue`.
fn numba_says(python: &std::path::Path) -> (BTreeSet<String>, Option<String>) {
    let out = Command::new(python)
        .args(["-m", "numba", "-s"])
        .env_remove("NUMBA_THREADING_LAYER")
        .output()
        .expect("run numba -s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut available = BTreeSet::new();
    let mut omp_vendor = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let layer = match name {
            "TBB Threading Layer Available" => "tbb",
            "OpenMP Threading Layer Available" => "omp",
            "Workqueue Threading Layer Available" => "workqueue",
            _ => continue,
        };
        if value.trim() == "True" {
            available.insert(layer.to_owned());
            if layer == "omp" {
                omp_vendor = lines
                    .peek()
                    .and_then(|l| l.split_once("Vendor:"))
                    .map(|(_, v)| v.trim().to_owned());
            }
        }
    }
    assert!(
        !available.is_empty(),
        "numba -s printed no layer information:\n{text}"
    );
    (available, omp_vendor)
}

#[test]
fn numba_threading_layers_match_numba_sysinfo() {
    let fx = fixtures();
    let (truth, omp_vendor) = numba_says(&fx.venv_numba);
    let facts = probe_python(&ProbeOptions {
        python: Some(fx.venv_numba.clone()),
        ..ProbeOptions::default()
    })
    .expect("probe the numba venv");
    let numba = facts
        .packages
        .iter()
        .find(|p| p.name == "numba")
        .expect("numba found");
    let ours: BTreeSet<String> = numba
        .threading_layers
        .iter()
        .map(|c| c.value.split_whitespace().next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(ours, truth, "layers: {:#?}", numba.threading_layers);
    if let Some(vendor) = omp_vendor {
        let omp = numba
            .threading_layers
            .iter()
            .find(|c| c.value.starts_with("omp"))
            .expect("omp layer");
        let expected = match vendor.as_str() {
            "GNU" => "GNU libgomp",
            "Intel" => "Intel libiomp5",
            _ => "LLVM libomp",
        };
        assert!(
            omp.value.contains(expected),
            "{} vs numba's {vendor}",
            omp.value
        );
        assert!(!omp.evidence.is_empty());
    }
}

#[test]
fn tbb_in_the_venv_lib_folder_is_reported() {
    // PyPI tbb installs libtbb.so.12 into <venv>/lib: present in the
    // environment even though no module's search path reaches it.
    let fx = fixtures();
    let facts = probe_python(&ProbeOptions {
        python: Some(fx.venv_numba.clone()),
        ..ProbeOptions::default()
    })
    .expect("probe");
    let prefix = facts.python.as_ref().expect("python").prefix.clone();
    let tbb: Vec<_> = facts.libraries_of(Vendor::Tbb).collect();
    assert!(
        tbb.iter().any(|l| l
            .path
            .starts_with(std::fs::canonicalize(prefix.join("lib")).expect("lib"))),
        "{tbb:#?}"
    );
    // ... and numba's tbbpool could not reach it (unresolved), as numba -s
    // agrees in the other test.
    assert!(
        facts
            .scan
            .unresolved
            .iter()
            .any(|u| u.name.starts_with("libtbb")
                && u.needed_by.to_string_lossy().contains("tbbpool"))
    );
}
