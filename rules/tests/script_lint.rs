//! The script rules (CC201–CC209) over the fixtures in `tests/scripts/`
//! (Python scripts and Jupyter notebooks): each rule has a bad fixture
//! with the exact findings it must give and a safe counterpart that gives
//! none; plus alias resolution, guards nested in other blocks, the
//! script's own functions, IPython syntax in notebooks, coding
//! declarations, and files that cannot be linted.

use std::path::{Path, PathBuf};

use caiclust_probe::{EvidenceSource, Facts};
use caiclust_rules::{
    all_rules, find_rule, lint_notebook, lint_script, lint_script_file, lint_scripts, Config,
    Finding, Level, Plan, ScriptError, SCRIPT_RULES,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(name)
}

/// (rule id, level, place): the place is the location after the file
/// name, `9:6` in a script, `cell 4:2:5` in a notebook.
type Row = (String, Level, String);

fn place(f: &Finding) -> String {
    let loc = f.location.as_deref().expect("location");
    let span = f.evidence[0].span.as_ref().expect("span");
    match span.cell {
        Some(cell) => {
            let want = format!(":cell {cell}:{}:{}", span.line, span.column);
            assert!(loc.ends_with(&want), "{loc} vs {span:?}");
            want[1..].to_string()
        }
        None => {
            let want = format!(":{}:{}", span.line, span.column);
            assert!(loc.ends_with(&want), "{loc} vs {span:?}");
            want[1..].to_string()
        }
    }
}

fn rows(findings: &[Finding]) -> Vec<Row> {
    let mut rows: Vec<(Row, (usize, usize, usize))> = findings
        .iter()
        .map(|f| {
            let s = f.evidence[0].span.as_ref().unwrap();
            (
                (f.rule_id.clone(), f.level, place(f)),
                (s.cell.unwrap_or(0), s.line, s.column),
            )
        })
        .collect();
    rows.sort_by(|a, b| (a.1, &a.0 .0).cmp(&(b.1, &b.0 .0)));
    rows.into_iter().map(|(r, _)| r).collect()
}

/// Lint a fixture; every finding must be complete and point into it.
fn lint(name: &str) -> Vec<Finding> {
    let findings = lint_script_file(&fixture(name), None).unwrap_or_else(|e| panic!("{e}"));
    for f in &findings {
        assert!(!f.message.is_empty() && f.fix.is_some(), "{f:#?}");
        let first = &f.evidence[0];
        assert_eq!(first.source, EvidenceSource::SourceCode, "{f:#?}");
        let span = first.span.as_ref().expect("span");
        assert!(span.path.ends_with(name), "{span:?}");
        let loc = f.location.as_deref().unwrap();
        assert!(loc.contains(name), "{loc}");
        place(f);
    }
    findings
}

fn row(id: &str, level: Level, place: &str) -> Row {
    (id.to_string(), level, place.to_string())
}

use Level::{Error, Warning};

/// Every bad fixture and what it must give, exactly.
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
fn the_cc205_finding_names_the_function_its_definition_and_the_error() {
    let found = lint("cc205_bad.ipynb");
    let f = &found[0];
    assert!(
        f.message.starts_with(
            "`work` is defined in this notebook and sent to `ProcessPoolExecutor.submit`: the script asks for spawn"
        ),
        "{}",
        f.message
    );
    assert!(
        f.message
            .contains("Can't get attribute 'work' on <module '__main__'>"),
        "{}",
        f.message
    );
    // The call, then the definition (cell 3, line 1).
    let def = f.evidence[1].span.as_ref().expect("definition span");
    assert_eq!((def.cell, def.line, def.column), (Some(3), 1, 1));
    assert!(f.evidence[1].detail.ends_with(":cell 3:1: def work(x):"));
    let what: Vec<&str> = found
        .iter()
        .map(|f| f.message.split('`').nth(3).unwrap_or(""))
        .collect();
    assert_eq!(
        what,
        [
            "ProcessPoolExecutor.submit",
            "Pool(initializer=...)",
            "Pool.map",
            "Pool.apply_async",
            "Process(target=...)"
        ]
    );
    let script = lint("cc205_bad.py");
    assert!(
        script[0]
            .message
            .contains("under `if __name__ == \"__main__\":`")
            && script[0].message.contains("<module '__mp_main__'>"),
        "{}",
        script[0].message
    );
}

/// The start method decides: fork (the facts of Linux with Python < 3.14,
/// or `--start-method fork`) is fine; spawn is an error, and so is not
/// knowing (the portable worst case).
#[test]
fn cc205_follows_the_start_method() {
    let source = r#"{"nbformat": 4, "metadata": {}, "cells": [
        {"cell_type": "code", "source": ["import multiprocessing as mp\n", "def f(x):\n", "    return x\n"]},
        {"cell_type": "code", "source": ["with mp.Pool(2) as pool:\n", "    pool.map(f, [1])\n"]}]}"#;
    let path = Path::new("nb.ipynb");
    let got = lint_notebook(path, source, None).unwrap();
    assert_eq!(rows(&got), vec![row("CC205", Error, "cell 2:2:14")]);
    assert!(got[0].message.contains("fine only where it is fork"));

    let snap = |name: &str| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(name);
        Facts::from_json(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let config = Config::default();
    let file = std::env::temp_dir().join(format!("caiclust-cc205-{}.ipynb", std::process::id()));
    std::fs::write(&file, source).unwrap();
    let linux = snap("linux-pypi-fork-omp1.facts.json");
    let lint_with = |facts: Option<&Facts>, method: Option<&str>| {
        let plan = Plan {
            start_method: method.map(str::to_string),
            workers: None,
            ..Plan::default()
        };
        let out = lint_scripts(&[&file], facts, &plan, &config);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        out.findings
    };
    assert_eq!(lint_with(Some(&linux), None), vec![]);
    assert_eq!(lint_with(None, Some("fork")), vec![]);
    let spawn = lint_with(None, Some("spawn"));
    assert_eq!(spawn.len(), 1);
    assert_eq!(spawn[0].level, Error);
    assert!(spawn[0]
        .evidence
        .iter()
        .any(|e| e.detail == "start method spawn (planned or configured)"));
    let macos = lint_with(Some(&snap("macos-accelerate-default.facts.json")), None);
    assert_eq!(macos.len(), 1);
    assert!(
        macos[0].message.contains("the start method here is spawn"),
        "{}",
        macos[0].message
    );
    let _ = std::fs::remove_file(&file);

    // An imported function is fine; a later cell that redefines it is not.
    let imported = r#"{"nbformat": 4, "metadata": {}, "cells": [
        {"cell_type": "code", "source": ["import multiprocessing as mp\n", "from tasks import f\n"]},
        {"cell_type": "code", "source": ["mp.get_context('spawn').Pool(2).map(f, [1])\n"]},
        {"cell_type": "code", "source": ["def f(x):\n", "    return x\n", "mp.get_context('spawn').Pool(2).map(f, [1])\n"]}]}"#;
    let got = lint_notebook(path, imported, None).unwrap();
    assert_eq!(rows(&got), vec![row("CC205", Error, "cell 3:3:37")]);
}

/// Issue #14: a notebook cell that sets up a cluster and stops it again
/// leaves nothing running, so running it again is fine (no warning) and
/// a later cell's `setup_cluster` does not fail (no error); a later cell
/// that leaves its cluster running is still reported, once.
#[test]
fn cc207_a_cell_that_stops_its_own_cluster_is_fine() {
    let nb = r#"{"nbformat": 4, "metadata": {}, "cells": [
        {"cell_type": "code", "source": ["import caiman as cm\n", "import multiprocessing as mp\n"]},
        {"cell_type": "code", "source": ["c, dview, n = cm.cluster.setup_cluster(n_processes=2)\n", "cm.stop_server(dview=dview)\n"]},
        {"cell_type": "code", "source": ["pool = mp.Pool(2)\n", "pool.terminate()\n", "c, dview, n = cm.cluster.setup_cluster(n_processes=2)\n", "dview.terminate()\n"]},
        {"cell_type": "code", "source": ["c, dview, n = cm.cluster.setup_cluster(n_processes=2)\n", "dview.map(abs, [1])\n"]}]}"#;
    let got = lint_notebook(Path::new("nb.ipynb"), nb, None).unwrap();
    assert_eq!(rows(&got), vec![row("CC207", Warning, "cell 4:1:15")]);
    // Stopping some other pool after the setup does not count.
    let other = r#"{"nbformat": 4, "metadata": {}, "cells": [
        {"cell_type": "code", "source": ["import caiman as cm\n", "import multiprocessing as mp\n"]},
        {"cell_type": "code", "source": ["other = mp.Pool(2)\n", "other.terminate()\n", "c, dview, n = cm.cluster.setup_cluster(n_processes=2)\n", "other.close()\n"]}]}"#;
    let got = lint_notebook(Path::new("nb.ipynb"), other, None).unwrap();
    assert_eq!(rows(&got), vec![row("CC207", Warning, "cell 2:3:15")]);
}

/// Facts decide what CC208 says: on a Slurm job that may use 4 of the
/// node's 16 CPUs it names both numbers and the count to pass; where the
/// facts show every CPU usable, CaImAn's count is right and nothing is
/// reported; without facts the fix says how to count where it runs.
#[test]
fn cc208_names_the_usable_cpus_when_the_facts_know_them() {
    let snap = |name: &str| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(name);
        Facts::from_json(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let bad = [fixture("cc208_bad.py")];
    let cc208 = |facts: Option<&Facts>| -> Vec<Finding> {
        let got = lint_scripts(&bad, facts, &Plan::default(), &Config::default());
        assert!(!got.failed());
        got.findings
            .into_iter()
            .filter(|f| f.rule_id == "CC208")
            .collect()
    };
    let slurm = cc208(Some(&snap("linux-slurm-limited.facts.json")));
    assert_eq!(slurm.len(), 5, "{slurm:#?}");
    for f in &slurm {
        assert_eq!(f.level, Warning);
        let fix = f.fix.as_deref().unwrap();
        assert!(fix.contains("4 of 16 CPUs"), "{fix}");
        assert!(fix.contains("n_processes=3"), "{fix}");
        assert!(fix.contains("caiclust.setup_cluster"), "{fix}");
        assert!(f.message.contains("SLURM_CPUS_PER_TASK"), "{}", f.message);
        assert!(
            f.evidence.iter().any(|e| e.detail == "16 logical CPUs"),
            "{:?}",
            f.evidence
        );
    }
    assert!(
        slurm[0].message.contains("15 workers"),
        "{}",
        slurm[0].message
    );
    assert!(
        slurm[4].message.contains("15 engines"),
        "{}",
        slurm[4].message
    );

    assert_eq!(cc208(Some(&snap("linux-pypi-fork.facts.json"))), vec![]);
    // Facts that cannot tell the usable CPUs count as none.
    let mut blind = snap("linux-pypi-fork.facts.json");
    blind.host.usable_cpus = None;
    blind.host.affinity = None;
    let blind = cc208(Some(&blind));
    assert_eq!(blind.len(), 5);
    assert!(blind[0].fix.as_deref().unwrap().contains("where it runs"));

    let unknown = cc208(None);
    assert_eq!(unknown.len(), 5);
    let fix = unknown[0].fix.as_deref().unwrap();
    for needle in [
        "len(os.sched_getaffinity(0))",
        "caiclust.usable_cpus()",
        "caiclust.setup_cluster",
    ] {
        assert!(fix.contains(needle), "{needle}: {fix}");
    }
}

fn snapshot_facts(name: &str) -> Facts {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    Facts::from_json(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Issue #14: a thread count set in code defeats OMP_NUM_THREADS. With
/// facts that fork, have GNU OpenMP and set OMP_NUM_THREADS=1 (where CC001
/// says fork is safe), the count before the pool is an error that says
/// the variable does not help; spawn facts make it nothing; facts with
/// no GNU OpenMP make it a warning.
#[test]
fn cc209_follows_the_start_method_and_names_the_variable_it_defeats() {
    let nb = [fixture("cc209_bad.ipynb")];
    let cc209 = |facts: Option<&Facts>, method: Option<&str>| -> Vec<Finding> {
        let plan = Plan {
            start_method: method.map(str::to_string),
            ..Plan::default()
        };
        let got = lint_scripts(&nb, facts, &plan, &Config::default());
        assert!(!got.failed());
        got.findings
            .into_iter()
            .filter(|f| f.rule_id == "CC209")
            .collect()
    };
    let omp1 = snapshot_facts("linux-pypi-fork-omp1.facts.json");
    let got = cc209(Some(&omp1), None);
    assert_eq!(got.len(), 1, "{got:#?}");
    let f = &got[0];
    assert_eq!(f.level, Error);
    assert!(
        f.message.starts_with(
            "`LGBMRegressor(num_threads=8)` sets a thread count in code (8 threads for lightgbm) before multiprocessing.Pool at cell 3, line 1 starts workers (the start method here is fork (the interpreter's default))"
        ),
        "{}",
        f.message
    );
    assert!(
        f.message
            .contains("OMP_NUM_THREADS=1 in the environment does not change that"),
        "{}",
        f.message
    );
    let fix = f.fix.as_deref().unwrap();
    assert!(
        fix.starts_with("OMP_NUM_THREADS=1 does not override an explicit count"),
        "{fix}"
    );
    for way in [
        "spawn or forkserver",
        "set the count to 1",
        "create the pool before",
    ] {
        assert!(fix.contains(way), "{way}: {fix}");
    }
    assert!(f
        .evidence
        .iter()
        .any(|e| e.detail == "start method fork (the interpreter's default)"));
    // The facts alone see nothing wrong here: OMP_NUM_THREADS=1.
    let report = caiclust_rules::evaluate(&omp1, &Plan::default(), &Config::default());
    assert!(report.findings.iter().all(|f| f.rule_id != "CC001"));

    assert_eq!(cc209(Some(&omp1), Some("spawn")), vec![]);
    assert_eq!(cc209(None, Some("forkserver")), vec![]);
    assert_eq!(
        cc209(
            Some(&snapshot_facts("macos-accelerate-default.facts.json")),
            None
        ),
        vec![]
    );
    let no_gomp = cc209(
        Some(&snapshot_facts(
            "linux-debian-openblas-pthreads-fork.facts.json",
        )),
        None,
    );
    assert_eq!(no_gomp.len(), 1);
    assert_eq!(no_gomp[0].level, Warning);
    assert!(no_gomp[0].message.contains("no GNU OpenMP runtime"));
    let planned_fork = cc209(None, Some("fork"));
    assert_eq!(planned_fork[0].level, Error);
}

/// Module-level code runs when the module is imported, before any of its
/// functions can be called from outside: a count there precedes a pool in
/// a function that nothing in the file calls (a module of tasks).
#[test]
fn cc209_a_module_level_count_precedes_the_modules_functions() {
    let src = "import multiprocessing as mp\nimport torch\n\
               torch.set_num_threads(8)\n\
               def run(items):\n\
               \x20   with mp.get_context('fork').Pool(2) as pool:\n\
               \x20       return pool.map(abs, items)\n";
    let got = lint_script(Path::new("tasks.py"), src, None).unwrap();
    let ids: Vec<Row> = rows(&got);
    assert!(ids.contains(&row("CC209", Error, "3:1")), "{ids:?}");
    // Called at module level before the count, the function runs first.
    let first = "import multiprocessing as mp\nimport torch\n\
                 def run(items):\n\
                 \x20   with mp.get_context('fork').Pool(2) as pool:\n\
                 \x20       return pool.map(abs, items)\n\
                 if __name__ == '__main__':\n\
                 \x20   run([1])\n\
                 \x20   torch.set_num_threads(8)\n";
    let got = lint_script(Path::new("run.py"), first, None).unwrap();
    assert!(got.iter().all(|f| f.rule_id != "CC209"), "{got:#?}");
}

/// Where the script sets OMP_NUM_THREADS itself and an explicit count
/// runs before the fork, neither finding may promise that the variable
/// helps: CC202's fix says that even in time it would not stop the count,
/// and CC209 names the line that set it.
#[test]
fn a_thread_variable_fix_says_an_explicit_count_defeats_it() {
    let src = "import numpy as np\nimport os\nimport multiprocessing as mp\n\
               from threadpoolctl import threadpool_limits\n\
               os.environ[\"OMP_NUM_THREADS\"] = \"1\"\n\
               os.environ[\"MKL_NUM_THREADS\"] = \"1\"\n\
               if __name__ == \"__main__\":\n\
               \x20   mp.set_start_method(\"fork\")\n\
               \x20   with threadpool_limits(limits=4):\n\
               \x20       np.linalg.svd(np.ones((500, 500)))\n\
               \x20   with mp.Pool(2) as pool:\n\
               \x20       pool.map(abs, [1])\n";
    let got = lint_script(Path::new("t.py"), src, None).unwrap();
    let cc202: Vec<&Finding> = got.iter().filter(|f| f.rule_id == "CC202").collect();
    assert_eq!(cc202.len(), 2, "{got:#?}");
    for f in cc202 {
        let fix = f.fix.as_deref().unwrap();
        assert!(
            fix.contains("would not stop the hang")
                && fix.contains("`threadpool_limits(limits=4)` at line 9")
                && fix.contains("does not override a thread count set in code"),
            "{fix}"
        );
    }
    let cc209: Vec<&Finding> = got.iter().filter(|f| f.rule_id == "CC209").collect();
    assert_eq!(cc209.len(), 1, "{got:#?}");
    assert!(
        cc209[0].message.contains(
            "OMP_NUM_THREADS set at line 5 and MKL_NUM_THREADS set at line 6 does not change that"
        ),
        "{}",
        cc209[0].message
    );
    // Without an explicit count CC202's fix is the plain one.
    let plain = lint_script(
        Path::new("t.py"),
        "import numpy\nimport os\nos.environ[\"OMP_NUM_THREADS\"] = \"1\"\n",
        None,
    )
    .unwrap();
    assert!(!plain[0].fix.as_deref().unwrap().contains("would not stop"));
}

/// CC001 reads facts, not code: its fix may offer OMP_NUM_THREADS=1 but
/// must say where that does not help.
#[test]
fn cc001_says_where_omp_num_threads_does_not_help() {
    let facts = snapshot_facts("linux-pypi-fork.facts.json");
    let report = caiclust_rules::evaluate(&facts, &Plan::default(), &Config::default());
    let f = report
        .findings
        .iter()
        .find(|f| f.rule_id == "CC001")
        .expect("CC001");
    let fix = f.fix.as_deref().unwrap();
    assert!(
        fix.contains("OMP_NUM_THREADS=1")
            && fix.contains("not where the code sets a thread count itself"),
        "{fix}"
    );
    let explain = find_rule("CC001").unwrap().info().explanation;
    assert!(explain.contains("CC209"), "{explain}");
}

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
