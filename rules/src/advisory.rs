//! The advisory database: known bugs of specific runtime versions, kept as
//! data files compiled in (`rules/advisories/*.toml`) and extendable from
//! the configuration (`advisories = ["file.toml"]`).
//!
//! An entry names a runtime (`openblas`, `mkl`, `blis`, `gnu_openmp`, ...,
//! or `cpython` for the interpreter), a version range (`">=0.3.0, <0.3.7"`),
//! and optionally the threading layers and operating systems it applies to.

use std::path::{Path, PathBuf};

use caiclust_probe::{Facts, Library};
use serde::{Deserialize, Serialize};

/// The advisory files that ship with caiclust.
const BUILTIN: &[(&str, &str)] = &[
    (
        "advisories/openblas.toml",
        include_str!("../advisories/openblas.toml"),
    ),
    (
        "advisories/python.toml",
        include_str!("../advisories/python.toml"),
    ),
];

/// One known bug of a range of versions of a runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Advisory {
    /// Stable id, `CCA-NNNN`.
    pub id: String,
    /// A [`caiclust_probe::Vendor`] name (`openblas`, `gnu_openmp`, ...)
    /// or `cpython`.
    pub runtime: String,
    /// Comparators joined by commas: `<0.2.9`, `>=3.12`, `>=0.3.0, <0.3.7`.
    pub versions: String,
    /// Only for these threading layers (threadpoolctl names), if given.
    #[serde(default)]
    pub threading: Vec<String>,
    /// Only on these operating systems (`linux`, `macos`, `windows`).
    #[serde(default)]
    pub os: Vec<String>,
    pub title: String,
    pub description: String,
    pub fix: String,
    #[serde(default)]
    pub references: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvisoryFile {
    #[serde(default)]
    advisory: Vec<Advisory>,
}

/// A problem reading an advisory file, naming it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{file}: {message}")]
pub struct AdvisoryError {
    pub file: PathBuf,
    pub message: String,
}

/// A set of advisories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdvisoryDb {
    pub advisories: Vec<Advisory>,
}

/// What an advisory matched.
#[derive(Debug, Clone, PartialEq)]
pub struct AdvisoryMatch<'a> {
    pub advisory: &'a Advisory,
    /// The library, or `None` for the interpreter.
    pub library: Option<&'a Library>,
    /// The version that matched.
    pub version: String,
}

impl AdvisoryDb {
    /// The advisories that ship with caiclust.
    pub fn builtin() -> AdvisoryDb {
        let mut db = AdvisoryDb::default();
        for (name, text) in BUILTIN {
            // The built-in files are checked by a test; a broken one must
            // not take the tool down.
            if let Ok(more) = AdvisoryDb::parse(text, Path::new(name)) {
                db.extend(more);
            }
        }
        db
    }

    /// Parse one advisory file's text.
    pub fn parse(text: &str, file: &Path) -> Result<AdvisoryDb, AdvisoryError> {
        let parsed: AdvisoryFile = toml::from_str(text).map_err(|e| AdvisoryError {
            file: file.to_path_buf(),
            message: crate::config::describe_toml_error(text, &e),
        })?;
        for a in &parsed.advisory {
            parse_range(&a.versions).map_err(|m| AdvisoryError {
                file: file.to_path_buf(),
                message: format!("advisory {}: {m}", a.id),
            })?;
        }
        Ok(AdvisoryDb {
            advisories: parsed.advisory,
        })
    }

    /// Read an advisory file.
    pub fn load(file: &Path) -> Result<AdvisoryDb, AdvisoryError> {
        let text = std::fs::read_to_string(file).map_err(|e| AdvisoryError {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        AdvisoryDb::parse(&text, file)
    }

    /// Add another set.
    pub fn extend(&mut self, other: AdvisoryDb) {
        self.advisories.extend(other.advisories);
    }

    /// Every advisory that applies to these facts.
    pub fn matches<'a>(&'a self, facts: &'a Facts) -> Vec<AdvisoryMatch<'a>> {
        let mut out = Vec::new();
        for a in &self.advisories {
            if !a.os.is_empty() && !a.os.iter().any(|o| o == facts.target_os.as_str()) {
                continue;
            }
            let Ok(range) = parse_range(&a.versions) else {
                continue;
            };
            if a.runtime == "cpython" {
                if let Some(py) = &facts.python {
                    if py.implementation == "cpython" && range_contains(&range, &py.version) {
                        out.push(AdvisoryMatch {
                            advisory: a,
                            library: None,
                            version: py.version.clone(),
                        });
                    }
                }
                continue;
            }
            for lib in &facts.libraries {
                let vendor = serde_json::to_value(lib.vendor.value)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                if vendor != a.runtime {
                    continue;
                }
                let Some(version) = lib.version.as_ref().map(|v| v.value.as_str()) else {
                    continue;
                };
                if !a.threading.is_empty() {
                    let layer = lib
                        .threading_layer
                        .as_ref()
                        .map(|t| t.value.threadpoolctl_name());
                    if !layer.is_some_and(|l| a.threading.iter().any(|t| t == l)) {
                        continue;
                    }
                }
                if range_contains(&range, version) {
                    out.push(AdvisoryMatch {
                        advisory: a,
                        library: Some(lib),
                        version: version.to_owned(),
                    });
                }
            }
        }
        out
    }
}

/// One comparator of a version range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: &'static str,
    version: Vec<u64>,
}

fn parse_range(text: &str) -> Result<Vec<Comparator>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (op, rest) = ["<=", ">=", "==", "<", ">", "="]
            .iter()
            .find_map(|op| part.strip_prefix(op).map(|r| (*op, r)))
            .ok_or_else(|| format!("'{part}' needs a comparator (<, <=, >, >=, ==)"))?;
        let version = numeric_version(rest.trim())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("'{part}': '{}' is not a version", rest.trim()))?;
        out.push(Comparator {
            op: if op == "=" { "==" } else { op },
            version,
        });
    }
    if out.is_empty() {
        return Err(format!("empty version range '{text}'"));
    }
    Ok(out)
}

/// The leading numeric components: `0.3.31.188.0` → [0, 3, 31, 188, 0],
/// `2026.2-Product` → [2026, 2], `3.12.1rc1` → [3, 12, 1].
fn numeric_version(text: &str) -> Option<Vec<u64>> {
    let mut parts = Vec::new();
    for piece in text.split('.') {
        let digits: String = piece.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            break;
        }
        parts.push(digits.parse().ok()?);
        if digits.len() != piece.len() {
            break;
        }
    }
    (!parts.is_empty()).then_some(parts)
}

fn compare(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let len = a.len().max(b.len());
    for i in 0..len {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            std::cmp::Ordering::Equal => continue,
            other => return other,
        }
    }
    std::cmp::Ordering::Equal
}

fn range_contains(range: &[Comparator], version: &str) -> bool {
    let Some(v) = numeric_version(version) else {
        return false;
    };
    range.iter().all(|c| {
        let ord = compare(&v, &c.version);
        match c.op {
            "<" => ord.is_lt(),
            "<=" => ord.is_le(),
            ">" => ord.is_gt(),
            ">=" => ord.is_ge(),
            _ => ord.is_eq(),
        }
    })
}

/// `CC100 known-runtime-bug`: a runtime version with a known bug from the
/// advisory database.
pub(crate) struct KnownRuntimeBug;

static KNOWN_RUNTIME_BUG: crate::RuleInfo = crate::RuleInfo {
    id: "CC100",
    name: "known-runtime-bug",
    category: crate::Category::Advisory,
    summary: "a loaded runtime's version has a known bug that affects parallel work",
    explanation: r#"## What it detects
A runtime library (OpenBLAS, MKL, BLIS, an OpenMP runtime, ...) or the Python
interpreter whose version falls in the range of an entry of the advisory
database: data files shipped with caiclust (`rules/advisories/*.toml`) plus
the files named by `advisories = [...]` in the configuration.

## Why it is bad
Some bugs exist only in some versions: a thread pool that hangs after fork
before a fix landed, a default that changed. The facts alone cannot show
them; the version can.

## Example
numpy linked against OpenBLAS 0.2.8 (pthreads) used in the parent, then a
`fork` Pool: OpenBLAS before 0.2.9 has no fork handler and the workers hang
(advisory CCA-0001).

## Fix
Each advisory says what to do, usually: upgrade the runtime, or start
workers with spawn/forkserver.

## References
Each advisory lists its sources; `caiclust explain CC100` shows this text,
and the JSON/SARIF output carries the advisory id and references.
"#,
    hazards: &["H01", "H12", "H13"],
};

impl crate::Rule for KnownRuntimeBug {
    fn info(&self) -> &'static crate::RuleInfo {
        &KNOWN_RUNTIME_BUG
    }

    fn check(&self, cx: &crate::Context<'_>) -> Vec<crate::Finding> {
        use caiclust_probe::{Evidence, EvidenceSource};
        cx.advisories
            .matches(cx.facts)
            .into_iter()
            .map(|m| {
                let what = match m.library {
                    Some(lib) => format!("{} {}", lib.path.display(), m.version),
                    None => format!("CPython {}", m.version),
                };
                let mut evidence = vec![Evidence::new(
                    EvidenceSource::Static,
                    format!(
                        "version {} is in {} ({})",
                        m.version, m.advisory.versions, m.advisory.id
                    ),
                )];
                for r in &m.advisory.references {
                    evidence.push(Evidence::new(
                        EvidenceSource::Static,
                        format!("reference {r}"),
                    ));
                }
                crate::Finding {
                    rule_id: KNOWN_RUNTIME_BUG.id.into(),
                    rule_name: KNOWN_RUNTIME_BUG.name.into(),
                    level: KNOWN_RUNTIME_BUG.category.default_level(),
                    message: format!("{} [{}]: {}", what, m.advisory.id, m.advisory.title),
                    evidence,
                    fix: Some(m.advisory.fix.clone()),
                    location: Some(
                        m.library
                            .map(|l| l.path.display().to_string())
                            .unwrap_or_else(|| "python".into()),
                    ),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_files_parse() {
        for (name, text) in BUILTIN {
            let db = AdvisoryDb::parse(text, Path::new(name)).unwrap_or_else(|e| panic!("{e}"));
            assert!(!db.advisories.is_empty(), "{name}");
            for a in &db.advisories {
                assert!(a.id.starts_with("CCA-"), "{}", a.id);
                assert!(!a.references.is_empty(), "{} cites its source", a.id);
            }
        }
        let ids: Vec<String> = AdvisoryDb::builtin()
            .advisories
            .iter()
            .map(|a| a.id.clone())
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "advisory ids are unique");
    }

    #[test]
    fn version_ranges() {
        let r = parse_range(">=0.3.0, <0.3.7").expect("range");
        assert!(range_contains(&r, "0.3.0"));
        assert!(range_contains(&r, "0.3.6.1"));
        assert!(!range_contains(&r, "0.3.7"));
        assert!(!range_contains(&r, "0.2.20"));
        let r = parse_range("<0.2.9").expect("range");
        assert!(range_contains(&r, "0.2.8"));
        assert!(!range_contains(&r, "0.3.31.188.0"));
        assert!(range_contains(
            &parse_range(">=3.12").expect("r"),
            "3.12.0rc1"
        ));
        assert!(!range_contains(
            &parse_range(">=3.12").expect("r"),
            "3.11.7"
        ));
        assert!(range_contains(
            &parse_range("==2026.2").expect("r"),
            "2026.2-Product"
        ));
        assert!(parse_range("0.3").is_err());
        assert!(parse_range("<abc").is_err());
        assert!(parse_range("").is_err());
        assert!(!range_contains(&parse_range("<1").expect("r"), "unknown"));
    }

    #[test]
    fn a_bad_file_names_itself_and_the_line() {
        let err =
            AdvisoryDb::parse("[[advisory]]\nid = 1\n", Path::new("extra.toml")).expect_err("bad");
        let text = err.to_string();
        assert!(text.starts_with("extra.toml: "), "{text}");
        assert!(text.contains("line 2"), "{text}");
        let err = AdvisoryDb::parse(
            "[[advisory]]\nid='X'\nruntime='openblas'\nversions='0.3'\ntitle='t'\ndescription='d'\nfix='f'\n",
            Path::new("x.toml"),
        )
        .expect_err("bad range");
        assert!(err.to_string().contains("needs a comparator"), "{err}");
    }
}
