//! The script rules (CC201–CC204) over the fixtures in `tests/scripts/`:
//! each rule has a bad fixture with the exact findings it must give and a
//! safe counterpart that gives none; plus alias resolution, guards nested
//! in other blocks, the script's own functions, and files that cannot be
//! linted.

use std::path::{Path, PathBuf};

use caiclust_probe::Facts;
use caiclust_rules::{
    all_rules, find_rule, lint_script, lint_script_file, lint_scripts, Config, Finding, Level,
    Plan, ScriptError, SCRIPT_RULES,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(name)
}

/// (rule id, level, line, column) of each finding, sorted.
type Row = (String, Level, usize, usize);

fn rows(findings: &[Finding]) -> Vec<Row> {
    let mut rows: Vec<Row> = findings
        .iter()
        .map(|f| {
            let loc = f.location.as_deref().expect("location");
            let mut parts = loc.rsplitn(3, ':');
            let col = parts.next().unwrap().parse().expect("column");
            let line = parts.next().unwrap().parse().expect("line");
            (f.rule_id.clone(), f.level, line, col)
        })
        .collect();
    rows.sort_by(|a, b| (a.2, a.3, &a.0).cmp(&(b.2, b.3, &b.0)));
    rows
}

fn lint(name: &str) -> Vec<Finding> {
    let findings = lint_script_file(&fixture(name), None).unwrap_or_else(|e| panic!("{e}"));
    for f in &findings {
        assert!(!f.message.is_empty() && f.fix.is_some(), "{f:#?}");
        assert_eq!(f.evidence.len(), 1, "{f:#?}");
        let loc = f.location.as_deref().unwrap();
        assert!(loc.contains(name), "{loc}");
    }
    findings
}

fn row(id: &str, level: Level, line: usize, col: usize) -> Row {
    (id.to_string(), level, line, col)
}

use Level::{Error, Warning};

/// Every fixture `*_bad.py` and what it must give, exactly.
fn bad_fixtures() -> Vec<(&'static str, Vec<Row>)> {
    vec![
        (
            "cc201_bad.py",
            vec![
                row("CC201", Error, 9, 6),
                row("CC201", Error, 13, 10),
                row("CC201", Error, 23, 1),
            ],
        ),
        (
            "cc202_bad.py",
            vec![
                row("CC202", Warning, 5, 1),
                row("CC202", Warning, 6, 1),
                row("CC202", Warning, 7, 1),
                row("CC202", Warning, 8, 1),
                row("CC202", Warning, 13, 5),
            ],
        ),
        (
            "cc203_bad.py",
            vec![row("CC203", Warning, 5, 5), row("CC203", Warning, 6, 41)],
        ),
        ("cc204_bad.py", vec![row("CC204", Warning, 5, 19)]),
    ]
}

#[test]
fn bad_fixtures_give_exactly_their_findings() {
    for (name, want) in bad_fixtures() {
        assert_eq!(rows(&lint(name)), want, "{name}");
    }
}

#[test]
fn safe_counterparts_give_nothing() {
    for name in [
        "cc201_safe.py",
        "cc202_safe.py",
        "cc203_safe.py",
        "cc204_safe.py",
    ] {
        assert_eq!(lint(name), vec![], "{name}");
    }
}

/// Like rustc's error index, for the rules the facts snapshots cannot
/// trigger: every script rule has a bad fixture that raises it.
#[test]
fn every_script_rule_is_triggered_by_a_fixture() {
    let mut triggered = std::collections::BTreeSet::new();
    for (name, _) in bad_fixtures() {
        for f in lint(name) {
            triggered.insert(f.rule_id);
        }
    }
    for id in SCRIPT_RULES {
        assert!(triggered.contains(*id), "{id} has no fixture");
        let rule = find_rule(id).expect("registered");
        assert_eq!(rule.info().id, *id);
    }
    // Registered rules with ids from CC200 on are the script rules.
    let registered: Vec<&str> = all_rules()
        .iter()
        .map(|r| r.info().id)
        .filter(|id| id.as_bytes().get(2) == Some(&b'2'))
        .collect();
    assert_eq!(registered, SCRIPT_RULES);
}

#[test]
fn imports_are_resolved_through_aliases() {
    let got = rows(&lint("cc201_aliases.py"));
    assert_eq!(
        got,
        vec![
            row("CC201", Error, 9, 8),
            row("CC201", Error, 10, 9),
            row("CC201", Error, 11, 15),
            row("CC201", Error, 12, 18),
            row("CC201", Error, 13, 11),
            row("CC201", Error, 14, 6),
        ]
    );
    let msgs: Vec<String> = lint("cc201_aliases.py")
        .into_iter()
        .map(|f| f.message)
        .collect();
    for what in [
        "`multiprocessing.Pool`",
        "`caiman.cluster.setup_cluster`",
        "`ipyparallel.Cluster`",
        "`concurrent.futures.ProcessPoolExecutor`",
    ] {
        assert!(
            msgs.iter().any(|m| m.starts_with(what)),
            "{what}: {msgs:#?}"
        );
    }
    assert!(msgs[0].contains("the script asks for spawn"), "{}", msgs[0]);
}

#[test]
fn guards_nested_in_other_blocks_count() {
    assert_eq!(lint("cc201_nested_guard.py"), vec![]);
}

#[test]
fn functions_called_at_module_level_are_followed() {
    let findings = lint("cc201_main_called.py");
    assert_eq!(rows(&findings), vec![row("CC201", Error, 17, 1)]);
    assert!(findings[0]
        .message
        .starts_with("`main()` starts worker processes"));
}

#[test]
fn the_cc202_finding_names_the_variable_and_the_import() {
    let f = &lint("cc202_bad.py")[0];
    assert!(
        f.message
            .starts_with("OMP_NUM_THREADS is set after `import numpy` at line 2"),
        "{}",
        f.message
    );
    assert!(f
        .message
        .contains("does nothing for this process or fork children"));
    assert!(
        f.evidence[0]
            .detail
            .ends_with(":5: os.environ[\"OMP_NUM_THREADS\"] = \"1\""),
        "{:?}",
        f.evidence
    );
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
    // Fork here: a pool without the guard still breaks elsewhere (warning).
    let got = lint_scripts(
        &bad,
        Some(&linux_fork),
        &Plan::default(),
        &Config::default(),
    )
    .unwrap();
    assert!(got.iter().all(|f| f.level == Warning), "{got:#?}");
    // The plan says spawn: error.
    let spawn = Plan {
        start_method: Some("spawn".into()),
        workers: None,
    };
    let got = lint_scripts(&bad[..1], Some(&linux_fork), &spawn, &Config::default()).unwrap();
    assert!(
        got.iter().all(|f| f.level == Error) && got.len() == 3,
        "{got:#?}"
    );
    // macOS: forcing fork is an error.
    let macos = snap("macos-accelerate-default.facts.json");
    let got = lint_scripts(
        &bad[1..],
        Some(&macos),
        &Plan::default(),
        &Config::default(),
    )
    .unwrap();
    assert!(
        got.iter().all(|f| f.level == Error) && got.len() == 2,
        "{got:#?}"
    );
    // Configured levels win; `allow` drops the rule.
    let config = Config::from_caiclust_toml(
        "[rules]\npool-without-main-guard = \"info\"\nCC203 = \"allow\"\n",
        Path::new("caiclust.toml"),
    )
    .unwrap();
    let got = lint_scripts(&bad, None, &Plan::default(), &config).unwrap();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got
        .iter()
        .all(|f| f.rule_id == "CC201" && f.level == Level::Info));
}

#[test]
fn a_syntax_error_is_located_not_a_panic() {
    let path = fixture("syntax_error.py");
    let e = lint_script_file(&path, None).unwrap_err();
    let ScriptError::Syntax { line, column, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!((*line, *column), (3, 24));
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}:3:24: syntax error", path.display())),
        "{text}"
    );
}

#[test]
fn a_non_utf8_file_is_an_error_at_the_first_bad_byte() {
    let e = lint_script_file(&fixture("latin1.py"), None).unwrap_err();
    assert!(
        matches!(
            e,
            ScriptError::NotUtf8 {
                line: 2,
                column: 12,
                ..
            }
        ),
        "{e:?}"
    );
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
    assert_eq!(rows(&got), vec![row("CC201", Error, 4, 12)]);
}
