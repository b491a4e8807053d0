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
