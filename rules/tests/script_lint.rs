//! The script rules (CC201–CC209) over the fixtures in `tests/scripts/`
//! (Python scripts and Jupyter notebooks): each rule has a bad fixture
//! with the exact findings it must give and a safe counterpart that gives
//! none; plus alias resolution, guards nested in other blocks and the
//! script's own functions. What each rule's finding says is in
//! `script_lint_rules.rs`; notebooks, encodings, facts and files that
//! cannot be linted in `script_lint_inputs.rs`.

use caiclust_rules::{all_rules, find_rule, Level, SCRIPT_RULES};

mod lint_support;

use lint_support::*;
use Level::{Error, Warning};

fn bad_fixtures() -> Vec<(&'static str, Vec<Row>)> {
    vec![
        (
            "cc201_bad.py",
            vec![
                row("CC201", Error, "9:6"),
                row("CC201", Error, "13:10"),
                row("CC201", Error, "23:1"),
            ],
        ),
        (
            "cc202_bad.py",
            vec![
                row("CC202", Warning, "5:1"),
                row("CC202", Warning, "6:1"),
                row("CC202", Warning, "7:1"),
                row("CC202", Warning, "8:1"),
                row("CC202", Warning, "13:5"),
            ],
        ),
        (
            "cc203_bad.py",
            vec![row("CC203", Error, "5:5"), row("CC203", Error, "6:41")],
        ),
        (
            "cc204_bad.py",
            vec![row("CC204", Warning, "5:19"), row("CC208", Warning, "5:19")],
        ),
        ("cc205_bad.py", vec![row("CC205", Error, "11:24")]),
        (
            "cc205_bad.ipynb",
            vec![
                row("CC205", Error, "cell 4:2:21"),
                row("CC205", Error, "cell 5:1:32"),
                row("CC205", Error, "cell 5:2:20"),
                row("CC205", Error, "cell 5:3:33"),
                row("CC205", Error, "cell 6:1:26"),
            ],
        ),
        (
            "cc206_bad.py",
            vec![
                row("CC206", Warning, "7:19"),
                row("CC206", Warning, "8:5"),
                row("CC206", Warning, "10:5"),
                row("CC206", Warning, "11:5"),
            ],
        ),
        (
            "cc207_bad.py",
            vec![
                row("CC208", Warning, "8:19"),
                row("CC207", Error, "9:19"),
                row("CC208", Warning, "9:19"),
                row("CC207", Error, "15:5"),
                row("CC208", Warning, "15:5"),
                row("CC207", Error, "20:5"),
                row("CC208", Warning, "20:5"),
                row("CC207", Error, "26:23"),
                row("CC208", Warning, "26:23"),
            ],
        ),
        (
            "cc207_bad.ipynb",
            vec![row("CC207", Warning, "cell 2:1:25")],
        ),
        (
            "cc205_default_method.ipynb",
            vec![row("CC205", Error, "cell 2:4:20")],
        ),
        (
            "cc208_bad.py",
            vec![
                row("CC208", Warning, "10:19"),
                row("CC208", Warning, "12:19"),
                row("CC208", Warning, "14:19"),
                row("CC208", Warning, "16:19"),
                row("CC206", Warning, "18:19"),
                row("CC208", Warning, "18:19"),
            ],
        ),
        (
            "cc209_bad.py",
            vec![
                // In fit(), which main() calls before its pool.
                row("CC209", Error, "15:13"),
                row("CC209", Error, "24:5"),
                row("CC209", Error, "25:5"),
                row("CC209", Error, "26:10"),
                // Before os.fork().
                row("CC209", Error, "34:5"),
                row("CC203", Error, "40:5"),
            ],
        ),
        ("cc209_bad.ipynb", vec![row("CC209", Warning, "cell 2:1:9")]),
    ]
}

/// What `caiclust rules` and `caiclust explain` show as a rule's level is
/// what its fixture gives when nothing is known about the platform (the
/// portable worst case): never more, and at least once exactly that.
/// Facts can only lower it (CC201 and CC203 where fork works, CC205 with
/// fork) and CC207 is a warning for a notebook cell that fails only when
/// run again.
#[test]
fn without_facts_script_rules_report_at_their_displayed_level() {
    for (name, _) in bad_fixtures() {
        for f in lint(name) {
            let rule = find_rule(&f.rule_id).unwrap();
            let shown = rule.info().category.default_level();
            assert!(f.level <= shown, "{name}: {f:#?}");
        }
    }
    for id in SCRIPT_RULES {
        let shown = find_rule(id).unwrap().info().category.default_level();
        let at_shown = bad_fixtures()
            .into_iter()
            .flat_map(|(name, _)| lint(name))
            .any(|f| f.rule_id == *id && f.level == shown);
        assert!(at_shown, "{id}: no fixture gives its displayed level");
    }
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
        "cc205_safe.py",
        "cc205_safe.ipynb",
        "cc206_safe.py",
        "cc207_safe.py",
        "cc207_safe.ipynb",
        "cc207_cell_stops.ipynb",
        "cc208_safe.py",
        "cc208_patched.py",
        "cc209_safe.py",
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
            row("CC201", Error, "9:8"),
            row("CC201", Error, "10:9"),
            row("CC201", Error, "11:15"),
            // The pool of line 9 is still alive.
            row("CC207", Error, "11:15"),
            row("CC208", Warning, "11:15"),
            row("CC201", Error, "12:18"),
            row("CC207", Error, "12:18"),
            row("CC208", Warning, "12:18"),
            row("CC201", Error, "14:6"),
        ]
    );
    let msgs: Vec<String> = lint("cc201_aliases.py")
        .into_iter()
        .map(|f| f.message)
        .collect();
    for what in [
        "`multiprocessing.Pool`",
        "`caiman.cluster.setup_cluster`",
        "`concurrent.futures.ProcessPoolExecutor`",
    ] {
        assert!(
            msgs.iter().any(|m| m.starts_with(what)),
            "{what}: {msgs:#?}"
        );
    }
    assert!(msgs[0].contains("the script asks for spawn"), "{}", msgs[0]);
}

/// ipyparallel's engines are programs of their own (`python -m
/// ipyparallel.engine`): they never import the script, so a module-level
/// cluster needs no guard; nor do CaImAn's ipyparallel and single backends.
#[test]
fn ipyparallel_needs_no_main_guard() {
    let found = lint("cc201_ipyparallel_safe.py");
    assert!(found.iter().all(|f| f.rule_id != "CC201"), "{found:#?}");
    // The module-level wait for engines is CC206's business, the engine
    // count CC208's.
    assert_eq!(
        rows(&found),
        vec![row("CC206", Warning, "8:15"), row("CC208", Warning, "8:15")]
    );
}

#[test]
fn guards_nested_in_other_blocks_count() {
    assert_eq!(lint("cc201_nested_guard.py"), vec![]);
}

#[test]
fn functions_called_at_module_level_are_followed() {
    let findings = lint("cc201_main_called.py");
    assert_eq!(rows(&findings), vec![row("CC201", Error, "17:1")]);
    assert!(findings[0]
        .message
        .starts_with("`main()` starts worker processes"));
}
