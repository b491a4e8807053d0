//! What the script linter's integration tests share: the fixtures in
//! `tests/scripts/`, linting one with its findings checked for
//! completeness, findings as (rule id, level, place) rows, and the facts
//! snapshots of `tests/snapshots/`.

#![allow(dead_code)] // each test crate uses its own part

use std::path::{Path, PathBuf};

use caiclust_probe::{EvidenceSource, Facts};
use caiclust_rules::{lint_script_file, Finding, Level};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(name)
}

/// (rule id, level, place): the place is the location after the file
/// name, `9:6` in a script, `cell 4:2:5` in a notebook.
pub type Row = (String, Level, String);

pub fn place(f: &Finding) -> String {
    let loc = f.location.as_deref().expect("location");
    let span = f.evidence[0].span.as_ref().expect("span");
    match span.cell {
        Some(cell) => {
            let want = format!(":cell {cell}:{}:{}", span.line, span.column);
            assert!(loc.ends_with(&want), "{loc} vs {span:?}");
            want[1..].to_string()
        }
        None => {
            let want = format!(":{}:{}", span.line, span.column);
            assert!(loc.ends_with(&want), "{loc} vs {span:?}");
            want[1..].to_string()
        }
    }
}

pub fn rows(findings: &[Finding]) -> Vec<Row> {
    let mut rows: Vec<(Row, (usize, usize, usize))> = findings
        .iter()
        .map(|f| {
            let s = f.evidence[0].span.as_ref().unwrap();
            (
                (f.rule_id.clone(), f.level, place(f)),
                (s.cell.unwrap_or(0), s.line, s.column),
            )
        })
        .collect();
    rows.sort_by(|a, b| (a.1, &a.0 .0).cmp(&(b.1, &b.0 .0)));
    rows.into_iter().map(|(r, _)| r).collect()
}

/// Lint a fixture; every finding must be complete and point into it.
pub fn lint(name: &str) -> Vec<Finding> {
    let findings = lint_script_file(&fixture(name), None).unwrap_or_else(|e| panic!("{e}"));
    for f in &findings {
        assert!(!f.message.is_empty() && f.fix.is_some(), "{f:#?}");
        let first = &f.evidence[0];
        assert_eq!(first.source, EvidenceSource::SourceCode, "{f:#?}");
        let span = first.span.as_ref().expect("span");
        assert!(span.path.ends_with(name), "{span:?}");
        let loc = f.location.as_deref().unwrap();
        assert!(loc.contains(name), "{loc}");
        place(f);
    }
    findings
}

pub fn row(id: &str, level: Level, place: &str) -> Row {
    (id.to_string(), level, place.to_string())
}

/// A facts snapshot of `tests/snapshots`.
pub fn snapshot_facts(name: &str) -> Facts {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    Facts::from_json(&std::fs::read_to_string(p).unwrap()).unwrap()
}
