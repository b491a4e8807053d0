//! What the script linter does with its inputs: IPython syntax and
//! places in notebooks, notebooks and files that cannot be linted, coding
//! declarations, facts and configuration setting levels, and mangled
//! inputs, which never panic.

use std::path::Path;

use caiclust_probe::Facts;
use caiclust_rules::{
    lint_notebook, lint_script, lint_script_file, lint_scripts, Config, Level, Plan, ScriptError,
};

mod lint_support;

use lint_support::*;
use Level::{Error, Warning};

#[test]
fn notebooks_skip_ipython_syntax_and_keep_places() {
    let found = lint("magics.ipynb");
    assert_eq!(rows(&found), vec![row("CC202", Warning, "cell 4:2:1")]);
    assert!(
        found[0]
            .message
            .starts_with("OMP_NUM_THREADS is set after `import numpy` at cell 1, line 5"),
        "{}",
        found[0].message
    );
    // The place in the file's own JSON text: the line holding that code.
    let span = found[0].evidence[0].span.as_ref().unwrap();
    let (line, column) = span.file_position();
    let text = std::fs::read_to_string(fixture("magics.ipynb")).unwrap();
    let stored = text.lines().nth(line - 1).unwrap();
    let from: String = stored.chars().skip(column - 1).collect();
    assert!(
        from.starts_with(r#"os.environ[\"OMP_NUM_THREADS\"]"#),
        "{line}:{column}: {stored}"
    );
}

#[test]
fn notebooks_that_cannot_be_linted_say_why_and_where() {
    let e = lint_script_file(&fixture("syntax_error.ipynb"), None).unwrap_err();
    assert!(
        matches!(
            e,
            ScriptError::Syntax {
                cell: Some(2),
                line: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("syntax_error.ipynb:cell 2:2:7: syntax error"),
        "{e}"
    );
    for (name, needle) in [
        (
            "not_json.ipynb",
            "not_json.ipynb:3:2: not a usable notebook: not valid JSON",
        ),
        ("nbformat3.ipynb", "nbformat 3 is not supported"),
        ("r_kernel.ipynb", "a R notebook, not a Python one"),
    ] {
        let e = lint_script_file(&fixture(name), None).unwrap_err();
        assert!(matches!(e, ScriptError::Notebook { .. }), "{name}: {e:?}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
        assert!(e.path().ends_with(name));
    }
}

#[test]
fn facts_and_configuration_set_levels() {
    let snap = |name: &str| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(name);
        Facts::from_json(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let linux_fork = snap("linux-pypi-fork-omp1.facts.json");
    let bad = [fixture("cc201_bad.py"), fixture("cc203_bad.py")];
    // Fork here: a pool without the guard still breaks elsewhere, and fork
    // forced works on Linux (warnings).
    let got = lint_scripts(
        &bad,
        Some(&linux_fork),
        &Plan::default(),
        &Config::default(),
    );
    assert!(!got.failed());
    assert!(
        got.findings.iter().all(|f| f.level == Warning) && got.findings.len() == 5,
        "{got:#?}"
    );
    // The plan says spawn: error, with facts or without.
    let spawn = Plan {
        start_method: Some("spawn".into()),
        workers: None,
        ..Plan::default()
    };
    for facts in [Some(&linux_fork), None] {
        let got = lint_scripts(&bad[..1], facts, &spawn, &Config::default());
        assert!(
            got.findings.iter().all(|f| f.level == Error) && got.findings.len() == 3,
            "{got:#?}"
        );
    }
    // A planned fork without facts: warnings, like fork from the facts.
    let fork = Plan {
        start_method: Some("fork".into()),
        workers: None,
        ..Plan::default()
    };
    let got = lint_scripts(&bad[..1], None, &fork, &Config::default());
    assert!(
        got.findings.iter().all(|f| f.level == Warning) && got.findings.len() == 3,
        "{got:#?}"
    );
    // macOS: forcing fork is an error.
    let macos = snap("macos-accelerate-default.facts.json");
    let got = lint_scripts(
        &bad[1..],
        Some(&macos),
        &Plan::default(),
        &Config::default(),
    );
    assert!(
        got.findings.iter().all(|f| f.level == Error) && got.findings.len() == 2,
        "{got:#?}"
    );
    // Configured levels win; `allow` drops the rule.
    let config = Config::from_caiclust_toml(
        "[rules]\npool-without-main-guard = \"info\"\nCC203 = \"allow\"\n",
        Path::new("caiclust.toml"),
    )
    .unwrap();
    let got = lint_scripts(&bad, None, &Plan::default(), &config);
    assert_eq!(got.findings.len(), 3, "{got:#?}");
    assert!(got
        .findings
        .iter()
        .all(|f| f.rule_id == "CC201" && f.level == Level::Info));
}

/// One file that cannot be linted does not stop the others: its error is
/// reported, naming it, and the rest are linted.
#[test]
fn a_bad_file_does_not_stop_the_others() {
    let files = [
        fixture("syntax_error.py"),
        fixture("cc201_bad.py"),
        fixture("no-such-script.py"),
        fixture("unknown_coding.py"),
        fixture("cc205_bad.ipynb"),
    ];
    let got = lint_scripts(&files, None, &Plan::default(), &Config::default());
    assert!(got.failed());
    let failed: Vec<String> = got
        .errors
        .iter()
        .map(|e| e.path().file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        failed,
        ["syntax_error.py", "no-such-script.py", "unknown_coding.py"]
    );
    let ids: std::collections::BTreeSet<&str> =
        got.findings.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(ids, ["CC201", "CC205"].into_iter().collect());
    assert_eq!(got.findings.len(), 3 + 5);
}

#[test]
fn a_syntax_error_is_located_not_a_panic() {
    let path = fixture("syntax_error.py");
    let e = lint_script_file(&path, None).unwrap_err();
    let ScriptError::Syntax {
        line, column, cell, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((*line, *column, *cell), (3, 24, None));
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}:3:24: syntax error", path.display())),
        "{text}"
    );
}

#[test]
fn a_non_utf8_file_without_a_declaration_is_an_error_at_the_first_bad_byte() {
    let e = lint_script_file(&fixture("latin1.py"), None).unwrap_err();
    assert!(
        matches!(
            e,
            ScriptError::Decode {
                line: 2,
                column: 12,
                encoding: None,
                ..
            }
        ),
        "{e:?}"
    );
}

/// PEP 263: a declared encoding is honoured (positions count decoded
/// characters), an unknown one is an error naming the file and line.
#[test]
fn coding_declarations_are_honoured() {
    let found = lint("latin1_declared.py");
    assert_eq!(rows(&found), vec![row("CC202", Warning, "6:1")]);
    assert!(
        found[0].evidence[0].detail.ends_with("# déjà trop tard"),
        "{:?}",
        found[0].evidence
    );
    let e = lint_script_file(&fixture("unknown_coding.py"), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: bad coding declaration: unknown encoding 'klingon'",
            fixture("unknown_coding.py").display()
        )
    );
    // A UTF-8 byte-order mark is dropped: columns start after it.
    assert_eq!(rows(&lint("bom.py")), vec![row("CC201", Error, "2:8")]);
}

#[test]
fn a_missing_file_is_an_error() {
    let e = lint_script_file(&fixture("no-such-script.py"), None).unwrap_err();
    assert!(matches!(e, ScriptError::Read { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("no-such-script.py: cannot read the script"),
        "{e}"
    );
}

#[test]
fn sources_lint_without_files() {
    let got = lint_script(
        Path::new("x.py"),
        "\u{feff}from multiprocessing import Pool\nPool()\n",
        None,
    )
    .unwrap();
    assert_eq!(got[0].location.as_deref(), Some("./x.py:2:1"));
    // Lambdas and defaults of functions are not run at import.
    let got = lint_script(
        Path::new("y.py"),
        "import multiprocessing as mp\nf = lambda: mp.Pool()\nclass A:\n    pool = mp.Pool()\n",
        None,
    )
    .unwrap();
    assert_eq!(rows(&got), vec![row("CC201", Error, "4:12")]);
}

/// Truncated or mangled notebooks and scripts are errors or findings,
/// never panics: every prefix of a real notebook, and byte flips through
/// it (a fixed pseudo-random sequence, so failures reproduce).
#[test]
fn mangled_inputs_never_panic() {
    let text = std::fs::read_to_string(fixture("magics.ipynb")).unwrap();
    let path = Path::new("m.ipynb");
    for (end, _) in text.char_indices() {
        let _ = lint_notebook(path, &text[..end], None);
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let mut bytes = text.clone().into_bytes();
        for _ in 0..3 {
            let at = (next() % bytes.len() as u64) as usize;
            const SOME: &[u8] = b"{}[]\",:\\%!?\n x01";
            bytes[at] = SOME[(next() % SOME.len() as u64) as usize];
        }
        if let Ok(s) = String::from_utf8(bytes) {
            let _ = lint_notebook(path, &s, None);
            let _ = lint_script(Path::new("m.py"), &s, None);
        }
    }
}
