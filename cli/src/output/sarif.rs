//! `--format sarif`: SARIF 2.1.0. `tool.driver.rules` lists every rule
//! (id, name, descriptions, Markdown help, default level); each finding is
//! a result with its level, message and location: an artifact (file URI)
//! for paths, a logical location for environment variables and libraries.
//!
//! Findings in Python source take their place from their source-code
//! evidence. In a script that is the line and column. A notebook is stored
//! as JSON, and SARIF regions count lines of the file as stored, so the
//! region is the line and column of the `.ipynb` text where the cell's code
//! is (the character inside the cell's JSON string); the cell and the line
//! and column within it are the location's properties `notebookCell`,
//! `cellLine` and `cellColumn`, and part of the message. Further source
//! evidence (CC205's definition of the function) becomes
//! `relatedLocations`. Files that could not be linted are
//! `toolExecutionNotifications` of the invocation, which is then not
//! successful (exit code 2).

use caiclust_core::probe::{EvidenceSource, SourceSpan};
use caiclust_rules::{all_rules, Level};
use serde_json::{json, Value};

use super::{error_position, CheckOutput, Location};

/// The schema URI written into every log.
pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// SARIF's level for ours (`allow` is `none`).
pub fn level(l: Level) -> &'static str {
    match l {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info => "note",
        Level::Allow => "none",
    }
}

/// A path as a URI: `file:///abs/path` for absolute paths (POSIX or
/// Windows), else a relative reference; reserved characters escaped.
pub fn path_uri(path: &str) -> String {
    let p = path.replace('\\', "/");
    let drive = p.len() >= 2 && p.as_bytes()[1] == b':' && p.as_bytes()[0].is_ascii_alphabetic();
    let encoded = percent_encode(&p);
    if drive {
        format!("file:///{encoded}")
    } else if p.starts_with("//") {
        format!("file:{encoded}")
    } else if p.starts_with('/') {
        format!("file://{encoded}")
    } else {
        encoded
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A physical location in source code, from a [`SourceSpan`].
fn span_location(span: &SourceSpan) -> Value {
    let (line, column) = span.file_position();
    let mut loc = json!({
        "physicalLocation": {
            "artifactLocation": { "uri": path_uri(&span.path.display().to_string()) },
            "region": { "startLine": line.max(1), "startColumn": column.max(1) },
        }
    });
    if let Some(cell) = span.cell {
        loc["properties"] = json!({
            "notebookCell": cell,
            "cellLine": span.line,
            "cellColumn": span.column,
        });
    }
    loc
}

fn location(loc: &str) -> Value {
    match Location::parse(loc) {
        Location::File { path, line, column } => {
            let mut physical = json!({ "artifactLocation": { "uri": path_uri(&path) } });
            if let Some(l) = line.filter(|l| *l > 0) {
                let mut region = json!({ "startLine": l });
                if let Some(c) = column.filter(|c| *c > 0) {
                    region["startColumn"] = c.into();
                }
                physical["region"] = region;
            }
            json!({ "physicalLocation": physical })
        }
        Location::Variable(name) => json!({
            "logicalLocations": [{ "name": name, "fullyQualifiedName": format!("env:{name}"), "kind": "variable" }]
        }),
        Location::Module(name) => json!({
            "logicalLocations": [{ "name": name, "kind": "module" }]
        }),
    }
}

/// The SARIF log as a JSON value.
pub fn log(out: &CheckOutput<'_>) -> Value {
    let rules = all_rules();
    let descriptors: Vec<Value> = rules
        .iter()
        .map(|r| {
            let i = r.info();
            json!({
                "id": i.id,
                "name": i.name,
                "shortDescription": { "text": i.summary },
                "fullDescription": { "text": i.explanation, "markdown": i.explanation },
                "help": { "text": i.explanation, "markdown": i.explanation },
                "defaultConfiguration": { "level": level(i.category.default_level()) },
                "properties": {
                    "category": serde_json::to_value(i.category).unwrap_or_default(),
                    "hazards": i.hazards,
                },
            })
        })
        .collect();
    let results: Vec<Value> = out
        .report
        .findings
        .iter()
        .map(|f| {
            let mut text = f.message.clone();
            if let Some(fix) = &f.fix {
                text.push_str("\nFix: ");
                text.push_str(fix);
            }
            text.push_str(&format!("\nSee `caiclust explain {}`.", f.rule_id));
            let mut r = json!({
                "ruleId": f.rule_id,
                "level": level(f.level),
                "message": { "text": text },
                "properties": {
                    "ruleName": f.rule_name,
                    "evidence": serde_json::to_value(&f.evidence).unwrap_or_default(),
                    "fix": f.fix,
                },
            });
            if let Some(idx) = rules.iter().position(|r| r.info().id == f.rule_id) {
                r["ruleIndex"] = idx.into();
            }
            let mut spans = f
                .evidence
                .iter()
                .filter(|e| e.source == EvidenceSource::SourceCode)
                .filter_map(|e| e.span.as_ref().map(|s| (s, &e.detail)));
            if let Some((span, _)) = spans.next() {
                r["locations"] = json!([span_location(span)]);
                let related: Vec<Value> = spans
                    .enumerate()
                    .map(|(i, (span, detail))| {
                        let mut l = span_location(span);
                        l["id"] = i.into();
                        l["message"] = json!({ "text": detail });
                        l
                    })
                    .collect();
                if !related.is_empty() {
                    r["relatedLocations"] = related.into();
                }
            } else if let Some(loc) = &f.location {
                r["locations"] = json!([location(loc)]);
            }
            r
        })
        .collect();
    let notifications: Vec<Value> = out
        .script_errors
        .iter()
        .map(|e| {
            let mut physical = json!({
                "artifactLocation": { "uri": path_uri(&e.path().display().to_string()) },
            });
            if let Some((line, column)) = error_position(e) {
                let mut region = json!({ "startLine": line.max(1) });
                if let Some(c) = column {
                    region["startColumn"] = c.max(1).into();
                }
                physical["region"] = region;
            }
            json!({
                "level": "error",
                "message": { "text": e.to_string() },
                "locations": [{ "physicalLocation": physical }],
            })
        })
        .collect();
    let exit_code = if out.failed() {
        2
    } else {
        i32::from(out.report.denied())
    };
    let mut run = json!({
        "tool": {
            "driver": {
                "name": "caiclust-check",
                "version": env!("CARGO_PKG_VERSION"),
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": descriptors,
            }
        },
        "results": results,
        "invocations": [{
            "executionSuccessful": !out.failed(),
            "exitCode": exit_code,
            "toolExecutionNotifications": notifications,
        }],
        "properties": {
            "subject": out.subject_json(),
            "denyLevel": out.report.deny_level.as_str(),
        },
    });
    if let Some(facts) = out.facts {
        run["properties"]["targetOs"] = serde_json::to_value(facts.target_os).unwrap_or_default();
    }
    if let Some(p) = out.facts_path {
        run["properties"]["factsPath"] = p.display().to_string().into();
    }
    json!({ "$schema": SCHEMA, "version": "2.1.0", "runs": [run] })
}

/// The SARIF log, pretty-printed.
pub fn render(out: &CheckOutput<'_>) -> String {
    let mut s = serde_json::to_string_pretty(&log(out)).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(path_uri("/a b/libgomp.so.1"), "file:///a%20b/libgomp.so.1");
        assert_eq!(
            path_uri(r"C:\env\vcomp140.dll"),
            "file:///C:/env/vcomp140.dll"
        );
        assert_eq!(path_uri("src/x.py"), "src/x.py");
    }
}
