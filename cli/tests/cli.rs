//! The `caiclust probe` command line: the readable summary, JSON, colour.

use std::process::Command;

use caiclust_core::probe::{Facts, Vendor};
use caiclust_tests::{fixtures, wheel};

fn caiclust() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_caiclust"));
    c.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
    c
}

#[test]
fn summary_names_runtimes_and_duplicates() {
    let fx = fixtures();
    let out = caiclust()
        .args(["probe", "--python"])
        .arg(&fx.venv_pypi)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OpenBLAS 0.3."), "{text}");
    assert!(text.contains("GNU OpenMP"), "{text}");
    assert!(text.contains("parallel framework: pthreads"), "{text}");
    assert!(text.contains("several copies"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no colour when stdout is not a terminal"
    );
}

#[test]
fn json_is_the_full_facts_document() {
    let fx = fixtures();
    let out = caiclust()
        .args(["probe", "--json", "--tree"])
        .arg(fx.wheel(wheel::SKLEARN_WIN_AMD64))
        .output()
        .expect("run");
    assert!(out.status.success());
    let facts = Facts::from_json(&String::from_utf8_lossy(&out.stdout)).expect("valid facts");
    assert!(facts
        .libraries
        .iter()
        .any(|l| l.vendor.value == Vendor::MsvcOpenmp));
}

#[test]
fn colour_follows_flag_and_no_color() {
    let fx = fixtures();
    let dir = fx.wheel(wheel::NUMPY_WIN_AMD64);
    let out = caiclust()
        .args(["--color", "always", "probe", "--tree"])
        .arg(dir)
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains('\u{1b}'),
        "--color always colours"
    );
    let out = caiclust()
        .env("NO_COLOR", "1")
        .args(["probe", "--tree"])
        .arg(dir)
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\u{1b}'));
    let out = caiclust()
        .args(["--color", "never", "probe", "--tree"])
        .arg(dir)
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\u{1b}'));
}

#[test]
fn verbose_shows_evidence_and_the_loader_path() {
    let fx = fixtures();
    let out = caiclust()
        .args(["probe", "--verbose", "--tree"])
        .arg(fx.wheel(wheel::NUMPY_WIN_AMD64))
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("export scipy_openblas_get_config64_"),
        "{text}"
    );
    assert!(
        text.contains("export-directory name libscipy_openblas64_.dll"),
        "{text}"
    );
    assert!(text.contains("needs libscipy_openblas64_-"), "{text}");
}

/// Spellings of the facts' enums that only `Debug` produces: none may reach
/// the summary (they did: "(found via SearchPath)", "NEEDED libgomp.so.1
/// (GnuOpenmp)").
const DEBUG_SPELLINGS: &[&str] = &[
    "Openblas",
    "GnuOpenmp",
    "LlvmOpenmp",
    "IntelOpenmp",
    "MsvcOpenmp",
    "Flexiblas",
    "Openmp",
    "Opencv",
    "SearchPath",
    "VirtualEnv",
    "CondaPrefix",
    "Explicit",
    "RuntimeSelected",
    "Lp64",
    "Ilp64",
    "FileName",
    "SourceCode",
];

fn assert_no_debug_spellings(text: &str) {
    for debug in DEBUG_SPELLINGS {
        assert!(!text.contains(debug), "{debug:?} in:\n{text}");
    }
}

#[test]
fn summary_names_vendors_as_people_write_them() {
    // The PyPI venv's site-packages as a plain folder: three OpenBLAS
    // copies (numpy, scipy, OpenCV) and scikit-learn's libgomp.
    let fx = fixtures();
    let venv = fx.venv_pypi.parent().and_then(|bin| bin.parent()).unwrap();
    let site_packages = std::fs::read_dir(venv.join("lib"))
        .expect("the venv's lib folder")
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("site-packages");
    let out = caiclust()
        .args(["--color", "never", "probe", "--verbose", "--tree"])
        .arg(&site_packages)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(binaries for Linux)"), "{text}");
    assert!(text.contains("\n  OpenBLAS 0.3."), "{text}");
    assert!(text.contains("threading: pthreads"), "{text}");
    assert!(text.contains("LP64"), "{text}");
    assert!(text.contains("\n  GNU OpenMP (libgomp)"), "{text}");
    assert!(text.contains("\n  OpenBLAS ×3\n"), "{text}");
    assert_no_debug_spellings(&text);
}

#[test]
fn summary_says_how_the_interpreter_was_found() {
    let fx = fixtures();
    let bin = fx.venv_pypi.parent().unwrap();
    let mut path = std::ffi::OsString::from(bin);
    path.push(":/usr/bin:/bin");
    let out = caiclust()
        .args(["--color", "never", "probe", "--no-runtime-queries"])
        .env("PATH", path)
        .env_remove("VIRTUAL_ENV")
        .env_remove("CONDA_PREFIX")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(found via PATH)"), "{text}");
    assert_no_debug_spellings(&text);

    let out = caiclust()
        .args([
            "--color",
            "never",
            "probe",
            "--no-runtime-queries",
            "--python",
        ])
        .arg(&fx.venv_pypi)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(found via --python)"), "{text}");
    assert_no_debug_spellings(&text);
}

/// `probe --python --json` with its cache in `xdg` (`no_cache`: off), as
/// JSON without what differs between any two runs: the time it was
/// collected, the free memory, the scan's duration and its cache flag
/// (returned apart).
fn probe_json(xdg: &std::path::Path, no_cache: bool) -> (serde_json::Value, bool) {
    let fx = fixtures();
    let mut cmd = caiclust();
    // cargo's LD_LIBRARY_PATH names target/debug, which it has just
    // written to: folders the loader searches, too fresh to be trusted.
    cmd.args(["probe", "--json", "--python"])
        .arg(&fx.venv_pypi)
        .env("XDG_CACHE_HOME", xdg)
        .env_remove("LD_LIBRARY_PATH");
    if no_cache {
        cmd.env("CAICLUST_NO_CACHE", "1");
    } else {
        cmd.env_remove("CAICLUST_NO_CACHE");
    }
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut facts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let scan = facts["scan"].as_object_mut().expect("scan");
    let cached = scan.remove("from_cache").and_then(|v| v.as_bool());
    scan.remove("elapsed_ms");
    facts
        .as_object_mut()
        .expect("facts")
        .remove("collected_at_unix");
    facts["host"]
        .as_object_mut()
        .expect("host")
        .remove("memory_available_bytes");
    (facts, cached.expect("scan.from_cache is always written"))
}

#[test]
fn cached_scan_prints_the_same_facts() {
    let xdg = tempfile::tempdir().expect("tempdir");
    let (cold, cold_cached) = probe_json(xdg.path(), true);
    let (first, first_cached) = probe_json(xdg.path(), false);
    let (warm, warm_cached) = probe_json(xdg.path(), false);
    assert!(!cold_cached && !first_cached, "nothing cached yet");
    assert!(warm_cached, "the second run reads the scan cache");
    assert_eq!(cold, warm, "cached facts differ from a fresh scan");
    assert_eq!(first, warm);

    let fx = fixtures();
    let out = caiclust()
        .args(["probe", "--python"])
        .arg(&fx.venv_pypi)
        .env("XDG_CACHE_HOME", xdg.path())
        .env_remove("CAICLUST_NO_CACHE")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" ms (cached); "), "{text}");
}
