//! `--format json`: the [`caiclust_rules::Report`] plus what was checked.

use super::CheckOutput;

/// The report as one pretty-printed JSON document: `findings`,
/// `deny_level`, `denied`, `subject`, `target_os` and `facts_path`.
pub fn render(out: &CheckOutput<'_>) -> String {
    let mut doc = serde_json::to_value(out.report).unwrap_or_default();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("denied".into(), out.report.denied().into());
        obj.insert(
            "subject".into(),
            serde_json::to_value(&out.facts.subject).unwrap_or_default(),
        );
        obj.insert(
            "target_os".into(),
            serde_json::to_value(out.facts.target_os).unwrap_or_default(),
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
