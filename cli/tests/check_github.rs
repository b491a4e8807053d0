//! `--format github`: one workflow command per finding.

mod check_support;
use check_support::*;

use caiclust_cli::output::{self, CheckOutput, Format};

#[test]
fn binary_prints_only_workflow_commands() {
    let f = pypi_linux();
    let o = run(
        CHECK,
        &[
            "--facts",
            f.to_str().unwrap(),
            "--start-method",
            "fork",
            "--format",
            "github",
            kmeans_across_fork().to_str().unwrap(),
        ],
    );
    // scikit-learn's libgomp run across fork: CC001 denies, exit 1.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.trim().is_empty(), "no annotations at all");
    for line in out.lines() {
        let ok = ["::error ", "::warning ", "::notice "]
            .iter()
            .any(|p| line.starts_with(p));
        assert!(ok, "not a workflow command: {line}");
        assert!(line.contains("title=CC"), "{line}");
        assert!(line.contains("::"), "{line}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("::error ") && l.contains("title=CC001 ")),
        "{out}"
    );
}

#[test]
fn synthetic_findings_render_as_annotations() {
    let facts = facts(&pypi_linux());
    let report = synthetic_report();
    let text = output::render(
        Format::Github,
        &CheckOutput {
            facts: Some(&facts),
            facts_path: None,
            scripts: &[],
            script_errors: &[],
            report: &report,
            verdict: None,
        },
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with(
            "::error file=/opt/my env/lib/libgomp-e985bcbb.so.1.0.0,title=CC001 gnu-openmp-after-fork::libgomp is loaded, and workers fork: 100%25 hang risk"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("%0AFix: use spawn:%0Amultiprocessing"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("See `caiclust explain CC001`"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("::warning title=CC010 threads-times-workers::OMP_NUM_THREADS"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("::notice title=CC020 duplicate-openblas::"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with(
            "::warning file=src/run%2Cjob.py,line=12,col=5,title=CC030 script-check::"
        ),
        "{}",
        lines[3]
    );
}
