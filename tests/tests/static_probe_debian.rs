//! Acceptance: Debian's `python3-numpy` (interpreter `/usr/bin/python3`)
//! with `libopenblas0-openmp` and `libopenblas0-pthread`. With
//! `LD_LIBRARY_PATH` pointing at the OpenMP build, the probe reports
//! OpenBLAS with the OpenMP threading layer, reached through
//! `libblas.so.3`; pointing at the pthread build, it reports that one;
//! without it, the build the system's alternative names.
//! Oracles: `ldd` (the real loader's answer) and `dpkg -S` (which package
//! owns the file).
//!
//! Unix only: Debian's packages and Python, with threadpoolctl as the oracle.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use caiclust_probe::{probe_python, Facts, Library, ProbeOptions, ThreadingLayer, Vendor};
use caiclust_tests::{dpkg_owner, fixtures};

fn probe_debian(ld_library_path: Option<&Path>) -> Facts {
    let fx = fixtures();
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k != "LD_LIBRARY_PATH" && k != "VIRTUAL_ENV" && k != "CONDA_PREFIX")
        .collect();
    if let Some(dir) = ld_library_path {
        env.insert("LD_LIBRARY_PATH".into(), dir.display().to_string());
    }
    probe_python(&ProbeOptions {
        python: Some(fx.debian_python.clone()),
        target_os: None,
        env: Some(env),
    })
    .expect("probe Debian python")
}

/// numpy's core extension module in Debian's package.
fn numpy_core_module(facts: &Facts) -> PathBuf {
    let numpy = facts
        .packages
        .iter()
        .find(|p| p.name == "numpy")
        .expect("numpy found");
    let core = numpy.path.join("core");
    std::fs::read_dir(&core)
        .expect("numpy/core")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("_multiarray_umath"))
        })
        .expect("_multiarray_umath module")
}

/// What the real loader maps for `module`: name → resolved path.
fn ldd(module: &Path, ld_library_path: Option<&Path>) -> BTreeMap<String, PathBuf> {
    let mut cmd = Command::new("ldd");
    cmd.arg(module).env_remove("LD_LIBRARY_PATH");
    if let Some(dir) = ld_library_path {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    let out = cmd.output().expect("run ldd");
    assert!(
        out.status.success(),
        "ldd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            let path = rest.split_whitespace().next()?;
            Some((name.to_owned(), PathBuf::from(path)))
        })
        .collect()
}

fn numpy_openblas(facts: &Facts) -> &Library {
    let found: Vec<&Library> = facts
        .libraries
        .iter()
        .filter(|l| l.vendor.value == Vendor::Openblas && l.forwards_to.is_none())
        .filter(|l| l.pulled_in_by.iter().any(|p| p == "numpy"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one OpenBLAS implementation for numpy: {found:#?}"
    );
    found[0]
}

fn check(ld_library_path: Option<&Path>, layer: ThreadingLayer, package: &str) {
    let facts = probe_debian(ld_library_path);
    let lib = numpy_openblas(&facts);
    let module = numpy_core_module(&facts);
    let loaded = ldd(&module, ld_library_path);
    let truth = std::fs::canonicalize(
        loaded
            .get("libopenblas.so.0")
            .expect("ldd lists libopenblas.so.0"),
    )
    .expect("canonical");
    assert_eq!(lib.path, truth, "same file as the real loader");
    assert_eq!(
        dpkg_owner(&lib.path),
        package,
        "owner of {}",
        lib.path.display()
    );
    assert_eq!(lib.threading_layer.as_ref().map(|t| t.value), Some(layer));
    assert!(
        lib.reached_via
            .iter()
            .any(|s| s.contains("needs libblas.so.3")),
        "reached through libblas.so.3: {:#?}",
        lib.reached_via
    );
    // The interface library itself is reported, forwarding to OpenBLAS.
    let blas = std::fs::canonicalize(loaded.get("libblas.so.3").expect("ldd lists libblas.so.3"))
        .expect("canonical");
    let shim = facts
        .libraries
        .iter()
        .find(|l| l.path == blas)
        .expect("libblas.so.3 reported");
    assert_eq!(shim.forwards_to.as_deref(), Some(truth.as_path()));
    if layer == ThreadingLayer::Openmp {
        assert_eq!(
            lib.openmp_runtime.as_ref().map(|r| r.value),
            Some(Vendor::GnuOpenmp),
            "the OpenMP build runs on libgomp"
        );
    }
}

#[test]
fn debian_numpy_reaches_openmp_openblas_through_libblas() {
    let fx = fixtures();
    check(
        Some(&fx.openblas_openmp_dir),
        ThreadingLayer::Openmp,
        "libopenblas0-openmp",
    );
}

/// Without `LD_LIBRARY_PATH`: the machine's `libblas.so.3` alternative,
/// whichever build it names (Debian's default is the pthreads one), is
/// followed to the same file the real loader maps.
#[test]
fn debian_numpy_follows_the_system_alternative() {
    let facts = probe_debian(None);
    let module = numpy_core_module(&facts);
    let loaded = ldd(&module, None);
    let truth = std::fs::canonicalize(
        loaded
            .get("libopenblas.so.0")
            .expect("ldd lists libopenblas.so.0"),
    )
    .expect("canonical");
    let (layer, package) = match dpkg_owner(&truth).as_str() {
        "libopenblas0-openmp" => (ThreadingLayer::Openmp, "libopenblas0-openmp"),
        "libopenblas0-pthread" => (ThreadingLayer::Pthreads, "libopenblas0-pthread"),
        other => panic!("{} is owned by {other:?}", truth.display()),
    };
    check(None, layer, package);
}

#[test]
fn debian_numpy_follows_ld_library_path_to_pthread_openblas() {
    let fx = fixtures();
    check(
        Some(&fx.openblas_pthread_dir),
        ThreadingLayer::Pthreads,
        "libopenblas0-pthread",
    );
}

/// Debian's BLIS carries no version in its binary; the package that
/// installed it does (issue #14 point 7). The oracle is dpkg itself.
#[test]
fn debian_blis_gets_its_packages_version() {
    let multiarch = &fixtures().multiarch;
    let dir = PathBuf::from(format!("/usr/lib/{multiarch}/blis-openmp"));
    let facts = probe_debian(Some(&dir));
    let blis = facts
        .libraries
        .iter()
        .find(|l| l.vendor.value == Vendor::Blis)
        .unwrap_or_else(|| panic!("no BLIS reached through {}", dir.display()));
    let package = dpkg_owner(&blis.path);
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", &package])
        .output()
        .expect("dpkg-query runs");
    let full = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let upstream = full.split_once(':').map_or(full.as_str(), |(_, v)| v);
    let upstream = upstream.rsplit_once('-').map_or(upstream, |(u, _)| u);
    let got = blis
        .version
        .as_ref()
        .expect("a version from the package database");
    assert_eq!(got.value, upstream, "{package} {full}");
    assert!(
        got.evidence.iter().any(|e| e.detail.contains(&package)),
        "{:?}",
        got.evidence
    );
}
