//! What each script rule's finding says, and how facts and the start
//! method set its level: CC202's variable and import, CC205's function
//! and error, CC207's cells, CC208's CPU counts, CC209's thread counts and
//! the fix texts that an explicit count defeats.

use std::path::Path;

use caiclust_probe::Facts;
use caiclust_rules::{
    find_rule, lint_notebook, lint_script, lint_scripts, Config, Finding, Level, Plan,
};

mod lint_support;

use lint_support::*;
use Level::{Error, Warning};

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
