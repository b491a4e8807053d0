//! `caiclust explain ID` and `caiclust rules`: the rule table for people
//! and machines, and suggestions for a mistyped id or name.

use std::fmt::Write as _;

use caiclust_rules::{all_rules, find_rule, RuleInfo};
use serde_json::json;

/// What to tell someone whose rule id or name matched nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    /// Ids and names close to what was typed, closest first.
    DidYouMean(Vec<&'static str>),
    /// Nothing is close: every rule name.
    Known(Vec<&'static str>),
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DidYouMean(names) => write!(f, "did you mean: {}?", names.join(", ")),
            Self::Known(names) if names.is_empty() => write!(f, "no rules are defined"),
            Self::Known(names) => write!(f, "known rules: {}", names.join(", ")),
        }
    }
}

/// The explanation of a rule by id or name, or the close names when none
/// matches.
pub fn explain(key: &str) -> Result<String, Unknown> {
    match find_rule(key) {
        Some(rule) => {
            let i = rule.info();
            let mut s = format!("# {} {}\n\n{}\n", i.id, i.name, i.summary);
            let _ = writeln!(
                s,
                "\nCategory: {}; default level: {}.\n",
                category_word(i),
                i.category.default_level().as_str()
            );
            s.push_str(i.explanation.trim_end());
            s.push('\n');
            Ok(s)
        }
        None => Err(suggestions(key)),
    }
}

fn category_word(i: &RuleInfo) -> String {
    serde_json::to_value(i.category)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', "-")))
        .unwrap_or_default()
}

/// Rule ids and names near `key` (edit distance, or containing it); all
/// names when nothing is near.
pub fn suggestions(key: &str) -> Unknown {
    let key = key.to_ascii_lowercase();
    let mut scored: Vec<(usize, &'static str)> = Vec::new();
    for r in all_rules() {
        let i = r.info();
        for cand in [i.id, i.name] {
            let c = cand.to_ascii_lowercase();
            let d = distance(&key, &c);
            let near = d <= (c.len().max(key.len()) / 2).clamp(2, 8)
                || (key.len() >= 3 && c.contains(&key));
            if near {
                scored.push((d, cand));
            }
        }
    }
    if scored.is_empty() {
        return Unknown::Known(all_rules().iter().map(|r| r.info().name).collect());
    }
    scored.sort();
    scored.dedup_by_key(|(_, n)| *n);
    Unknown::DidYouMean(scored.into_iter().map(|(_, n)| n).take(5).collect())
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The table of `caiclust rules`: id, name, default level, summary.
pub fn table() -> String {
    let rules = all_rules();
    let name_w = rules
        .iter()
        .map(|r| r.info().name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let id_w = rules
        .iter()
        .map(|r| r.info().id.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let mut s = format!(
        "{:id_w$}  {:name_w$}  {:7}  SUMMARY\n",
        "ID", "NAME", "LEVEL"
    );
    for r in rules {
        let i = r.info();
        let _ = writeln!(
            s,
            "{:id_w$}  {:name_w$}  {:7}  {}",
            i.id,
            i.name,
            i.category.default_level().as_str(),
            i.summary
        );
    }
    if rules.is_empty() {
        s.push_str("(no rules defined)\n");
    }
    s
}

/// `caiclust rules --json`: one object per rule.
pub fn json() -> String {
    let rules: Vec<_> = all_rules()
        .iter()
        .map(|r| {
            let i = r.info();
            json!({
                "id": i.id,
                "name": i.name,
                "category": serde_json::to_value(i.category).unwrap_or_default(),
                "default_level": i.category.default_level().as_str(),
                "summary": i.summary,
                "hazards": i.hazards,
            })
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&rules).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::distance;

    #[test]
    fn levenshtein() {
        assert_eq!(distance("cc001", "cc001"), 0);
        assert_eq!(distance("cc01", "cc001"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
