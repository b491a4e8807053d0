//! `caiclust-check` output: one [`Format`], one renderer per module.
//!
//! * [`human`]: for people, coloured when [`crate::color`] allows;
//! * [`json`]: the [`Report`] with the subject and facts path;
//! * [`sarif`]: SARIF 2.1.0 for code scanning;
//! * [`github`]: GitHub Actions workflow commands (annotations).

pub mod github;
pub mod human;
pub mod json;
pub mod sarif;

use std::path::{Path, PathBuf};

use caiclust_core::probe::{EvidenceSource, Facts, SourceSpan};
use caiclust_rules::{Finding, Level, Report, ScriptError};

/// How `caiclust-check` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Readable text, coloured on a terminal.
    #[default]
    Human,
    /// The report as one JSON document.
    Json,
    /// SARIF 2.1.0, for code-scanning services.
    Sarif,
    /// GitHub Actions workflow commands (`::error ...`).
    Github,
}

/// Everything a renderer needs.
#[derive(Debug, Clone, Copy)]
pub struct CheckOutput<'a> {
    /// The facts checked; `None` when only scripts were linted.
    pub facts: Option<&'a Facts>,
    /// The snapshot the facts were read from (`--facts`).
    pub facts_path: Option<&'a PathBuf>,
    /// The scripts and notebooks linted.
    pub scripts: &'a [PathBuf],
    /// The scripts and notebooks that could not be linted.
    pub script_errors: &'a [ScriptError],
    pub report: &'a Report,
    /// The hazard policy's verdict on the plan checked (with facts).
    pub verdict: Option<&'a caiclust_rules::Verdict>,
}

impl<'a> CheckOutput<'a> {
    /// The output of a check of facts alone.
    pub fn of_facts(facts: &'a Facts, report: &'a Report) -> Self {
        Self {
            facts: Some(facts),
            facts_path: None,
            scripts: &[],
            script_errors: &[],
            report,
            verdict: None,
        }
    }

    /// Did some input fail (exit code 2)?
    pub fn failed(&self) -> bool {
        !self.script_errors.is_empty()
    }

    /// One line naming what was checked: `Python /env/bin/python`,
    /// `Python /env/bin/python and 2 scripts`, `a script lint of x.py`.
    pub fn subject(&self) -> String {
        let scripts = match self.scripts {
            [] => None,
            [one] => Some(one.display().to_string()),
            many => Some(format!("{} scripts and notebooks", many.len())),
        };
        match (self.facts, scripts) {
            (Some(f), None) => crate::input::describe_subject(f),
            (Some(f), Some(s)) => format!("{} and {s}", crate::input::describe_subject(f)),
            (None, Some(s)) => format!("a script lint of {s}"),
            (None, None) => "nothing".into(),
        }
    }

    /// What was checked, as JSON: the facts' subject, or for scripts alone
    /// `{"kind": "scripts", "paths": [...]}`.
    pub fn subject_json(&self) -> serde_json::Value {
        match self.facts {
            Some(f) => serde_json::to_value(&f.subject).unwrap_or_default(),
            None => serde_json::json!({
                "kind": "scripts",
                "paths": self.scripts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Where in a source file a finding is: its first source-code evidence.
pub fn source_span(f: &Finding) -> Option<&SourceSpan> {
    f.evidence
        .iter()
        .find(|e| e.source == EvidenceSource::SourceCode)
        .and_then(|e| e.span.as_ref())
}

/// The place of a script error in its file, if it has one: (line, column).
pub fn error_position(e: &ScriptError) -> Option<(usize, Option<usize>)> {
    match e {
        ScriptError::Decode { line, column, .. } => Some((*line, Some(*column))),
        ScriptError::Coding { line, .. } => Some((*line, None)),
        ScriptError::Notebook {
            position: Some((line, column)),
            ..
        } => Some((*line, Some(*column))),
        // A notebook's cell line is not a line of the file.
        ScriptError::Syntax {
            cell: None,
            line,
            column,
            ..
        } => Some((*line, Some(*column))),
        _ => None,
    }
}

/// The path of a script error's file.
pub fn error_path(e: &ScriptError) -> &Path {
    e.path()
}

/// Render the report in `format`.
pub fn render(format: Format, out: &CheckOutput<'_>) -> String {
    match format {
        Format::Human => human::render(out),
        Format::Json => json::render(out),
        Format::Sarif => sarif::render(out),
        Format::Github => github::render(out),
    }
}

/// Where a finding points, as parsed from [`caiclust_rules::Finding::location`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file, with an optional line and column (`path:line:column`).
    File {
        path: String,
        line: Option<u64>,
        column: Option<u64>,
    },
    /// An environment variable (`OMP_NUM_THREADS`).
    Variable(String),
    /// Anything else: a library or module by name.
    Module(String),
}

impl Location {
    /// Classify a location string: paths (with `/` or `\`) are files, an
    /// upper-case identifier is an environment variable, anything else is
    /// a library or module name. A notebook place (`nb.ipynb:cell 3:2:5`)
    /// is the file without a line: the cell's line is not a line of the
    /// file (renderers take the file's line from the finding's evidence).
    pub fn parse(s: &str) -> Location {
        if let Some((path, rest)) = s.split_once(":cell ") {
            if rest
                .split(':')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
                return Location::File {
                    path: path.to_string(),
                    line: None,
                    column: None,
                };
            }
        }
        let (base, line, column) = split_line_column(s);
        // A path with folders, or a bare file name that carries a line
        // number (`bad.py:9:6`), is a file.
        if base.contains('/') || base.contains('\\') || (line.is_some() && base.contains('.')) {
            return Location::File {
                path: base.to_string(),
                line,
                column,
            };
        }
        let is_var = !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if is_var {
            Location::Variable(s.to_string())
        } else {
            Location::Module(s.to_string())
        }
    }
}

/// `path:12:3` → (`path`, 12, 3); `path:12` → (`path`, 12, None).
fn split_line_column(s: &str) -> (&str, Option<u64>, Option<u64>) {
    let num = |t: &str| -> Option<u64> {
        (!t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let mut parts = s.rsplitn(3, ':');
    let last = parts.next();
    let mid = parts.next();
    let rest = parts.next();
    match (rest, mid.and_then(num), last.and_then(num)) {
        (Some(base), Some(line), Some(col)) if !base.is_empty() => (base, Some(line), Some(col)),
        _ => match s.rsplit_once(':') {
            Some((base, l)) if !base.is_empty() && num(l).is_some() => (base, num(l), None),
            _ => (s, None, None),
        },
    }
}

/// Findings per level, most severe first, for summary lines.
pub fn counts(report: &Report) -> [(Level, usize); 3] {
    let n = |l: Level| report.findings.iter().filter(|f| f.level == l).count();
    [
        (Level::Error, n(Level::Error)),
        (Level::Warning, n(Level::Warning)),
        (Level::Info, n(Level::Info)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_classified() {
        assert_eq!(
            Location::parse("OMP_NUM_THREADS"),
            Location::Variable("OMP_NUM_THREADS".into())
        );
        assert_eq!(
            Location::parse("libgomp.so.1"),
            Location::Module("libgomp.so.1".into())
        );
        assert_eq!(
            Location::parse("/a/libgomp.so.1"),
            Location::File {
                path: "/a/libgomp.so.1".into(),
                line: None,
                column: None
            }
        );
        assert_eq!(
            Location::parse("src/x.py:12:3"),
            Location::File {
                path: "src/x.py".into(),
                line: Some(12),
                column: Some(3)
            }
        );
        assert_eq!(
            Location::parse(r"C:\env\x.py:7"),
            Location::File {
                path: r"C:\env\x.py".into(),
                line: Some(7),
                column: None
            }
        );
        assert_eq!(
            Location::parse("./nb.ipynb:cell 3:2:5"),
            Location::File {
                path: "./nb.ipynb".into(),
                line: None,
                column: None
            }
        );
        assert_eq!(
            Location::parse(r"C:\env\vcomp140.dll"),
            Location::File {
                path: r"C:\env\vcomp140.dll".into(),
                line: None,
                column: None
            }
        );
    }
}
