//! `--format github`: GitHub Actions workflow commands, one per finding:
//! `::error file=F,line=L,title=CC001 gnu-openmp-after-fork::message`.
//! `file=` only when the location is a file. Findings in Python source
//! take `line=` and `col=` from their source-code evidence: for a notebook,
//! the line and column of the `.ipynb` file as stored (annotations address
//! the file, not the cell), with the cell in the message's `Location:`.
//! Files that could not be linted get an `::error` of their own.

use std::fmt::Write as _;

use caiclust_rules::{Finding, Level};

use super::{error_position, source_span, CheckOutput, Location};

/// Escape a command's message (`%`, CR, LF).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escape a property value (also `:` and `,`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// The workflow command for a level: `error`, `warning` or `notice`.
pub fn command(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info | Level::Allow => "notice",
    }
}

fn line(f: &Finding) -> String {
    let mut props = Vec::new();
    if let Some(span) = source_span(f) {
        let (line, column) = span.file_position();
        props.push(format!(
            "file={}",
            escape_property(&span.path.display().to_string())
        ));
        props.push(format!("line={line}"));
        props.push(format!("col={column}"));
    } else if let Some(Location::File { path, line, column }) =
        f.location.as_deref().map(Location::parse)
    {
        props.push(format!("file={}", escape_property(&path)));
        if let Some(l) = line {
            props.push(format!("line={l}"));
        }
        if let Some(c) = column {
            props.push(format!("col={c}"));
        }
    }
    props.push(format!(
        "title={}",
        escape_property(&format!("{} {}", f.rule_id, f.rule_name))
    ));
    let mut message = f.message.clone();
    if let Some(loc) = &f.location {
        let _ = write!(message, "\nLocation: {loc}");
    }
    for e in &f.evidence {
        let _ = write!(message, "\nEvidence: {}", e.detail);
    }
    if let Some(fix) = &f.fix {
        let _ = write!(message, "\nFix: {fix}");
    }
    let _ = write!(message, "\nSee `caiclust explain {}`", f.rule_id);
    format!(
        "::{} {}::{}",
        command(f.level),
        props.join(","),
        escape_data(&message)
    )
}

/// One workflow command per finding.
pub fn render(out: &CheckOutput<'_>) -> String {
    let mut s = String::new();
    for f in out
        .report
        .findings
        .iter()
        .filter(|f| f.level != Level::Allow)
    {
        s.push_str(&line(f));
        s.push('\n');
    }
    for e in out.script_errors {
        let mut props = vec![format!(
            "file={}",
            escape_property(&e.path().display().to_string())
        )];
        if let Some((line, column)) = error_position(e) {
            props.push(format!("line={line}"));
            if let Some(c) = column {
                props.push(format!("col={c}"));
            }
        }
        props.push("title=caiclust-check: cannot lint this file".into());
        s.push_str(&format!(
            "::error {}::{}\n",
            props.join(","),
            escape_data(&e.to_string())
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape_data("50%\nx"), "50%25%0Ax");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn file_locations_get_file_property() {
        let f = Finding {
            rule_id: "CC001".into(),
            rule_name: "gnu-openmp-after-fork".into(),
            level: Level::Error,
            message: "libgomp is loaded and workers fork".into(),
            evidence: vec![],
            fix: Some("use spawn".into()),
            location: Some("/env/libgomp.so.1".into()),
            env_fix: Vec::new(),
            presumed: false,
        };
        let l = line(&f);
        assert!(
            l.starts_with("::error file=/env/libgomp.so.1,title=CC001 gnu-openmp-after-fork::libgomp is loaded"),
            "{l}"
        );
        let g = line(&Finding {
            location: Some("OMP_NUM_THREADS".into()),
            level: Level::Info,
            ..f
        });
        assert!(
            g.starts_with("::notice title=CC001 gnu-openmp-after-fork::"),
            "{g}"
        );
    }
}
