//! `--format json`: the [`caiclust_rules::Report`] plus what was checked.

use serde_json::json;

use super::{error_position, CheckOutput};

/// The report as one pretty-printed JSON document: `findings` (each
/// source-code evidence with its `span`: path, line, column, notebook
/// cell, and the line and column in the file as stored), `deny_level`,
/// `denied`, `subject` (the facts' subject, or `{"kind": "scripts",
/// "paths": [...]}` for scripts alone), `target_os` (`null` without facts),
/// `facts_path`, `verdict` (the hazard policy's verdict on the plan, see
/// [`caiclust_rules::Verdict`]; `null` for scripts alone), `scripts`, and
/// `errors` (the files that could not be
/// linted: `path`, `message`, and `line`/`column` when known).
pub fn render(out: &CheckOutput<'_>) -> String {
    let mut doc = serde_json::to_value(out.report).unwrap_or_default();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("denied".into(), out.report.denied().into());
        obj.insert("subject".into(), out.subject_json());
        obj.insert(
            "target_os".into(),
            out.facts
                .map(|f| serde_json::to_value(f.target_os).unwrap_or_default())
                .unwrap_or_default(),
        );
        obj.insert(
            "scripts".into(),
            out.scripts
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .into(),
        );
        let errors: Vec<serde_json::Value> = out
            .script_errors
            .iter()
            .map(|e| {
                let (line, column) = match error_position(e) {
                    Some((l, c)) => (Some(l), c),
                    None => (None, None),
                };
                json!({
                    "path": e.path().display().to_string(),
                    "message": e.to_string(),
                    "line": line,
                    "column": column,
                })
            })
            .collect();
        obj.insert("errors".into(), errors.into());
        obj.insert(
            "verdict".into(),
            serde_json::to_value(out.verdict).unwrap_or_default(),
        );
        obj.insert(
            "facts_path".into(),
            out.facts_path.map(|p| p.display().to_string()).into(),
        );
    }
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
