//! Shared by the `check_*` tests: running the binaries on the snapshots in
//! `tests/data/`, and a synthetic report with one finding per kind of
//! location (so renderers are tested even while the rule table is small).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use caiclust_core::probe::{Evidence, EvidenceSource, Facts};
use caiclust_rules::{Finding, Level, Report};

pub const CHECK: &str = env!("CARGO_BIN_EXE_caiclust-check");
pub const CAICLUST: &str = env!("CARGO_BIN_EXE_caiclust");

/// A facts snapshot in `tests/data/`.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The PyPI venv on Linux: GNU OpenMP (scikit-learn), OpenBLAS twice.
pub fn pypi_linux() -> PathBuf {
    data("check-pypi-linux.json")
}

/// A script that runs scikit-learn's OpenMP code in the parent and again
/// in forked workers (a verdict fixture, `tests/verdicts/`): with it, the
/// PyPI facts' libgomp is an error, not only installed.
pub fn kmeans_across_fork() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/verdicts/kmeans_parent_and_workers.py")
}

/// NumPy's Windows wheel: OpenBLAS, no OpenMP; spawn is the only start method.
pub fn numpy_windows() -> PathBuf {
    data("check-numpy-windows.json")
}

/// Run a program in an empty temporary folder (no configuration file
/// above it), without colour forced by the caller's environment.
pub fn run(program: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    Command::new(program)
        .args(args)
        .current_dir(dir.path())
        .env_remove("CLICOLOR_FORCE")
        .env_remove("NO_COLOR")
        .output()
        .expect("run")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn facts(path: &std::path::Path) -> Facts {
    Facts::from_json(&std::fs::read_to_string(path).expect("read facts")).expect("parse facts")
}

/// Three findings: a file location with line and column, an environment
/// variable, a library name; messages with characters that need escaping.
pub fn synthetic_report() -> Report {
    let ev = |d: &str| Evidence::new(EvidenceSource::Static, d);
    Report {
        findings: vec![
            Finding {
                rule_id: "CC001".into(),
                rule_name: "gnu-openmp-after-fork".into(),
                level: Level::Error,
                message: "libgomp is loaded, and workers fork: 100% hang risk, see below".into(),
                evidence: vec![ev("NEEDED libgomp.so.1")],
                fix: Some("use spawn:\nmultiprocessing.set_start_method('spawn')".into()),
                location: Some("/opt/my env/lib/libgomp-e985bcbb.so.1.0.0".into()),
                env_fix: Vec::new(),
                presumed: false,
            },
            Finding {
                rule_id: "CC010".into(),
                rule_name: "threads-times-workers".into(),
                level: Level::Warning,
                message: "OMP_NUM_THREADS is unset, 4 workers x 8 threads".into(),
                evidence: vec![],
                fix: None,
                location: Some("OMP_NUM_THREADS".into()),
                env_fix: Vec::new(),
                presumed: false,
            },
            Finding {
                rule_id: "CC020".into(),
                rule_name: "duplicate-openblas".into(),
                level: Level::Info,
                message: "two OpenBLAS copies".into(),
                evidence: vec![ev("export openblas_get_config")],
                fix: None,
                location: Some("libopenblas.so.0".into()),
                env_fix: Vec::new(),
                presumed: false,
            },
            Finding {
                rule_id: "CC030".into(),
                rule_name: "script-check".into(),
                level: Level::Warning,
                message: "in a script".into(),
                evidence: vec![],
                fix: None,
                location: Some("src/run,job.py:12:5".into()),
                env_fix: Vec::new(),
                presumed: false,
            },
        ],
        deny_level: Level::Error,
    }
}

// The SARIF 2.1.0 schema check: the fetch script gives the schema and a
// Python with `jsonschema`. A missing schema fails the test, never skips.

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Run the fetch script (idempotent; offline once it has run) and return
/// the schema and the Python that has `jsonschema`.
pub fn schema_and_python() -> (PathBuf, PathBuf) {
    let script = repo().join("scripts/fetch-sarif-schema.sh");
    let o = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run fetch-sarif-schema.sh");
    assert!(
        o.status.success(),
        "scripts/fetch-sarif-schema.sh failed; the SARIF 2.1.0 schema is needed to test --format sarif:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let schema = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(
        schema.is_file(),
        "SARIF schema missing at {} (run scripts/fetch-sarif-schema.sh)",
        schema.display()
    );
    let fixtures = std::env::var_os("CAICLUST_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".fixtures"));
    let python = fixtures.join("sarif/venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing (run scripts/fetch-sarif-schema.sh)",
        python.display()
    );
    (schema, python)
}

const VALIDATE: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.load(sys.stdin)
v = jsonschema.validators.validator_for(schema)(schema)
errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print("/".join(map(str, e.path)), e.message)
sys.exit(1 if errors else 0)
"#;

/// Validate a SARIF log against the official 2.1.0 schema; fails the test
/// with every schema error otherwise.
pub fn validate_sarif(log: &str) {
    let (schema, python) = schema_and_python();
    let mut child = Command::new(&python)
        .args(["-c", VALIDATE])
        .arg(&schema)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start validator");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(log.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "SARIF log does not validate against {}:\n{}{}\n---\n{log}",
        schema.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
