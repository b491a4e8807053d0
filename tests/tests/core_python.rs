//! core: Python callables in long-lived workers of a real interpreter, under
//! every start method, with injected faults: an exception, a segfault, a
//! worker killed with SIGKILL, a worker that exits between tasks, a task
//! whose children outlive its timeout, a task printing to stdout. Each is
//! reported with its reason, the rest complete, nothing is left behind.
//!
//! Unix only: the fixture interpreters are Linux Pythons; faults are Unix signals read through `/proc`.
#![cfg(unix)]

use std::path::Path;
use std::time::Duration;

use caiclust_core::{Cluster, ExitInfo, Failure, Outcome, StartMethod, Task, TaskResult};
use caiclust_tests::{fixtures, orphans_after, unique_tag, TAG_VAR};
use serde_json::json;

const MODULE: &str = r#"
import ctypes, os, subprocess, sys, threading, time

def square(x):
    return x * x

def boom(msg):
    raise ValueError(msg)

def segfault():
    ctypes.string_at(0)

def kill_self():
    os.kill(os.getpid(), 9)

def exit_soon(code):
    threading.Timer(0.05, os._exit, [code]).start()
    return code

def sleepers(secs):
    subprocess.Popen(["sh", "-c", f"sleep {secs} & sleep {secs}"])
    time.sleep(secs)

def noisy(x):
    print("noise on stdout", flush=True)
    os.write(1, b"raw noise on fd 1\n")
    return {"x": x, "pid": os.getpid()}

def env(name):
    return os.environ.get(name)

def kwargs(a, b=2):
    return [a, b]

def unserialisable():
    return object()

def nan():
    return float("nan")

def half_bad(x):
    return [[x], object()]

def nested(x):
    return [[x], {"k": x}]

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no")

def unprintable():
    raise Unprintable()

def surrogate():
    return "\ud800"

def hidden():
    return sys.modules.get("_json", 0) is None

def nap(secs):
    time.sleep(secs)
    return secs

def text(x):
    return f"h\u00e9llo \u2603 \U0001d11e \"{x}\"\n"
"#;

fn module_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("faulty.py"), MODULE).unwrap();
    dir
}

/// One spawned worker of the numpy venv, importing from `dir`.
fn one_worker(dir: &tempfile::TempDir) -> Cluster {
    Cluster::builder()
        .workers(1)
        .start_method(StartMethod::Spawn)
        .python(&fixtures().venv_numpy)
        .env("PYTHONPATH", dir.path().to_string_lossy())
        .build()
        .unwrap()
}

fn failure(r: &TaskResult) -> &Failure {
    match &r.outcome {
        Outcome::Failed { failure } => failure,
        other => panic!("task {} should have failed: {other:?}", r.id),
    }
}

fn python_faults(method: StartMethod) {
    let fx = fixtures();
    let dir = module_dir();
    let tag = unique_tag("py-faults");
    {
        let cluster = Cluster::builder()
            .workers(2)
            .start_method(method)
            .python(&fx.venv_numpy)
            .env("PYTHONPATH", dir.path().to_string_lossy())
            .env(TAG_VAR, &tag)
            .env("CAICLUST_MARK", "seen")
            .grace(Duration::from_millis(500))
            .build()
            .unwrap();
        let f = |name: &str| format!("faulty:{name}");
        let mut tasks = vec![
            Task::python(f("boom"), json!(["bad value"])),
            Task::python(f("segfault"), json!(null)),
            Task::python(f("kill_self"), json!(null)),
            Task::python(f("sleepers"), json!([30])).timeout(Duration::from_millis(1500)),
            Task::python(f("noisy"), json!([1])),
            Task::python(f("env"), json!(["CAICLUST_MARK"])),
            Task::python(f("kwargs"), json!({"a": 1, "b": 5})),
            Task::python(f("unserialisable"), json!(null)),
            Task::python("faulty:nothing_here", json!(null)),
            Task::python("no_such_module:f", json!(null)),
        ];
        tasks.extend((0..50).map(|i| Task::python(f("square"), json!([i]))));
        let results = cluster.map(tasks);
        assert_eq!(results.len(), 60);
        match failure(&results[0]) {
            Failure::Exception {
                type_name,
                message,
                traceback,
            } => {
                assert_eq!(type_name, "ValueError");
                assert_eq!(message, "bad value");
                assert!(traceback.contains("in boom"), "{traceback}");
                assert!(
                    !traceback.contains("<string>"),
                    "the worker's own frames are left out: {traceback}"
                );
            }
            other => panic!("{other:?}"),
        }
        for (r, exit) in [
            (&results[1], ExitInfo::Signal(11)),
            (&results[2], ExitInfo::Signal(9)),
        ] {
            assert!(
                matches!(failure(r), Failure::WorkerDied { exit: Some(e), .. } if *e == exit),
                "task {}: {:?}",
                r.id,
                r.outcome
            );
            assert_eq!(r.attempts, 2, "retried once on a new worker");
        }
        assert!(
            matches!(failure(&results[3]), Failure::TimedOut { after_ms } if (1500..5000).contains(after_ms)),
            "{:?}",
            results[3].outcome
        );
        assert_eq!(
            results[4].value().unwrap()["x"],
            json!(1),
            "prints do not corrupt the protocol"
        );
        assert_eq!(
            results[5].value(),
            Some(&json!("seen")),
            "the worker has the cluster's environment"
        );
        assert_eq!(
            results[6].value(),
            Some(&json!([1, 5])),
            "an object is passed as keyword arguments"
        );
        assert!(
            matches!(failure(&results[7]), Failure::Exception { message, .. } if message.contains("JSON"))
        );
        assert!(
            matches!(failure(&results[8]), Failure::Exception { type_name, .. } if type_name == "AttributeError")
        );
        assert!(
            matches!(failure(&results[9]), Failure::Exception { type_name, .. } if type_name == "ModuleNotFoundError")
        );
        for (i, r) in results[10..].iter().enumerate() {
            assert_eq!(r.value(), Some(&json!(i * i)));
        }
    }
    // A worker that exits after answering (one worker, so nothing else
    // can take it down first): reported, and the rest complete.
    {
        let cluster = Cluster::builder()
            .workers(1)
            .start_method(method)
            .python(&fx.venv_numpy)
            .env("PYTHONPATH", dir.path().to_string_lossy())
            .env(TAG_VAR, &tag)
            .build()
            .unwrap();
        let mut tasks = vec![Task::python("faulty:exit_soon", json!([5]))];
        tasks.extend((0..20).map(|i| Task::python("faulty:square", json!([i]))));
        let results = cluster.map(tasks);
        assert_eq!(results[0].value(), Some(&json!(5)));
        for (i, r) in results[1..].iter().enumerate() {
            assert_eq!(r.value(), Some(&json!(i * i)), "{:?}", r.outcome);
        }
        std::thread::sleep(Duration::from_millis(300));
        let notices = cluster.notices();
        assert!(
            notices.iter().any(|n| n.message.contains("exit code 5")),
            "{notices:?}"
        );
    }
    let left = orphans_after(&tag, Duration::from_secs(5));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn python_faults_with_spawn() {
    python_faults(StartMethod::Spawn);
}

#[test]
fn python_faults_with_forkserver() {
    python_faults(StartMethod::Forkserver);
}

#[test]
fn python_faults_with_fork() {
    python_faults(StartMethod::Fork);
}

#[test]
fn an_interpreter_that_does_not_exist_fails_every_task_with_the_reason() {
    let cluster = Cluster::builder()
        .workers(2)
        .start_method(StartMethod::Spawn)
        .python(Path::new("/nonexistent/python3"))
        .build()
        .unwrap();
    let results = cluster.map((0..5).map(|i| Task::python("m:f", json!([i]))));
    assert_eq!(results.len(), 5);
    for r in &results {
        assert!(
            matches!(failure(r), Failure::Start { message, .. } if message.contains("/nonexistent/python3")),
            "{:?}",
            r.outcome
        );
    }
}

#[test]
fn workers_are_recycled_after_n_tasks() {
    let fx = fixtures();
    let dir = module_dir();
    let cluster = Cluster::builder()
        .workers(1)
        .start_method(StartMethod::Forkserver)
        .python(&fx.venv_numpy)
        .env("PYTHONPATH", dir.path().to_string_lossy())
        .recycle_after(3)
        .build()
        .unwrap();
    let results = cluster.map((0..9).map(|i| Task::python("faulty:noisy", json!([i]))));
    let pids: Vec<u64> = results
        .iter()
        .map(|r| r.value().unwrap()["pid"].as_u64().unwrap())
        .collect();
    for chunk in pids.chunks(3) {
        assert!(chunk.iter().all(|p| *p == chunk[0]), "{pids:?}");
    }
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "three workers of three tasks each: {pids:?}"
    );
}

/// Batches of tiny calls to different functions, in one worker (so they
/// travel many to a message, by column), with results JSON cannot carry
/// among them: each bad one fails alone with its reason, and every other
/// result is exact, in order.
#[test]
fn mixed_batches_and_results_json_cannot_carry() {
    let dir = module_dir();
    let cluster = one_worker(&dir);
    let special = |i: usize| match i {
        100 => Some("nan"),
        200 => Some("half_bad"),
        300 => Some("unprintable"),
        400 => Some("surrogate"),
        _ => None,
    };
    let tasks = (0..3000).map(|i| match special(i) {
        Some("half_bad") => Task::python("faulty:half_bad", json!([i])),
        Some(name) => Task::python(format!("faulty:{name}"), json!(null)),
        None if i % 2 == 0 => Task::python("faulty:nested", json!([i])),
        None => Task::python("faulty:text", json!([i])),
    });
    let results = cluster.map(tasks);
    assert_eq!(results.len(), 3000);
    for (i, r) in results.iter().enumerate() {
        match special(i) {
            Some("nan") | Some("half_bad") => assert!(
                matches!(failure(r), Failure::Exception { message, .. } if message.contains("JSON")),
                "task {i}: {:?}",
                r.outcome
            ),
            Some("unprintable") => assert!(
                matches!(failure(r), Failure::Exception { type_name, message, .. }
                    if type_name == "Unprintable" && message.contains("cannot be shown")),
                "task {i}: {:?}",
                r.outcome
            ),
            Some(_) => assert!(
                matches!(failure(r), Failure::Exception { type_name, .. } if type_name == "ProtocolError"),
                "task {i}: {:?}",
                r.outcome
            ),
            None if i % 2 == 0 => {
                assert_eq!(r.value(), Some(&json!([[i], {"k": i}])), "task {i}")
            }
            None => assert_eq!(
                r.value(),
                Some(&json!(format!("h\u{e9}llo \u{2603} \u{1d11e} \"{i}\"\n"))),
                "task {i}"
            ),
        }
    }
    // One worker served them all: no bad result took it down.
    assert!(
        cluster
            .notices()
            .iter()
            .all(|n| !n.message.contains("died")),
        "{:?}",
        cluster.notices()
    );
}

/// As for Rust tasks: tiny calls answered while a long call behind them in
/// the same batch runs (the worker's flusher thread writes them), and the
/// long call's runtime is its own.
#[test]
fn answers_before_a_long_call_are_not_held_back() {
    let dir = module_dir();
    let c = one_worker(&dir);
    let warm = c.map((0..2000).map(|i| Task::python("faulty:square", json!([i]))));
    assert!(warm.iter().all(|r| r.outcome.is_success()));
    caiclust_tests::batches::answers_not_held_back(
        &c,
        (0..200)
            .map(|i| Task::python("faulty:square", json!([i])))
            .collect(),
        Task::python("faulty:nap", json!([3])),
    );
}

/// Where the C accelerator `_json` is missing (other Python builds), the
/// worker falls back to the json module, with the same results and the
/// same refusals. `sitecustomize` hides `_json` before the worker starts.
#[test]
fn workers_without_the_json_accelerator_give_the_same_results() {
    let dir = module_dir();
    std::fs::write(
        dir.path().join("sitecustomize.py"),
        "import sys\nsys.modules['_json'] = None\n",
    )
    .unwrap();
    let c = one_worker(&dir);
    let results = c.map([
        Task::python("faulty:nested", json!([7])),
        Task::python("faulty:text", json!([1])),
        Task::python("faulty:kwargs", json!({"a": 1})),
        Task::python("faulty:nan", json!(null)),
        Task::python("faulty:half_bad", json!([1])),
        Task::python("faulty:nested", json!([8])),
        Task::python("faulty:hidden", json!(null)),
    ]);
    assert_eq!(results[0].value(), Some(&json!([[7], {"k": 7}])));
    assert_eq!(
        results[1].value(),
        Some(&json!("h\u{e9}llo \u{2603} \u{1d11e} \"1\"\n"))
    );
    assert_eq!(results[2].value(), Some(&json!([1, 2])));
    for r in &results[3..5] {
        assert!(
            matches!(failure(r), Failure::Exception { message, .. } if message.contains("JSON")),
            "{:?}",
            r.outcome
        );
    }
    assert_eq!(results[5].value(), Some(&json!([[8], {"k": 8}])));
    assert_eq!(
        results[6].value(),
        Some(&json!(true)),
        "the worker really ran without _json"
    );
}

/// Workers forked by a Python fork server die with it (PR_SET_PDEATHSIG,
/// set in each worker through the server's prctl): a server killed
/// outright leaves no worker running on.
#[test]
fn forkserver_workers_die_with_their_server() {
    let dir = module_dir();
    let tag = unique_tag("py-server-kill");
    let c = Cluster::builder()
        .workers(2)
        .start_method(StartMethod::Forkserver)
        .python(&fixtures().venv_numpy)
        .env("PYTHONPATH", dir.path().to_string_lossy())
        .env(TAG_VAR, &tag)
        .build()
        .unwrap();
    c.submit_many((0..2).map(|_| Task::python("faulty:nap", json!([30]))));
    let ppid = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    // The server, and the two workers it forked.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (server, workers) = loop {
        let tagged: Vec<u32> = caiclust_tests::processes_tagged(&tag)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        let found = tagged.iter().find_map(|&s| {
            let kids: Vec<u32> = tagged
                .iter()
                .copied()
                .filter(|&k| ppid(k) == Some(s))
                .collect();
            (kids.len() == 2).then_some((s, kids))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no server with two workers"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the workers begin their tasks, then kill the server outright.
    std::thread::sleep(Duration::from_millis(500));
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !matches!(
                    s.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next()),
                    Some("Z" | "X")
                )
            })
            .unwrap_or(false)
    };
    assert!(workers.iter().all(|&w| alive(w)));
    // SAFETY: kill(2) on a pid this test found as its cluster's server.
    assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while workers.iter().any(|&w| alive(w)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        workers.iter().all(|&w| !alive(w)),
        "workers outlived their server: {workers:?}"
    );
    drop(c);
    let left = orphans_after(&tag, Duration::from_secs(5));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
