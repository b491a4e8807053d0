//! The advisory database: known bugs of specific runtime versions, kept as
//! data files compiled in (`rules/advisories/*.toml`) and extendable from
//! the configuration (`advisories = ["file.toml"]`).
//!
//! # File format
//!
//! A file holds `[[advisory]]` tables with these keys (unknown keys are an
//! error):
//!
//! | key | required | meaning |
//! |---|---|---|
//! | `id` | yes | stable id, unique in the file (`CCA-NNNN` for the built-in ones) |
//! | `runtime` | yes | a library vendor as the facts name it ([`RUNTIMES`]: `openblas`, `mkl`, `blis`, `gnu_openmp`, `llvm_openmp`, `intel_openmp`, `msvc_openmp`, `tbb`, ...) or `cpython` for the interpreter |
//! | `versions` | yes | comparators joined by commas: `<0.2.9`, `>=0.3.0, <0.3.7`, `==0.3.26` |
//! | `threading` | no | only these threading layers (threadpoolctl names: `pthreads`, `openmp`, `tbb`, `disabled`, `intel`, `gnu`, `sequential`, `gcd`, `concurrency`, `runtime`) |
//! | `os` | no | only these target systems: `linux`, `macos`, `windows` |
//! | `title`, `description`, `fix` | yes | what a finding says |
//! | `references` | no | sources (the built-in advisories each cite at least one) |
//!
//! A bad entry is an error naming `file:line:column`. Versions compare by
//! their leading numeric components (`0.3.31.188.0`, `2026.2-Product`,
//! `3.12.1rc1`). A library whose version the probe knows only as a lower
//! bound (`>=12`, GNU libgomp without a recorded release) matches only
//! ranges that hold every version from that bound up.

use std::path::{Path, PathBuf};

use caiclust_probe::{Facts, Library, ThreadingLayer, Vendor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

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
    (
        "advisories/tbb.toml",
        include_str!("../advisories/tbb.toml"),
    ),
];

/// One known bug of a range of versions of a runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Advisory {
    /// Stable id, `CCA-NNNN`.
    pub id: String,
    /// A [`caiclust_probe::Vendor`] name (`openblas`, `gnu_openmp`, ...)
    /// or `cpython`: one of [`RUNTIMES`].
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

/// The runtime names an advisory may use: every library vendor, by the name
/// the facts give it, and `cpython`.
pub const RUNTIMES: &[&str] = &[
    "openblas",
    "mkl",
    "blis",
    "flexiblas",
    "accelerate",
    "atlas",
    "reference",
    "gnu_openmp",
    "llvm_openmp",
    "intel_openmp",
    "msvc_openmp",
    "tbb",
    "opencv",
    "cuda",
    "cpython",
];

/// The threading-layer names an advisory may use (threadpoolctl's).
const THREADING_LAYERS: &[ThreadingLayer] = &[
    ThreadingLayer::Pthreads,
    ThreadingLayer::Openmp,
    ThreadingLayer::Tbb,
    ThreadingLayer::Disabled,
    ThreadingLayer::Intel,
    ThreadingLayer::Gnu,
    ThreadingLayer::Sequential,
    ThreadingLayer::Gcd,
    ThreadingLayer::Concurrency,
    ThreadingLayer::RuntimeSelected,
];

/// The operating systems an advisory may name.
const OPERATING_SYSTEMS: &[&str] = &["linux", "macos", "windows"];

/// An advisory as written, with the position of each checked value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdvisory {
    id: Spanned<String>,
    runtime: Spanned<String>,
    versions: Spanned<String>,
    #[serde(default)]
    threading: Vec<Spanned<String>>,
    #[serde(default)]
    os: Vec<Spanned<String>>,
    title: String,
    description: String,
    fix: String,
    #[serde(default)]
    references: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvisoryFile {
    #[serde(default)]
    advisory: Vec<RawAdvisory>,
}

/// A problem reading an advisory file, naming it and the position.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{}{}: {message}", file.display(), position.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct AdvisoryError {
    pub file: PathBuf,
    /// Line and column (from 1), when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl AdvisoryError {
    fn at(file: &Path, text: &str, offset: usize, message: String) -> Self {
        AdvisoryError {
            file: file.to_path_buf(),
            position: Some(crate::config::line_column(text, offset)),
            message,
        }
    }
}

/// The vendor name the facts use (`gnu_openmp`), as serde writes it.
fn vendor_name(vendor: Vendor) -> String {
    serde_json::to_value(vendor)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl RawAdvisory {
    /// Check every value; the first bad one is the error.
    fn validate(self, file: &Path, text: &str) -> Result<Advisory, AdvisoryError> {
        let err =
            |span: std::ops::Range<usize>, m: String| AdvisoryError::at(file, text, span.start, m);
        if self.id.get_ref().trim().is_empty() {
            return Err(err(self.id.span(), "advisory id is empty".into()));
        }
        let id = self.id.get_ref().clone();
        if !RUNTIMES.contains(&self.runtime.get_ref().as_str()) {
            return Err(err(
                self.runtime.span(),
                format!(
                    "advisory {id}: unknown runtime '{}' (one of: {})",
                    self.runtime.get_ref(),
                    RUNTIMES.join(", ")
                ),
            ));
        }
        parse_range(self.versions.get_ref())
            .map_err(|m| err(self.versions.span(), format!("advisory {id}: {m}")))?;
        for t in &self.threading {
            if !THREADING_LAYERS
                .iter()
                .any(|l| l.threadpoolctl_name() == t.get_ref())
            {
                let names: Vec<&str> = THREADING_LAYERS
                    .iter()
                    .map(|l| l.threadpoolctl_name())
                    .collect();
                return Err(err(
                    t.span(),
                    format!(
                        "advisory {id}: unknown threading layer '{}' (one of: {})",
                        t.get_ref(),
                        names.join(", ")
                    ),
                ));
            }
        }
        for o in &self.os {
            if !OPERATING_SYSTEMS.contains(&o.get_ref().as_str()) {
                return Err(err(
                    o.span(),
                    format!(
                        "advisory {id}: unknown os '{}' (one of: {})",
                        o.get_ref(),
                        OPERATING_SYSTEMS.join(", ")
                    ),
                ));
            }
        }
        Ok(Advisory {
            id,
            runtime: self.runtime.into_inner(),
            versions: self.versions.into_inner(),
            threading: self
                .threading
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            os: self.os.into_iter().map(Spanned::into_inner).collect(),
            title: self.title,
            description: self.description,
            fix: self.fix,
            references: self.references,
        })
    }
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
        // Parsed once per process: the hazard policy evaluates the rules
        // several times for one plan.
        static PARSED: std::sync::OnceLock<AdvisoryDb> = std::sync::OnceLock::new();
        PARSED
            .get_or_init(|| {
                let mut db = AdvisoryDb::default();
                for (name, text) in BUILTIN {
                    // The built-in files are checked by a test; a broken one
                    // must not take the tool down.
                    if let Ok(more) = AdvisoryDb::parse(text, Path::new(name)) {
                        db.extend(more);
                    }
                }
                db
            })
            .clone()
    }

    /// Parse one advisory file's text.
    pub fn parse(text: &str, file: &Path) -> Result<AdvisoryDb, AdvisoryError> {
        let parsed: AdvisoryFile = toml::from_str(text).map_err(|e| AdvisoryError {
            file: file.to_path_buf(),
            position: Some(
                e.span()
                    .map(|s| crate::config::line_column(text, s.start))
                    .unwrap_or((1, 1)),
            ),
            message: e.message().trim().to_owned(),
        })?;
        let mut advisories: Vec<Advisory> = Vec::new();
        for raw in parsed.advisory {
            let span = raw.id.span();
            let a = raw.validate(file, text)?;
            if advisories.iter().any(|b| b.id == a.id) {
                return Err(AdvisoryError::at(
                    file,
                    text,
                    span.start,
                    format!("advisory id {} is used twice", a.id),
                ));
            }
            advisories.push(a);
        }
        Ok(AdvisoryDb { advisories })
    }

    /// Read an advisory file.
    pub fn load(file: &Path) -> Result<AdvisoryDb, AdvisoryError> {
        let text = std::fs::read_to_string(file).map_err(|e| AdvisoryError {
            file: file.to_path_buf(),
            position: None,
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
                if vendor_name(lib.vendor.value) != a.runtime {
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
    // A lower bound (`>=12`): the range must hold every version from the
    // bound up, so only `>`/`>=` comparators the bound satisfies.
    if let Some(bound) = version.strip_prefix(">=") {
        let Some(v) = numeric_version(bound.trim()) else {
            return false;
        };
        return range.iter().all(|c| {
            let ord = compare(&v, &c.version);
            match c.op {
                ">=" => ord.is_ge(),
                ">" => ord.is_gt(),
                _ => false,
            }
        });
    }
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
A runtime library (OpenBLAS, MKL, BLIS, TBB, an OpenMP runtime, ...) or the
Python interpreter whose version falls in the range of an entry of the
advisory database: data files shipped with caiclust (`rules/advisories/*.toml`)
plus the files named by `advisories = [...]` in the configuration. The
built-in entries:

| id | runtime | versions | bug |
|---|---|---|---|
| CCA-0001 | OpenBLAS (pthreads) | < 0.2.9 | no fork handler: forked workers hang |
| CCA-0002 | OpenBLAS (threaded) | 0.2.15 - 0.3.3 | concurrent gemv calls from several threads give wrong results |
| CCA-0003 | OpenBLAS | < 0.3.18 | more calling threads than the build's NUM_THREADS abort the process |
| CCA-0004 | OpenBLAS (OpenMP) | 0.3.11 - 0.3.12 | thread buffers leak after fork: forked workers crash |
| CCA-0005 | OpenBLAS on Windows | 0.3.26 | BLAS inside an OpenMP parallel region deadlocks |
| CCA-0101 | CPython | >= 3.12 | fork() with other threads running warns |
| CCA-0102 | CPython on Linux | >= 3.14 | the default start method is forkserver |
| CCA-0301 | TBB | < 2021.9 | a transient pthread_create failure aborts the process |

The version is the one the probe reads from the binary (or the library's own
answer at run time). A version known only as a lower bound (`>=12`: GNU
libgomp without a recorded GCC release) matches only ranges that hold every
version from that bound up.

## Why it is bad
Some bugs exist only in some versions: a thread pool that hangs or crashes
after fork before a fix landed, a buffer shared by concurrent callers, a
default that changed. The facts alone cannot show them; the version can.

## Example
numpy linked against OpenBLAS 0.2.8 (pthreads) used in the parent, then a
`fork` Pool: OpenBLAS before 0.2.9 has no fork handler and the workers hang
(advisory CCA-0001). opencv-python-headless wheels that bundle OpenBLAS
0.3.15 abort with "Program is Terminated. Because you tried to allocate too
many memory regions" when more threads call BLAS than that build allows
(CCA-0003).

## Fix
Each advisory says what to do, usually: upgrade the runtime, bound the
threads that call it, or start workers with spawn/forkserver.

## References
Each advisory lists its sources (upstream issues, pull requests, release
notes); `caiclust explain CC100` shows this text, and the JSON/SARIF output
carries the advisory id and references. The file format is documented in
`rules/src/advisory.rs`.
"#,
    hazards: &["H01", "H05", "H12", "H13"],
    depends_on_start_method: false,
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
                    env_fix: Vec::new(),
                    presumed: false,
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
    fn the_explanation_lists_every_builtin_advisory() {
        for a in AdvisoryDb::builtin().advisories {
            assert!(
                KNOWN_RUNTIME_BUG
                    .explanation
                    .contains(&format!("| {} |", a.id)),
                "CC100's explanation lacks {}",
                a.id
            );
        }
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
        assert!(text.starts_with("extra.toml:2:6: "), "{text}");
        let err = AdvisoryDb::parse(
            "[[advisory]]\nid='X'\nruntime='openblas'\nversions='0.3'\ntitle='t'\ndescription='d'\nfix='f'\n",
            Path::new("x.toml"),
        )
        .expect_err("bad range");
        assert_eq!(err.position, Some((4, 10)), "{err}");
        assert!(err.to_string().contains("needs a comparator"), "{err}");
    }

    fn entry(runtime: &str, extra: &str) -> String {
        format!(
            "# comment\n[[advisory]]\nid = \"LOCAL-1\"\nruntime = \"{runtime}\"\nversions = \"<1\"\n{extra}title = \"t\"\ndescription = \"d\"\nfix = \"f\"\n"
        )
    }

    #[test]
    fn unknown_names_are_errors_at_their_place() {
        let err = AdvisoryDb::parse(&entry("gnu-openmp", ""), Path::new("mine.toml"))
            .expect_err("unknown runtime");
        let text = err.to_string();
        assert!(text.starts_with("mine.toml:4:11: "), "{text}");
        assert!(text.contains("unknown runtime 'gnu-openmp'"), "{text}");
        assert!(text.contains("gnu_openmp"), "lists the valid names: {text}");

        let err = AdvisoryDb::parse(
            &entry("openblas", "threading = [\"openmp\", \"posix\"]\n"),
            Path::new("mine.toml"),
        )
        .expect_err("unknown layer");
        assert_eq!(err.position, Some((6, 24)), "{err}");
        assert!(
            err.to_string().contains("unknown threading layer 'posix'"),
            "{err}"
        );

        let err = AdvisoryDb::parse(
            &entry("openblas", "os = [\"win32\"]\n"),
            Path::new("mine.toml"),
        )
        .expect_err("unknown os");
        assert_eq!(err.position, Some((6, 7)), "{err}");

        let twice = format!(
            "{}{}",
            entry("openblas", ""),
            entry("mkl", "").replace("# comment\n", "")
        );
        let err = AdvisoryDb::parse(&twice, Path::new("mine.toml")).expect_err("same id");
        assert!(err.to_string().contains("LOCAL-1 is used twice"), "{err}");
        assert_eq!(err.position.map(|p| p.0), Some(10), "{err}");

        let err = AdvisoryDb::parse(
            &entry("openblas", "severity = \"high\"\n"),
            Path::new("m.toml"),
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("severity"), "{err}");

        // Every vendor the probe can name, and the interpreter, is accepted.
        for v in [
            Vendor::Openblas,
            Vendor::Mkl,
            Vendor::Blis,
            Vendor::Flexiblas,
            Vendor::Accelerate,
            Vendor::Atlas,
            Vendor::Reference,
            Vendor::GnuOpenmp,
            Vendor::LlvmOpenmp,
            Vendor::IntelOpenmp,
            Vendor::MsvcOpenmp,
            Vendor::Tbb,
            Vendor::Opencv,
            Vendor::Cuda,
        ] {
            let name = vendor_name(v);
            AdvisoryDb::parse(
                &entry(&name, "threading = [\"pthreads\"]\nos = [\"linux\"]\n"),
                Path::new("ok.toml"),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        AdvisoryDb::parse(&entry("cpython", ""), Path::new("ok.toml")).expect("cpython");
    }

    #[test]
    fn a_lower_bound_matches_only_open_ended_ranges() {
        let r = |t: &str| parse_range(t).expect("range");
        assert!(range_contains(&r(">=9"), ">=12"));
        assert!(range_contains(&r(">=12"), ">=12"));
        assert!(range_contains(&r(">11.4"), ">=12"));
        assert!(
            !range_contains(&r(">=12.3"), ">=12"),
            "12.0 to 12.2 are outside"
        );
        assert!(
            !range_contains(&r("<13"), ">=12"),
            "13 and later are outside"
        );
        assert!(!range_contains(&r(">=4.2, <9"), ">=12"));
        assert!(!range_contains(&r("==12"), ">=12"));
        assert!(!range_contains(&r(">=1"), ">=x"));
    }
}
