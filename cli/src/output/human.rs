//! `--format human`: each finding with its level, id, name, message,
//! location, evidence and fix, then a summary line. Colour follows
//! [`crate::color`] (the `colored` crate's global switch).

use std::fmt::Write as _;

use caiclust_rules::{Finding, Level};
use colored::{ColoredString, Colorize};

use super::{counts, CheckOutput};

fn level_word(level: Level) -> ColoredString {
    match level {
        Level::Error => "error".red().bold(),
        Level::Warning => "warning".yellow().bold(),
        Level::Info => "info".cyan().bold(),
        Level::Allow => "allow".normal(),
    }
}

fn finding(out: &mut String, f: &Finding) {
    let _ = writeln!(
        out,
        "{}{} {}: {}",
        level_word(f.level),
        format!("[{}]", f.rule_id).bold(),
        f.rule_name.bold(),
        f.message
    );
    let arrow = "  -->".blue().bold();
    let bar = "   =".blue().bold();
    if let Some(loc) = &f.location {
        let _ = writeln!(out, "{arrow} {loc}");
    }
    for e in &f.evidence {
        let _ = writeln!(out, "{bar} evidence ({}): {}", e.source, e.detail);
    }
    if let Some(fix) = &f.fix {
        let mut lines = fix.lines();
        let _ = writeln!(
            out,
            "{bar} {} {}",
            "fix:".green().bold(),
            lines.next().unwrap_or("")
        );
        for l in lines {
            let _ = writeln!(out, "        {l}");
        }
    }
    // Most rules' fixes already point at the explanation.
    if !f
        .fix
        .as_deref()
        .is_some_and(|fix| fix.contains("caiclust explain"))
    {
        let _ = writeln!(out, "{bar} see `caiclust explain {}`", f.rule_id);
    }
    out.push('\n');
}

fn plural(n: usize, word: &str) -> String {
    match (n, word) {
        (1, w) => format!("1 {w}"),
        (n, "info") => format!("{n} info"),
        (n, w) => format!("{n} {w}s"),
    }
}

/// Render for people.
pub fn render(out: &CheckOutput<'_>) -> String {
    let mut s = String::new();
    for f in &out.report.findings {
        finding(&mut s, f);
    }
    let subject = out.subject();
    let mut from = out
        .facts_path
        .map(|p| format!(" (facts from {})", p.display()))
        .unwrap_or_default();
    if out.failed() {
        let n = out.script_errors.len();
        from.push_str(&format!(
            " ({} could not be linted: see the error{} above)",
            if n == 1 {
                "1 file".to_string()
            } else {
                format!("{n} files")
            },
            if n == 1 { "" } else { "s" }
        ));
    }
    if let Some(v) = out.verdict {
        let _ = writeln!(s, "{} {}", "plan:".bold(), v.summary());
    }
    if out.report.findings.is_empty() && !out.failed() {
        let _ = writeln!(
            s,
            "{}: no findings for {subject}{from}",
            "ok".green().bold()
        );
        return s;
    }
    let parts: Vec<String> = counts(out.report)
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(l, n)| plural(*n, l.as_str()))
        .collect();
    let verdict = if out.report.denied() {
        format!(
            "fails (findings at `{}` or above)",
            out.report.deny_level.as_str()
        )
        .red()
        .bold()
    } else {
        format!(
            "passes (nothing at `{}` or above)",
            out.report.deny_level.as_str()
        )
        .green()
        .bold()
    };
    let _ = writeln!(s, "{} for {subject}{from}: {verdict}", parts.join(", "));
    s
}
