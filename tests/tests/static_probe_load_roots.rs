//! Acceptance for issue #14, points 1 and 2, on the machine-learning venv
//! (PyPI scikit-learn, LightGBM, xgboost, threadpoolctl): every shared
//! library of a distribution is a load root (LightGBM's `lib_lightgbm.so`,
//! loaded with ctypes, needs the system `libgomp.so.1`), and copies of a
//! runtime that the loader knows by one SONAME are alternatives, one pool.
//! The oracles run here: threadpoolctl after LightGBM really trained, and
//! `/proc/self/maps` of a process that imported all three packages.
//!
//! Unix only: the fixture venvs' Linux Pythons, with threadpoolctl as the oracle.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use caiclust_core::rules::{evaluate, Config, Plan};
use caiclust_probe::{probe_python, Facts, ProbeOptions, RootKind, Vendor};
use caiclust_tests::{fixtures, parse_threadpoolctl};

fn probe(python: &Path) -> Facts {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k != "LD_LIBRARY_PATH"
                && k != "VIRTUAL_ENV"
                && k != "CONDA_PREFIX"
                && !k.contains("NUM_THREADS")
        })
        .collect();
    probe_python(&ProbeOptions {
        python: Some(python.to_path_buf()),
        target_os: None,
        env: Some(env),
    })
    .expect("probe the venv")
}

/// Run `code` in `python` without the test's `LD_LIBRARY_PATH`; its stdout.
fn run_python(python: &Path, code: &str) -> String {
    let out = Command::new(python)
        .args(["-c", code])
        .env_remove("LD_LIBRARY_PATH")
        .env("OMP_NUM_THREADS", "2")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{code}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const TRAIN_LIGHTGBM: &str = r#"
import json, numpy as np, lightgbm
x = np.random.default_rng(0).random((200, 4))
lightgbm.train({"verbose": -1, "num_threads": 2}, lightgbm.Dataset(x, label=x[:, 0]), num_boost_round=2)
from threadpoolctl import threadpool_info
print(json.dumps(threadpool_info()))
"#;

#[test]
fn a_library_loaded_with_ctypes_is_a_root_and_its_system_libgomp_is_found() {
    let fx = fixtures();
    let oracle = parse_threadpoolctl(&run_python(&fx.venv_ml, TRAIN_LIGHTGBM))
        .expect("threadpoolctl's JSON");
    let gomps: Vec<PathBuf> = oracle
        .iter()
        .filter(|p| p.internal_api == "openmp")
        .map(|p| std::fs::canonicalize(&p.filepath).expect("exists"))
        .collect();
    assert!(!gomps.is_empty(), "LightGBM trained on OpenMP: {oracle:#?}");
    let facts = probe(&fx.venv_ml);
    for path in &gomps {
        let lib = facts
            .libraries
            .iter()
            .find(|l| &l.path == path)
            .unwrap_or_else(|| {
                panic!(
                    "the probe missed {} that threadpoolctl lists after LightGBM trained",
                    path.display()
                )
            });
        assert_eq!(lib.vendor.value, Vendor::GnuOpenmp, "{}", path.display());
    }
    // LightGBM's own: the one no package of the venv vendors (LightGBM
    // imports scikit-learn too, so its libgomp is listed as well).
    let prefix = std::fs::canonicalize(fx.venv_ml.parent().and_then(Path::parent).expect("prefix"))
        .expect("prefix exists");
    let system: Vec<&PathBuf> = gomps.iter().filter(|g| !g.starts_with(&prefix)).collect();
    assert_eq!(system.len(), 1, "one system libgomp: {gomps:?}");
    let lib = facts
        .libraries
        .iter()
        .find(|l| &l.path == system[0])
        .expect("found above");
    let root = lib
        .load_roots
        .iter()
        .find(|r| r.package.as_deref() == Some("lightgbm"))
        .unwrap_or_else(|| panic!("no LightGBM root: {lib:#?}"));
    assert_eq!(root.kind, RootKind::PackageLibrary, "loaded with ctypes");
    assert!(
        root.path.ends_with("lightgbm/lib/lib_lightgbm.so"),
        "{root:?}"
    );
    assert!(lib.pulled_in_by.iter().any(|p| p == "lightgbm"), "{lib:#?}");
    let lightgbm = facts
        .packages
        .iter()
        .find(|p| p.name == "lightgbm")
        .expect("LightGBM is listed");
    assert_eq!(lightgbm.version.as_deref(), Some("4.7.0"));
    assert!(lightgbm.libraries.contains(system[0]));
    // scikit-learn's libgomp is reached from its extension modules.
    let sk = facts
        .libraries
        .iter()
        .find(|l| {
            l.path
                .to_string_lossy()
                .contains("scikit_learn.libs/libgomp")
        })
        .expect("scikit-learn's libgomp");
    assert!(sk
        .load_roots
        .iter()
        .any(|r| r.kind == RootKind::ExtensionModule && r.package.as_deref() == Some("sklearn")));
}

const MAPS_AFTER_ALL_THREE: &str = r#"
import sklearn.cluster, xgboost, lightgbm
print("\n".join(sorted({l.split()[-1] for l in open("/proc/self/maps") if "libgomp" in l})))
"#;

#[test]
fn copies_of_one_soname_are_one_pool_as_proc_maps_shows() {
    let fx = fixtures();
    let mapped: BTreeSet<PathBuf> = run_python(&fx.venv_ml, MAPS_AFTER_ALL_THREE)
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(|l| std::fs::canonicalize(l).expect("mapped file exists"))
        .collect();
    let facts = probe(&fx.venv_ml);
    let dup = facts
        .duplicates
        .iter()
        .find(|d| d.vendor == Vendor::GnuOpenmp)
        .expect("several GNU OpenMP copies");
    // Every mapped libgomp is a copy, and no two come from one group.
    for m in &mapped {
        assert!(dup.paths.contains(m), "{} not among {dup:#?}", m.display());
    }
    let groups_hit: BTreeSet<usize> = mapped
        .iter()
        .map(|m| {
            dup.groups
                .iter()
                .position(|g| g.paths.contains(m))
                .expect("in a group")
        })
        .collect();
    assert_eq!(groups_hit.len(), mapped.len(), "two alternatives mapped?");
    assert_eq!(
        dup.pool_count(),
        mapped.len(),
        "pools counted vs libgomp files in /proc/self/maps ({mapped:?}): {dup:#?}"
    );
    // scikit-learn's and xgboost's hash-renamed copies are alternatives.
    let alt = dup
        .alternatives()
        .find(|g| g.name.as_deref() == Some("libgomp-e985bcbb.so.1.0.0"))
        .expect("the e985bcbb copies are alternatives");
    assert_eq!(alt.paths.len(), 2, "{alt:#?}");
    // The rule never says "each has its own pool" of them.
    let report = evaluate(&facts, &Plan::default(), &Config::default());
    let f = report
        .findings
        .iter()
        .find(|f| f.rule_id == "CC016" && f.message.contains("GNU OpenMP"))
        .expect("CC016 on the GNU OpenMP pools, OMP_NUM_THREADS unset");
    assert!(
        !f.message.contains("each with its own pool"),
        "{}",
        f.message
    );
    assert!(
        f.message
            .contains(&format!("make {} thread pools", mapped.len())),
        "{}",
        f.message
    );
}

/// CC011 (two OpenMP runtimes in one process) pairs only runtimes that can
/// both be mapped: conda-forge's LLVM libomp installed as `libgomp.so.1`
/// and GNU's `libgomp.so.1` are alternatives of one name, one of them is
/// mapped. Built on the venv's real facts: LightGBM's system libgomp, and
/// a copy of its entry turned into that LLVM libomp.
#[test]
fn openmp_runtimes_known_by_one_name_are_not_mixed() {
    let fx = fixtures();
    let mut facts = probe(&fx.venv_ml);
    facts.libraries.retain(|l| {
        l.vendor.value != Vendor::GnuOpenmp || l.requested_as.iter().any(|r| r == "libgomp.so.1")
    });
    let gnu = facts
        .libraries
        .iter()
        .find(|l| l.vendor.value == Vendor::GnuOpenmp)
        .expect("the system libgomp")
        .clone();
    let mut llvm = gnu.clone();
    llvm.path = PathBuf::from("/opt/conda/lib/libomp.so");
    llvm.vendor.value = Vendor::LlvmOpenmp;
    llvm.soname = Some("libomp.so".into());
    let cc011 = |facts: &Facts| {
        evaluate(facts, &Plan::default(), &Config::default())
            .findings
            .into_iter()
            .filter(|f| f.rule_id == "CC011")
            .count()
    };
    let mut one_name = facts.clone();
    one_name.libraries.push(llvm.clone());
    assert!(gnu.is_alternative_to(&llvm));
    assert_eq!(cc011(&one_name), 0, "alternatives are never both mapped");
    let mut two_names = facts;
    llvm.requested_as = vec!["libomp.so".into()];
    two_names.libraries.push(llvm);
    assert_eq!(cc011(&two_names), 1, "libomp.so and libgomp.so.1 coexist");
}
