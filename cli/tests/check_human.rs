//! `--format human`: colour on request or on a terminal, never with
//! `NO_COLOR` or `--color never`; every finding names its rule and how to
//! read more; a summary line ends the output.

mod check_support;
use check_support::*;

use std::process::Command;

use caiclust_cli::output::{self, CheckOutput, Format};

const ESC: &str = "\u{1b}[";

fn human(args: &[&str], no_color: bool) -> (Option<i32>, String) {
    let f = pypi_linux();
    let mut cmd = Command::new(CHECK);
    cmd.args(["--facts", f.to_str().unwrap(), "--start-method", "fork"])
        .arg(kmeans_across_fork())
        .args(args)
        .env_remove("CLICOLOR_FORCE")
        .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let o = cmd.output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn color_always_colours_and_never_does_not() {
    let (_, always) = human(&["--color", "always"], false);
    assert!(always.contains(ESC), "{always}");
    let (_, never) = human(&["--color", "never"], false);
    assert!(!never.contains(ESC), "{never}");
}

#[test]
fn no_color_and_pipes_get_plain_text() {
    let (_, auto_piped) = human(&[], false);
    assert!(!auto_piped.contains(ESC), "{auto_piped}");
    let (_, no_color) = human(&["--color", "auto"], true);
    assert!(!no_color.contains(ESC), "{no_color}");
}

#[test]
fn binary_summary_line() {
    // The snapshot has scikit-learn's libgomp, the script runs it before
    // the fork and in the workers, and the start method is fork: CC001
    // denies, so the summary must say the check fails.
    let (code, text) = human(&["--color", "never"], false);
    assert_eq!(code, Some(1), "{text}");
    let last = text.lines().last().unwrap_or("");
    assert!(last.contains(".fixtures/venv-pypi/bin/python"), "{text}");
    assert!(last.contains("check-pypi-linux.json"), "{text}");
    assert!(last.contains("fails"), "{text}");
    assert!(text.contains("error[CC001]"), "{text}");
    assert!(text.contains("see `caiclust explain CC001`"), "{text}");
}

#[test]
fn each_finding_has_its_parts() {
    colored::control::set_override(false);
    let facts = facts(&pypi_linux());
    let report = synthetic_report();
    let text = output::render(
        Format::Human,
        &CheckOutput {
            facts: Some(&facts),
            facts_path: None,
            scripts: &[],
            script_errors: &[],
            report: &report,
            verdict: None,
        },
    );
    assert!(!text.contains(ESC), "{text}");
    assert!(
        text.contains("error[CC001] gnu-openmp-after-fork: libgomp is loaded, and workers fork"),
        "{text}"
    );
    assert!(
        text.contains("  --> /opt/my env/lib/libgomp-e985bcbb.so.1.0.0"),
        "{text}"
    );
    assert!(
        text.contains("   = evidence (static): NEEDED libgomp.so.1"),
        "{text}"
    );
    assert!(
        text.contains("   = fix: use spawn:\n        multiprocessing.set_start_method('spawn')"),
        "{text}"
    );
    assert!(text.contains("   = see `caiclust explain CC001`"), "{text}");
    assert!(
        text.contains("warning[CC010] threads-times-workers"),
        "{text}"
    );
    assert!(text.contains("info[CC020] duplicate-openblas"), "{text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("1 error, 2 warnings, 1 info for Python "),
        "{last}"
    );
    assert!(
        last.ends_with("fails (findings at `error` or above)"),
        "{last}"
    );
}
