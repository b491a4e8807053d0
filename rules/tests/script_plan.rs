//! The static process plan of real script and notebook files
//! ([`read_script_plan`]): every pool constructor through its aliases,
//! worker counts from literals, constants and expressions, start methods,
//! the `__main__` guard, notebooks, files that cannot be read; and the
//! library defaults checked against CPython's own `Pool()` and
//! `ProcessPoolExecutor()`.

use std::path::{Path, PathBuf};

use caiclust_rules::{
    read_script_plan, script_plan, ScriptError, ScriptPlan, ScriptPool, ScriptPoolKind, WorkerCount,
};

use ScriptPoolKind::{CaimanSetupCluster, Pool, Process, ProcessPoolExecutor};
use WorkerCount::{Given, LibraryDefault, Unknown};

/// Write `text` to `name` in a fresh directory and read its plan.
fn plan_of(name: &str, text: &str) -> (tempfile::TempDir, PathBuf, ScriptPlan) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    let plan = read_script_plan(&path).unwrap_or_else(|e| panic!("{e}"));
    (dir, path, plan)
}

/// A pool as (kind, workers, start method, place after the path).
type Row = (ScriptPoolKind, WorkerCount, Option<String>, String);

fn rows(path: &Path, pools: &[ScriptPool]) -> Vec<Row> {
    let prefix = format!("{}:", path.display());
    pools
        .iter()
        .map(|p| {
            let place = p
                .location
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{} is not in {prefix}", p.location));
            (p.kind, p.workers, p.start_method.clone(), place.to_string())
        })
        .collect()
}

fn row(kind: ScriptPoolKind, workers: WorkerCount, method: Option<&str>, place: &str) -> Row {
    (kind, workers, method.map(str::to_string), place.to_string())
}

#[test]
fn every_constructor_through_its_aliases() {
    let (_dir, path, plan) = plan_of(
        "run.py",
        r#"import multiprocessing as mp
from multiprocessing import Pool, get_context
import concurrent.futures as cf
from concurrent.futures import ProcessPoolExecutor as Executor


def square(x):
    return x * x


def main():
    with mp.get_context("fork").Pool(processes=2) as p:
        p.map(square, range(4))
    with Pool(3) as p:
        p.map(square, range(4))
    ctx = get_context("spawn")
    with ctx.Pool() as p:
        p.map(square, range(4))
    with cf.ProcessPoolExecutor(max_workers=5, mp_context=mp.get_context("forkserver")) as ex:
        ex.map(square, range(4))
    with Executor(4, ctx) as ex:
        ex.map(square, range(4))
    worker = mp.Process(target=square, args=(3,))
    worker.start()
    worker.join()


if __name__ == "__main__":
    main()
"#,
    );
    assert_eq!(
        rows(&path, &plan.pools),
        vec![
            row(Pool, Given(2), Some("fork"), "12:10"),
            row(Pool, Given(3), None, "14:10"),
            row(Pool, LibraryDefault, Some("spawn"), "17:10"),
            row(ProcessPoolExecutor, Given(5), Some("forkserver"), "19:10"),
            row(ProcessPoolExecutor, Given(4), Some("spawn"), "21:10"),
            row(Process, Given(1), None, "23:14"),
        ]
    );
    assert_eq!(
        plan.pools[0].call,
        r#"mp.get_context("fork").Pool(processes=2)"#
    );
    assert_eq!(plan.pools[0].kind.to_string(), "multiprocessing.Pool");
    assert_eq!(plan.start_method_set, None);
    assert_eq!(plan.forced_start_method(), Some("fork"));
    assert!(!plan.unguarded);
    assert!(plan.may_use_pools);
    // The largest: ProcessPoolExecutor(max_workers=5) beats Pool() on 4 CPUs.
    let (n, why) = plan.workers(4, Some(4), Some((3, 12))).unwrap();
    assert_eq!(n, 5);
    assert_eq!(
        why,
        format!(
            "`cf.ProcessPoolExecutor(max_workers=5, mp_context=mp.get_context(\"forkserver\"))` at {}:19:10",
            path.display()
        )
    );
    // ...and Pool() wins on 16.
    let (n, why) = plan.workers(16, Some(16), Some((3, 12))).unwrap();
    assert_eq!(n, 16);
    assert!(
        why.ends_with("17:10 defaults to os.cpu_count() = 16"),
        "{why}"
    );
}

#[test]
fn setup_cluster_positional_and_keyword() {
    let (_dir, path, plan) = plan_of(
        "caiman_run.py",
        r#"import caiman as cm
from caiman.cluster import setup_cluster

if __name__ == "__main__":
    c, dview, n_processes = cm.cluster.setup_cluster(backend="multiprocessing", n_processes=6)
    cm.stop_server(dview=dview)
    c, dview, n_processes = setup_cluster("local", 3)
    cm.stop_server(dview=dview)
    c, dview, n_processes = setup_cluster()
    cm.stop_server(dview=dview)
    c, dview, n_processes = setup_cluster(backend="single")
    c, dview, n_processes = cm.cluster.setup_cluster(backend="ipyparallel", n_processes=8)
"#,
    );
    assert_eq!(
        rows(&path, &plan.pools),
        vec![
            row(CaimanSetupCluster, Given(6), None, "5:29"),
            row(CaimanSetupCluster, Given(3), None, "7:29"),
            row(CaimanSetupCluster, LibraryDefault, None, "9:29"),
            row(CaimanSetupCluster, Given(1), None, "11:29"),
        ]
    );
    assert!(!plan.unguarded);
    let (n, _) = plan.workers(8, None, None).unwrap();
    assert_eq!(n, 7, "max(psutil.cpu_count() - 1, 1) beats 6 on 8 CPUs");
    let (n, why) = plan.workers(4, None, None).unwrap();
    assert_eq!(n, 6);
    assert!(why.contains("n_processes=6"), "{why}");

    // Only the default, on its own.
    let (_dir, _path, plan) = plan_of(
        "default.py",
        "import caiman as cm\nif __name__ == '__main__':\n    cm.cluster.setup_cluster()\n",
    );
    let (n, why) = plan.workers(12, Some(2), Some((3, 13))).unwrap();
    assert_eq!(n, 11);
    assert!(
        why.ends_with("defaults to max(psutil.cpu_count() - 1, 1) = 11"),
        "{why}"
    );
}

#[test]
fn counts_from_constants_and_unknown_expressions() {
    let (_dir, path, plan) = plan_of(
        "consts.py",
        r#"import multiprocessing as mp
import os
import sys

N_WORKERS = 4
RESIZED = 2
RESIZED = 3


def run(n):
    local = 6
    with mp.Pool(N_WORKERS) as p:
        pass
    with mp.Pool(local) as p:
        pass
    with mp.Pool(n) as p:
        pass
    with mp.Pool(os.cpu_count() - 1) as p:
        pass
    with mp.Pool(int(sys.argv[1])) as p:
        pass
    with mp.Pool(RESIZED) as p:
        pass
    with mp.Pool(processes=None) as p:
        pass


if __name__ == "__main__":
    run(2)
"#,
    );
    let workers: Vec<WorkerCount> = plan.pools.iter().map(|p| p.workers).collect();
    assert_eq!(
        workers,
        [
            Given(4),
            Given(6),
            Unknown,
            Unknown,
            Unknown,
            Unknown,
            LibraryDefault
        ]
    );
    let (n, why) = plan.workers(2, Some(2), Some((3, 11))).unwrap();
    assert_eq!(n, 6);
    assert_eq!(
        why,
        format!(
            "`mp.Pool(local)` at {p}:14:10 (not counted: `mp.Pool(n)` at {p}:16:10 and 3 more, whose worker count could not be read)",
            p = path.display()
        )
    );

    // Nothing readable: the library default, saying so.
    let (_dir, path, plan) = plan_of(
        "unknown.py",
        "import multiprocessing as mp\nimport os\nif __name__ == '__main__':\n    mp.Pool(os.cpu_count() - 1)\n",
    );
    let (n, why) = plan.workers(8, Some(3), Some((3, 13))).unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        why,
        format!(
            "the worker count of `mp.Pool(os.cpu_count() - 1)` at {}:4:5 could not be read; assuming the library default, os.process_cpu_count() = 3",
            path.display()
        )
    );
}

#[test]
fn set_start_method_through_aliases() {
    for (text, method) in [
        (
            "import multiprocessing as mp\nif __name__ == '__main__':\n    mp.set_start_method('spawn')\n    mp.Pool(2)\n",
            "spawn",
        ),
        (
            "from multiprocessing import set_start_method, Pool\nif __name__ == '__main__':\n    set_start_method(method='forkserver')\n    Pool(2)\n",
            "forkserver",
        ),
        (
            "import multiprocessing\nmultiprocessing.set_start_method('fork', force=True)\n",
            "fork",
        ),
    ] {
        let (_dir, _path, plan) = plan_of("sm.py", text);
        assert_eq!(plan.start_method_set.as_deref(), Some(method), "{text}");
        assert_eq!(plan.forced_start_method(), Some(method), "{text}");
    }
    // A method computed at run time is not read.
    let (_dir, _path, plan) = plan_of(
        "computed.py",
        "import multiprocessing as mp, sys\nmp.set_start_method(sys.argv[1])\n",
    );
    assert_eq!(plan.start_method_set, None);
    assert_eq!(plan.forced_start_method(), None);
    // A pool's own fork outranks the program's spawn.
    let (_dir, _path, plan) = plan_of(
        "both.py",
        "import multiprocessing as mp\nif __name__ == '__main__':\n    mp.set_start_method('spawn')\n    mp.get_context('fork').Pool(2)\n",
    );
    assert_eq!(plan.start_method_set.as_deref(), Some("spawn"));
    assert_eq!(plan.forced_start_method(), Some("fork"));
}

#[test]
fn guarded_and_unguarded_scripts() {
    let unguarded = [
        "import multiprocessing as mp\nwith mp.Pool(2) as p:\n    pass\n",
        "import multiprocessing as mp\ndef main():\n    mp.Pool(2)\nmain()\n",
        "import multiprocessing as mp\ndef start():\n    mp.Process(target=print).start()\ndef main():\n    start()\nmain()\n",
        "from concurrent.futures import ProcessPoolExecutor\nex = ProcessPoolExecutor()\n",
        "import caiman as cm\nc, dview, n = cm.cluster.setup_cluster()\n",
        "import multiprocessing as mp\nm = mp.Manager()\n",
    ];
    for text in unguarded {
        let (_dir, _path, plan) = plan_of("u.py", text);
        assert!(plan.unguarded, "{text}");
        assert!(plan.may_use_pools, "{text}");
    }
    let guarded = [
        "import multiprocessing as mp\nif __name__ == '__main__':\n    with mp.Pool(2) as p:\n        pass\n",
        "import multiprocessing as mp\ndef main():\n    mp.Pool(2)\nif __name__ == '__main__':\n    main()\n",
        "import multiprocessing as mp\ndef main():\n    mp.Pool(2)\n",
        "import multiprocessing as mp\nif __name__ != '__main__':\n    pass\nelse:\n    mp.Pool(2)\n",
        // ipyparallel engines never import the script.
        "import caiman as cm\nc, dview, n = cm.cluster.setup_cluster(backend='ipyparallel')\n",
    ];
    for text in guarded {
        let (_dir, _path, plan) = plan_of("g.py", text);
        assert!(!plan.unguarded, "{text}");
    }
}

#[test]
fn imports_alone_say_pools_may_be_used() {
    let (_dir, _path, plan) = plan_of(
        "lib.py",
        "from joblib import Parallel, delayed\nParallel(n_jobs=-1)(delayed(abs)(i) for i in range(4))\n",
    );
    assert!(plan.pools.is_empty());
    assert!(plan.may_use_pools);
    assert_eq!(plan.workers(8, None, None), None);
    let (_dir, _path, plan) = plan_of("plain.py", "import numpy as np\nprint(np.ones(3))\n");
    assert_eq!(
        plan,
        ScriptPlan {
            usage: plan.usage.clone(),
            ..ScriptPlan::default()
        }
    );
    // What it imports is known; it forks nothing.
    assert!(plan.usage.imports.contains("numpy"));
    assert!(plan.usage.before_fork.is_empty() && plan.usage.in_workers.is_empty());
}

#[test]
fn notebooks_are_read_by_cell() {
    let nb = r##"{"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"language": "python", "name": "python3"}}, "cells": [
        {"cell_type": "markdown", "source": ["# Motion correction\n"]},
        {"cell_type": "code", "source": ["%matplotlib inline\n", "import multiprocessing as mp\n", "import caiman as cm\n", "N = 3\n"]},
        {"cell_type": "code", "source": ["c, dview, n = cm.cluster.setup_cluster(backend='multiprocessing', n_processes=N)\n"]},
        {"cell_type": "code", "source": ["!nproc\n", "with mp.get_context('spawn').Pool(2) as p:\n", "    pass\n"]}
    ]}"##;
    let (_dir, path, plan) = plan_of("analysis.ipynb", nb);
    assert_eq!(
        rows(&path, &plan.pools),
        vec![
            row(CaimanSetupCluster, Given(3), None, "cell 3:1:15"),
            row(Pool, Given(2), Some("spawn"), "cell 4:2:6"),
        ]
    );
    // A kernel's `__main__` is not re-imported by workers.
    assert!(!plan.unguarded);
    assert!(plan.may_use_pools);
    assert_eq!(plan.workers(8, None, None).map(|w| w.0), Some(3));
    // The same from text.
    assert_eq!(script_plan(&path, nb).unwrap(), plan);
}

#[test]
fn declared_encodings_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin.py");
    let mut bytes = b"# -*- coding: latin-1 -*-\nimport multiprocessing as mp\n# caf\xe9\nif __name__ == '__main__':\n    mp.Pool(2)\n".to_vec();
    bytes.extend_from_slice(b"\n");
    std::fs::write(&path, bytes).unwrap();
    let plan = read_script_plan(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.pools.len(), 1);
    assert_eq!(plan.pools[0].workers, Given(2));
}

#[test]
fn unreadable_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.py");
    std::fs::write(
        &broken,
        "import multiprocessing as mp\ndef main(:\n    mp.Pool(2)\n",
    )
    .unwrap();
    let e = read_script_plan(&broken).unwrap_err();
    assert!(
        matches!(
            e,
            ScriptError::Syntax {
                cell: None,
                line: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.path(), broken);
    assert!(
        e.to_string()
            .starts_with(&format!("{}:2:", broken.display())),
        "{e}"
    );
    assert!(e.to_string().contains("syntax error"), "{e}");

    let missing = dir.path().join("missing.py");
    let e = read_script_plan(&missing).unwrap_err();
    assert!(matches!(e, ScriptError::Read { .. }), "{e:?}");
    assert_eq!(e.path(), missing);
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read the script", missing.display())),
        "{e}"
    );

    let nb = dir.path().join("broken.ipynb");
    std::fs::write(&nb, r#"{"nbformat": 4, "cells": [}"#).unwrap();
    let e = read_script_plan(&nb).unwrap_err();
    assert!(matches!(e, ScriptError::Notebook { .. }), "{e:?}");
    assert_eq!(e.path(), nb);
}

/// CPython's own answer: `Pool()._processes` and
/// `ProcessPoolExecutor()._max_workers`, with the CPU counts and version
/// that decide them; then again with the affinity mask cut to one CPU,
/// where Python 3.13 and later count fewer workers than earlier versions.
#[cfg(target_os = "linux")]
const MEASURE: &str = r#"
import json, os, sys
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

def measure():
    ctx = mp.get_context("fork")
    pool = ctx.Pool()
    processes = pool._processes
    pool.terminate()
    pool.join()
    executor = ProcessPoolExecutor(mp_context=ctx)
    workers = executor._max_workers
    executor.shutdown()
    return {"cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "pool": processes, "executor": workers}

runs = [measure()]
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
runs.append(measure())
print(json.dumps({"version": list(sys.version_info[:2]), "runs": runs}))
"#;

/// `python3` on PATH, and every pyenv CPython 3.8+ there is (3.13 and later
/// count the affinity mask).
#[cfg(target_os = "linux")]
fn interpreters() -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("python3")];
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    if let Some(Ok(entries)) = pyenv.map(|r| std::fs::read_dir(r.join("versions"))) {
        let mut extra: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let mut parts = name.split('.');
                parts.next() == Some("3")
                    && parts
                        .next()
                        .and_then(|m| m.parse::<u32>().ok())
                        .is_some_and(|m| m >= 8)
            })
            .map(|e| e.path().join("bin/python3"))
            .filter(|p| p.exists())
            .collect();
        extra.sort();
        found.extend(extra);
    }
    found
}

#[cfg(target_os = "linux")]
#[test]
fn library_defaults_agree_with_cpython() {
    let pool = script_plan(
        Path::new("pool.py"),
        "import multiprocessing as mp\nif __name__ == '__main__':\n    mp.Pool()\n",
    )
    .unwrap();
    let executor = script_plan(
        Path::new("executor.py"),
        "from concurrent.futures import ProcessPoolExecutor\nif __name__ == '__main__':\n    ProcessPoolExecutor()\n",
    )
    .unwrap();
    let mut checked = Vec::new();
    for python in interpreters() {
        let out = std::process::Command::new(&python)
            .args(["-I", "-B", "-c", MEASURE])
            .env_remove("PYTHON_CPU_COUNT")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        assert!(
            out.status.success(),
            "{}: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the measuring script prints JSON");
        let version = (
            answer["version"][0].as_u64().unwrap() as u32,
            answer["version"][1].as_u64().unwrap() as u32,
        );
        for run in answer["runs"].as_array().unwrap() {
            let count = |k: &str| run[k].as_u64().unwrap() as usize;
            let (logical, affinity) = (count("cpu_count"), count("affinity"));
            let said = |plan: &ScriptPlan| {
                plan.workers(logical, Some(affinity), Some(version))
                    .unwrap()
                    .0
            };
            assert_eq!(
                said(&pool),
                count("pool"),
                "{} {version:?}: Pool() with {logical} CPUs, {affinity} in the mask",
                python.display()
            );
            assert_eq!(
                said(&executor),
                count("executor"),
                "{} {version:?}: ProcessPoolExecutor() with {logical} CPUs, {affinity} in the mask",
                python.display()
            );
        }
        checked.push(version);
    }
    eprintln!("defaults checked against CPython {checked:?}");
}
