//! Acceptance for issue #14, point 3: dependencies are resolved as glibc's
//! `ld.so` resolves them, with `DT_RPATH` inherited from the library that
//! loads, whatever order the scan meets the files in. The oracle is the
//! loader itself: `LD_DEBUG=libs` of a real load, and a real `dlopen`
//! through Python's ctypes.
//!
//! Unix only: the Linux dynamic loader of the fixture venvs' Pythons as the oracle.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use caiclust_probe::{
    probe_python, probe_python_imports, Facts, LiveOptions, ProbeOptions, RootKind, Vendor,
};
use caiclust_tests::fixtures;

fn test_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k != "LD_LIBRARY_PATH" && k != "VIRTUAL_ENV" && k != "CONDA_PREFIX")
        .collect()
}

/// For each library ld.so searched for (`find library=NAME`), the search
/// path line that found it, from `LD_DEBUG=libs` output.
fn ld_debug_searches(stderr: &str) -> BTreeMap<String, (String, PathBuf)> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut path_line = String::new();
    for line in stderr.lines().map(str::trim) {
        let line = line.split_once(':').map_or(line, |(_, rest)| rest.trim());
        if let Some(rest) = line.strip_prefix("find library=") {
            current = rest.split_whitespace().next().map(str::to_owned);
        } else if line.starts_with("search path=") {
            path_line = line.to_owned();
        } else if let (Some(rest), Some(name)) = (line.strip_prefix("trying file="), &current) {
            if Path::new(rest).is_file() {
                let real = std::fs::canonicalize(rest).expect("found file exists");
                out.entry(name.clone()).or_insert((path_line.clone(), real));
                current = None;
            }
        }
    }
    out
}

fn ld_debug(python: &Path, code: &str) -> String {
    let out = Command::new(python)
        .args(["-c", code])
        .env_remove("LD_LIBRARY_PATH")
        .env("LD_DEBUG", "libs")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// numpy 1.x's OpenBLAS needs the libgfortran beside it and has no
/// RUNPATH: ld.so finds it through the `DT_RPATH` of the extension module
/// that loads the OpenBLAS. Read from a live process (`--import numpy`),
/// every mapped file is a root and the scan may meet the libgfortran
/// before its loader: nothing may be reported missing.
#[test]
fn numpy1_openblas_finds_its_libgfortran_through_the_inherited_rpath() {
    let fx = fixtures();
    let searches = ld_debug(&fx.venv_numpy1, "import numpy");
    let searches = ld_debug_searches(&searches);
    let (gfortran_rule, gfortran) = searches
        .iter()
        .find(|(name, _)| name.starts_with("libgfortran-"))
        .map(|(_, v)| v.clone())
        .expect("ld.so searched for the bundled libgfortran");
    assert!(
        gfortran_rule.contains("RPATH from file") && gfortran_rule.contains("_multiarray_umath"),
        "ld.so found it through the extension module's RPATH: {gfortran_rule}"
    );
    // The order of the mapped files changes from run to run (ASLR).
    let mut facts: Option<Facts> = None;
    for _ in 0..3 {
        let live = probe_python_imports(
            &ProbeOptions {
                python: Some(fx.venv_numpy1.clone()),
                target_os: None,
                env: Some(test_env()),
            },
            &["numpy".to_owned()],
            &LiveOptions {
                query_helper: None,
                import_deadline: Duration::from_secs(60),
                ..LiveOptions::default()
            },
        )
        .expect("probe numpy 1.x imported");
        assert!(
            live.scan.unresolved.is_empty(),
            "ld.so found everything: {:#?}",
            live.scan.unresolved
        );
        facts = Some(live);
    }
    let facts = facts.expect("probed");
    let openblas = facts
        .libraries_of(Vendor::Openblas)
        .next()
        .expect("numpy's OpenBLAS");
    assert!(
        openblas.dependencies.contains(&gfortran),
        "{} not among {:#?}",
        gfortran.display(),
        openblas.dependencies
    );
}

const LIB_C: &str = "#include <omp.h>\nint c_threads(void) { int n = 0;\n#pragma omp parallel reduction(+:n)\n n += 1;\n return n; }\n";
const LIB_B: &str = "int c_threads(void);\nint b_threads(void) { return c_threads(); }\n";
const LIB_A: &str = "int b_threads(void);\nint a_threads(void) { return b_threads(); }\n";

fn gcc(dir: &Path, args: &[&str]) {
    let out = Command::new("gcc")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A package whose `__init__.py` loads `libalpha.so` with ctypes; libalpha has
/// `DT_RPATH $ORIGIN/.libs`, and finds libbeta there; libbeta (no RPATH or
/// RUNPATH) needs libgamma, which ld.so finds through libalpha's inherited RPATH
/// (`$ORIGIN` being libalpha's folder); libgamma needs GNU OpenMP.
fn build_package(site: &Path) -> PathBuf {
    let pkg = site.join("cpkg");
    let libs = pkg.join(".libs");
    std::fs::create_dir_all(&libs).expect("mkdir");
    for (name, text) in [("a.c", LIB_A), ("b.c", LIB_B), ("c.c", LIB_C)] {
        std::fs::write(pkg.join(name), text).expect("write source");
    }
    gcc(
        &pkg,
        &[
            "-shared",
            "-fPIC",
            "-fopenmp",
            "-Wl,-soname,libgamma.so",
            "-o",
            ".libs/libgamma.so",
            "c.c",
        ],
    );
    gcc(
        &pkg,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libbeta.so",
            "-o",
            ".libs/libbeta.so",
            "b.c",
            "-L.libs",
            "-lgamma",
        ],
    );
    gcc(
        &pkg,
        &[
            "-shared",
            "-fPIC",
            "-o",
            "libalpha.so",
            "a.c",
            "-L.libs",
            "-lbeta",
            "-Wl,-rpath-link,.libs",
            "-Wl,--disable-new-dtags,-rpath,$ORIGIN/.libs",
        ],
    );
    std::fs::write(
        pkg.join("__init__.py"),
        "import ctypes, os\nlib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), 'libalpha.so'))\n",
    )
    .expect("write __init__.py");
    pkg
}

/// A new venv of Debian's interpreter in `dir`: its python and its
/// site-packages.
fn make_venv(dir: &Path) -> (PathBuf, PathBuf) {
    let fx = fixtures();
    let venv = dir.join("venv");
    let made = Command::new(&fx.debian_python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("make a venv");
    assert!(made.success());
    let site = std::fs::read_dir(venv.join("lib"))
        .expect("venv lib")
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("site-packages");
    (venv.join("bin").join("python"), site)
}

#[test]
fn a_library_without_rpath_resolves_through_its_loaders_rpath() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (python, site) = make_venv(dir.path());
    let pkg = std::fs::canonicalize(build_package(&site)).expect("package");

    // The oracle: a real dlopen through ctypes, and how ld.so found libgamma.
    let stderr = ld_debug(&python, "import cpkg; assert cpkg.lib.a_threads() >= 1");
    let searches = ld_debug_searches(&stderr);
    let (rule, found) = searches
        .get("libgamma.so")
        .expect("ld.so searched for libgamma.so");
    assert_eq!(found, &pkg.join(".libs/libgamma.so"));
    assert!(
        rule.contains("RPATH from file") && rule.contains("libalpha.so"),
        "ld.so used libalpha's RPATH: {rule}"
    );
    // libbeta on its own cannot find libgamma: only through libalpha.
    let alone = Command::new(&python)
        .args(["-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])"])
        .arg(pkg.join(".libs/libbeta.so"))
        .output()
        .expect("run python");
    assert!(!alone.status.success(), "libbeta alone should not load");

    let facts = probe_python(&ProbeOptions {
        python: Some(python),
        target_os: None,
        env: Some(test_env()),
    })
    .expect("probe the venv");
    assert!(
        facts.scan.unresolved.is_empty(),
        "ld.so found everything: {:#?}",
        facts.scan.unresolved
    );
    let gomp = facts
        .libraries_of(Vendor::GnuOpenmp)
        .find(|l| l.needed_by.contains(&pkg.join(".libs/libgamma.so")))
        .expect("libgamma's GNU OpenMP");
    let root = gomp
        .load_roots
        .iter()
        .find(|r| r.package.as_deref() == Some("cpkg"))
        .expect("reached from cpkg");
    assert_eq!(root.kind, RootKind::PackageLibrary);
    assert_eq!(root.path, pkg.join("libalpha.so"));
    let step = format!(
        "RPATH $ORIGIN/.libs → {}",
        pkg.join("./.libs/libgamma.so").display()
    );
    assert!(
        gomp.reached_via
            .iter()
            .any(|s| s.contains("RPATH $ORIGIN/.libs") && s.ends_with("libgamma.so")),
        "the chain shows libalpha's RPATH finding libgamma ({step}): {:#?}",
        gomp.reached_via
    );
}

const LIB_MID: &str = "int b_threads(void);\nint mid_threads(void) { return b_threads(); }\n";
const LIB_TOP: &str = "int mid_threads(void);\nint a_threads(void) { return mid_threads(); }\n";

/// As above with a library with `DT_RUNPATH` between: top (RPATH
/// `$ORIGIN/.libs`) → mid (RUNPATH `$ORIGIN`) → beta (nothing) → gamma.
/// glibc ignores mid's RPATH but walks on past it to top's.
#[test]
fn a_loader_with_runpath_does_not_end_the_rpath_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (python, site) = make_venv(dir.path());
    let pkg = std::fs::canonicalize(build_package(&site)).expect("package");
    std::fs::write(pkg.join("mid.c"), LIB_MID).expect("write");
    std::fs::write(pkg.join("top.c"), LIB_TOP).expect("write");
    gcc(
        &pkg,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libmid.so",
            "-o",
            ".libs/libmid.so",
            "mid.c",
            "-L.libs",
            "-lbeta",
            "-Wl,-rpath-link,.libs",
            "-Wl,--enable-new-dtags,-rpath,$ORIGIN",
        ],
    );
    gcc(
        &pkg,
        &[
            "-shared",
            "-fPIC",
            "-o",
            "libtop.so",
            "top.c",
            "-L.libs",
            "-lmid",
            "-Wl,-rpath-link,.libs",
            "-Wl,--disable-new-dtags,-rpath,$ORIGIN/.libs",
        ],
    );
    std::fs::remove_file(pkg.join("libalpha.so")).expect("only the new chain");
    std::fs::write(
        pkg.join("__init__.py"),
        "import ctypes, os\nlib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), 'libtop.so'))\n",
    )
    .expect("write __init__.py");
    let stderr = ld_debug(&python, "import cpkg; assert cpkg.lib.a_threads() >= 1");
    let searches = ld_debug_searches(&stderr);
    let (rule, found) = searches
        .get("libgamma.so")
        .expect("ld.so searched for libgamma.so");
    assert_eq!(found, &pkg.join(".libs/libgamma.so"));
    assert!(
        rule.contains("RPATH from file") && rule.contains("libtop.so"),
        "ld.so used libtop's RPATH past libmid's RUNPATH: {rule}"
    );
    let facts = probe_python(&ProbeOptions {
        python: Some(python),
        target_os: None,
        env: Some(test_env()),
    })
    .expect("probe the venv");
    assert!(
        facts.scan.unresolved.is_empty(),
        "ld.so found everything: {:#?}",
        facts.scan.unresolved
    );
    let gomp = facts
        .libraries_of(Vendor::GnuOpenmp)
        .find(|l| l.needed_by.contains(&pkg.join(".libs/libgamma.so")))
        .expect("libgamma's GNU OpenMP");
    assert!(
        gomp.load_roots
            .iter()
            .any(|r| r.kind == RootKind::PackageLibrary && r.path == pkg.join("libtop.so")),
        "{:#?}",
        gomp.load_roots
    );
}
