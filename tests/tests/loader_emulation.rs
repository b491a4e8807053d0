//! Acceptance for issue #14, point 3: dependencies are resolved as glibc's
//! `ld.so` resolves them, with `DT_RPATH` inherited from the library that
//! loads, whatever order the scan meets the files in. The oracle is the
//! loader itself: `LD_DEBUG=libs` of a real load, and a real `dlopen`
//! through Python's ctypes.

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
    let facts: Facts = probe_python_imports(
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
        facts.scan.unresolved.is_empty(),
        "ld.so found everything: {:#?}",
        facts.scan.unresolved
    );
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

/// A package whose `__init__.py` loads `libA.so` with ctypes; libA has
/// `DT_RPATH $ORIGIN/.libs`, and finds libB there; libB (no RPATH or
/// RUNPATH) needs libC, which ld.so finds through libA's inherited RPATH
/// (`$ORIGIN` being libA's folder); libC needs GNU OpenMP.
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
            "-Wl,-soname,libC.so",
            "-o",
            ".libs/libC.so",
            "c.c",
        ],
    );
    gcc(
        &pkg,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libB.so",
            "-o",
            ".libs/libB.so",
            "b.c",
            "-L.libs",
            "-lC",
        ],
    );
    gcc(
        &pkg,
        &[
            "-shared",
            "-fPIC",
            "-o",
            "libA.so",
            "a.c",
            "-L.libs",
            "-lB",
            "-Wl,-rpath-link,.libs",
            "-Wl,--disable-new-dtags,-rpath,$ORIGIN/.libs",
        ],
    );
    std::fs::write(
        pkg.join("__init__.py"),
        "import ctypes, os\nlib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), 'libA.so'))\n",
    )
    .expect("write __init__.py");
    pkg
}

#[test]
fn a_library_without_rpath_resolves_through_its_loaders_rpath() {
    let fx = fixtures();
    let dir = tempfile::tempdir().expect("tempdir");
    let venv = dir.path().join("venv");
    let made = Command::new(&fx.debian_python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("make a venv");
    assert!(made.success());
    let python = venv.join("bin").join("python");
    let site = std::fs::read_dir(venv.join("lib"))
        .expect("venv lib")
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("site-packages");
    let pkg = std::fs::canonicalize(build_package(&site)).expect("package");

    // The oracle: a real dlopen through ctypes, and how ld.so found libC.
    let stderr = ld_debug(&python, "import cpkg; assert cpkg.lib.a_threads() >= 1");
    let searches = ld_debug_searches(&stderr);
    let (rule, found) = searches.get("libC.so").expect("ld.so searched for libC.so");
    assert_eq!(found, &pkg.join(".libs/libC.so"));
    assert!(
        rule.contains("RPATH from file") && rule.contains("libA.so"),
        "ld.so used libA's RPATH: {rule}"
    );
    // libB on its own cannot find libC: only through libA.
    let alone = Command::new(&python)
        .args(["-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])"])
        .arg(pkg.join(".libs/libB.so"))
        .output()
        .expect("run python");
    assert!(!alone.status.success(), "libB alone should not load");

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
        .find(|l| l.needed_by.contains(&pkg.join(".libs/libC.so")))
        .expect("libC's GNU OpenMP");
    let root = gomp
        .load_roots
        .iter()
        .find(|r| r.package.as_deref() == Some("cpkg"))
        .expect("reached from cpkg");
    assert_eq!(root.kind, RootKind::PackageLibrary);
    assert_eq!(root.path, pkg.join("libA.so"));
    let step = format!(
        "RPATH $ORIGIN/.libs → {}",
        pkg.join("./.libs/libC.so").display()
    );
    assert!(
        gomp.reached_via
            .iter()
            .any(|s| s.contains("RPATH $ORIGIN/.libs") && s.ends_with("libC.so")),
        "the chain shows libA's RPATH finding libC ({step}): {:#?}",
        gomp.reached_via
    );
}
