//! Is a process a Python interpreter, and which one? Decided from what can
//! be seen from outside: the program's name, the libraries it has mapped and
//! the symbols the program exports. Pure: the caller reads the files.
//!
//! Clues, strongest first:
//!
//! * the program exports (or imports) `Py_BytesMain` or `Py_Initialize`:
//!   it is, or embeds, CPython (static reading, high confidence);
//! * a mapped `libpython3.11.so.1.0` / `libpython3.11.dylib` /
//!   `python311.dll` or `Python.framework/Versions/3.11/Python` (high);
//! * mapped standard-library extension modules under `python3.11/lib-dynload`
//!   and extension modules tagged `cpython-311` / `cp311` (medium);
//! * the program's own name: `python`, `python3`, `python3.11`,
//!   `python3.13t`, `pythonw.exe` (medium).
//!
//! The version is taken from the first clue that has one, in the order
//! libpython, program name, `lib-dynload`, extension tag; clues that
//! disagree are recorded and lower the confidence. The value is
//! `CPython 3.11` when a version is known, `Python` otherwise. PyPy and
//! other implementations are not recognised unless they look like CPython.

use std::path::{Path, PathBuf};

use crate::binary::BinaryInfo;
use crate::facts::{Conclusion, Confidence, Evidence, EvidenceSource};
use crate::fingerprint::base_name;

/// Symbols only a CPython interpreter (or a program embedding it) has.
const INTERPRETER_SYMBOLS: &[&str] = &["Py_BytesMain", "Py_Initialize"];

/// One clue: what it says, how strong it is and the version it gives.
struct Clue {
    evidence: Evidence,
    confidence: Confidence,
    version: Option<String>,
    /// Lower is preferred when choosing the version.
    version_rank: u8,
}

/// Decide whether the process is Python. `executable` is the program's path,
/// `libraries` the shared objects it has mapped, `executable_info` the
/// static reading of the program, when it could be read.
pub(crate) fn detect_python(
    executable: Option<&Path>,
    libraries: &[PathBuf],
    executable_info: Option<&BinaryInfo>,
) -> Option<Conclusion<String>> {
    let mut clues = Vec::new();
    if let Some(info) = executable_info {
        for symbol in INTERPRETER_SYMBOLS {
            let how = if info.exports_symbol(symbol) {
                "exports"
            } else if info.imports.iter().any(|i| i == symbol) {
                "imports"
            } else {
                continue;
            };
            clues.push(Clue {
                evidence: Evidence::new(
                    EvidenceSource::Static,
                    format!("the program {how} {symbol}"),
                ),
                confidence: Confidence::High,
                version: None,
                version_rank: u8::MAX,
            });
            break;
        }
    }
    if let Some(exe) = executable {
        let name = base_name_of(exe);
        if let Some(version) = interpreter_name_version(&name) {
            clues.push(Clue {
                evidence: Evidence::new(
                    EvidenceSource::FileName,
                    format!("the program is named {name}"),
                ),
                confidence: Confidence::Medium,
                version,
                version_rank: 1,
            });
        }
    }
    library_clues(libraries, &mut clues);
    if clues.is_empty() {
        return None;
    }

    let mut confidence = clues
        .iter()
        .map(|c| c.confidence)
        .max()
        .unwrap_or(Confidence::Low);
    let chosen = clues
        .iter()
        .filter(|c| c.version.is_some())
        .min_by_key(|c| c.version_rank)
        .and_then(|c| c.version.clone());
    let mut evidence: Vec<Evidence> = clues.iter().map(|c| c.evidence.clone()).collect();
    if let Some(chosen) = &chosen {
        let mut others: Vec<&str> = clues
            .iter()
            .filter_map(|c| c.version.as_deref())
            .filter(|v| v != chosen)
            .collect();
        others.sort_unstable();
        others.dedup();
        if !others.is_empty() {
            confidence = Confidence::Low;
            evidence.push(Evidence::new(
                EvidenceSource::System,
                format!(
                    "the clues disagree on the version: {chosen} chosen, also seen {}",
                    others.join(", ")
                ),
            ));
        }
    }
    let value = match chosen {
        Some(v) => format!("CPython {v}"),
        None => "Python".to_owned(),
    };
    Some(Conclusion::new(value, confidence, evidence))
}

fn base_name_of(path: &Path) -> String {
    base_name(&path.to_string_lossy()).to_owned()
}

/// `python` / `python3` → `Some(None)`; `python3.11`, `python3.13t`,
/// `python3.11d`, `python3.11.exe` → `Some(Some("3.11"))`; anything else
/// (`python3-config`, `ipython`) → `None`.
fn interpreter_name_version(name: &str) -> Option<Option<String>> {
    let lower = name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".exe").unwrap_or(&lower);
    let rest = stem.strip_prefix("python")?;
    let rest = rest.strip_prefix('w').unwrap_or(rest);
    let digits_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, flags) = rest.split_at(digits_end);
    // ABI flags: d (debug), t (free-threaded), m (pymalloc, before 3.8).
    if flags.len() > 2 || !flags.chars().all(|c| matches!(c, 'd' | 't' | 'm')) {
        return None;
    }
    if number.is_empty() {
        return flags.is_empty().then_some(None);
    }
    let mut parts = number.split('.');
    let major = parts.next().filter(|p| !p.is_empty())?;
    match (parts.next(), parts.next()) {
        (None, _) => Some(None),
        (Some(minor), None) if !minor.is_empty() => Some(Some(format!("{major}.{minor}"))),
        _ => None,
    }
}

/// Clues from the mapped libraries: one per kind, naming the first example.
fn library_clues(libraries: &[PathBuf], clues: &mut Vec<Clue>) {
    let mut libpython: Option<(&Path, Option<String>)> = None;
    let mut dynload: Option<(&Path, String)> = None;
    let mut tagged: Option<(&Path, String)> = None;
    let mut dynload_count = 0usize;
    let mut tagged_count = 0usize;
    for path in libraries {
        let text = path.to_string_lossy().replace('\\', "/");
        let name = base_name(&text);
        if libpython.is_none() {
            if let Some(version) = libpython_version(name, &text) {
                libpython = Some((path, version));
                continue;
            }
        }
        if let Some(version) = dynload_version(&text) {
            dynload_count += 1;
            dynload.get_or_insert((path, version));
        } else if let Some(version) = extension_tag_version(name) {
            tagged_count += 1;
            tagged.get_or_insert((path, version));
        }
    }
    if let Some((path, version)) = libpython {
        clues.push(Clue {
            evidence: Evidence::new(
                EvidenceSource::System,
                format!("maps the Python library {}", path.display()),
            ),
            confidence: Confidence::High,
            version,
            version_rank: 0,
        });
    }
    if let Some((path, version)) = dynload {
        clues.push(Clue {
            evidence: Evidence::new(
                EvidenceSource::System,
                format!(
                    "maps {dynload_count} standard-library extension module(s) from \
                     python{version}/lib-dynload, e.g. {}",
                    path.display()
                ),
            ),
            confidence: Confidence::Medium,
            version: Some(version),
            version_rank: 2,
        });
    }
    if let Some((path, version)) = tagged {
        clues.push(Clue {
            evidence: Evidence::new(
                EvidenceSource::System,
                format!(
                    "maps {tagged_count} CPython {version} extension module(s), e.g. {}",
                    path.display()
                ),
            ),
            confidence: Confidence::Medium,
            version: Some(version),
            version_rank: 3,
        });
    }
}

/// `libpython3.11.so.1.0`, `libpython3.13t.so`, `libpython3.11.dylib`,
/// `python311.dll`, `.../Python.framework/Versions/3.11/Python` →
/// `Some(Some("3.11"))`; `libpython3.so`, `python3.dll` → `Some(None)`.
fn libpython_version(name: &str, full: &str) -> Option<Option<String>> {
    let lower = name.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("libpython") {
        let end = rest.find(".so").or_else(|| rest.find(".dylib"))?;
        return Some(dotted_version(&rest[..end]));
    }
    if name == "Python" {
        let (_, after) = full.rsplit_once("Python.framework/Versions/")?;
        let version = after.strip_suffix("/Python")?;
        return Some(dotted_version(version));
    }
    if let Some(rest) = lower.strip_prefix("python") {
        let stem = rest.strip_suffix(".dll")?;
        let digits = stem.trim_end_matches(['t', 'd', '_']);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        return Some(packed_version(digits));
    }
    None
}

/// `3.11`, `3.13t`, `3.11d` → `Some("3.11")`; `3` → `None`.
fn dotted_version(text: &str) -> Option<String> {
    let text = text.trim_end_matches(['t', 'd', 'm']);
    let (major, minor) = text.split_once('.')?;
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    (numeric(major) && numeric(minor)).then(|| format!("{major}.{minor}"))
}

/// `311` → `Some("3.11")`, `39` → `Some("3.9")`, `3` → `None`.
fn packed_version(digits: &str) -> Option<String> {
    if digits.len() < 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{}.{}", &digits[..1], &digits[1..]))
}

/// `.../python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so` →
/// `Some("3.11")`.
fn dynload_version(path: &str) -> Option<String> {
    let (before, _) = path.rsplit_once("/lib-dynload/")?;
    let folder = base_name(before).strip_prefix("python")?;
    dotted_version(folder)
}

/// `_multiarray_umath.cpython-311-x86_64-linux-gnu.so`,
/// `_core.cpython-313t-darwin.so`, `cv2.cp311-win_amd64.pyd` →
/// `Some("3.11")` / `Some("3.13")`.
fn extension_tag_version(name: &str) -> Option<String> {
    let (_, after) = name
        .split_once(".cpython-")
        .or_else(|| name.split_once(".cp"))?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    packed_version(&digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libs(paths: &[&str]) -> Vec<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    fn exporting(symbols: &[&str]) -> BinaryInfo {
        BinaryInfo {
            exports: symbols.iter().map(|s| s.to_string()).collect(),
            ..BinaryInfo::default()
        }
    }

    #[test]
    fn names_of_interpreters() {
        assert_eq!(interpreter_name_version("python"), Some(None));
        assert_eq!(interpreter_name_version("python3"), Some(None));
        assert_eq!(
            interpreter_name_version("python3.11"),
            Some(Some("3.11".into()))
        );
        assert_eq!(
            interpreter_name_version("python3.13t"),
            Some(Some("3.13".into()))
        );
        assert_eq!(
            interpreter_name_version("Python3.12.EXE"),
            Some(Some("3.12".into()))
        );
        assert_eq!(interpreter_name_version("pythonw.exe"), Some(None));
        for not_python in [
            "python3-config",
            "python3.11-config",
            "ipython",
            "pythonista",
            "python3.11.2.1",
            "bash",
        ] {
            assert_eq!(interpreter_name_version(not_python), None, "{not_python}");
        }
    }

    #[test]
    fn static_export_and_name_give_cpython_version() {
        let found = detect_python(
            Some(Path::new("/root/.pyenv/versions/3.11.7/bin/python3.11")),
            &libs(&["/usr/lib/x86_64-linux-gnu/libc.so.6"]),
            Some(&exporting(&["Py_BytesMain", "Py_Initialize"])),
        )
        .expect("python");
        assert_eq!(found.value, "CPython 3.11");
        assert_eq!(found.confidence, Confidence::High);
        assert_eq!(found.evidence.len(), 2);
        assert!(found.evidence[0].detail.contains("exports Py_BytesMain"));
        assert_eq!(found.evidence[0].source, EvidenceSource::Static);
        assert_eq!(found.evidence[1].source, EvidenceSource::FileName);
    }

    #[test]
    fn embedded_interpreter_through_libpython() {
        let found = detect_python(
            Some(Path::new("/usr/bin/uwsgi")),
            &libs(&[
                "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
                "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
            ]),
            None,
        )
        .expect("python");
        assert_eq!(found.value, "CPython 3.11");
        assert_eq!(found.confidence, Confidence::High);
        assert!(found.evidence[0].detail.contains("libpython3.11.so.1.0"));
        assert!(found.evidence[1].detail.contains("lib-dynload"));
    }

    #[test]
    fn bare_python_name_without_version() {
        let found = detect_python(Some(Path::new("/usr/bin/python3")), &[], None).unwrap();
        assert_eq!(found.value, "Python");
        assert_eq!(found.confidence, Confidence::Medium);
    }

    #[test]
    fn version_from_extension_modules_only() {
        let found = detect_python(
            Some(Path::new("/opt/app/bin/myapp")),
            &libs(&[
                "/venv/lib/python3.12/site-packages/numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so",
                "/venv/lib/python3.12/site-packages/cv2/cv2.abi3.so",
            ]),
            Some(&exporting(&["main"])),
        )
        .unwrap();
        assert_eq!(found.value, "CPython 3.12");
        assert_eq!(found.confidence, Confidence::Medium);
    }

    #[test]
    fn other_platforms_library_names() {
        assert_eq!(
            libpython_version("python311.dll", "C:/Python311/python311.dll"),
            Some(Some("3.11".into()))
        );
        assert_eq!(libpython_version("python3.dll", "python3.dll"), Some(None));
        assert_eq!(
            libpython_version("python313t.dll", "python313t.dll"),
            Some(Some("3.13".into()))
        );
        assert_eq!(
            libpython_version(
                "Python",
                "/Library/Frameworks/Python.framework/Versions/3.12/Python"
            ),
            Some(Some("3.12".into()))
        );
        assert_eq!(
            libpython_version("libpython3.11.dylib", "/x/libpython3.11.dylib"),
            Some(Some("3.11".into()))
        );
        assert_eq!(
            libpython_version("libpython3.so", "/x/libpython3.so"),
            Some(None)
        );
        assert_eq!(libpython_version("python.exe", "python.exe"), None);
        assert_eq!(
            extension_tag_version("cv2.cp311-win_amd64.pyd"),
            Some("3.11".into())
        );
        assert_eq!(
            extension_tag_version("_core.cpython-313t-darwin.so"),
            Some("3.13".into())
        );
        assert_eq!(extension_tag_version("libcpp.so"), None);
    }

    #[test]
    fn disagreement_is_recorded() {
        let found = detect_python(
            Some(Path::new("/usr/bin/python3.11")),
            &libs(&["/usr/lib/libpython3.12.so.1.0"]),
            None,
        )
        .unwrap();
        assert_eq!(found.value, "CPython 3.12");
        assert_eq!(found.confidence, Confidence::Low);
        assert!(found
            .evidence
            .last()
            .unwrap()
            .detail
            .contains("also seen 3.11"));
    }

    #[test]
    fn not_python() {
        assert_eq!(
            detect_python(
                Some(Path::new("/usr/bin/sleep")),
                &libs(&["/usr/lib/x86_64-linux-gnu/libc.so.6"]),
                Some(&exporting(&["main"])),
            ),
            None
        );
        assert_eq!(detect_python(None, &[], None), None);
    }
}
