//! core: the scheduler never waits on a worker. Worker 1 runs a long task
//! while more than 4 MiB of arguments are queued for it (more than its
//! input pipe holds); worker 2's task timeout still fires within 100 ms of
//! its deadline and worker 2's results keep arriving. For Rust and Python
//! workers. When the long task ends, every queued task runs and answers.
//!
//! Unix only: the fixture venvs' Linux Pythons as workers.
#![cfg(unix)]

use std::path::Path;
use std::time::{Duration, Instant};

use caiclust_core::{Cluster, Failure, Outcome, StartMethod, Task, TaskResult};
use caiclust_tests::fixtures;
use serde_json::json;

const FIXTURE: &str = env!("CARGO_BIN_EXE_caiclust-task-fixture");

const MODULE: &str = r#"
import os, time

def echo(x):
    return x

def size(s):
    return len(s)

def nap(secs):
    time.sleep(secs)
    return secs

def wait_for_file(path):
    until = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < until:
        time.sleep(0.005)
    return os.path.exists(path)
"#;

/// The task constructors of one kind of worker.
struct Kind {
    echo: fn(serde_json::Value) -> Task,
    size: fn(String) -> Task,
    sleep_secs: fn(u64) -> Task,
    wait_for_file: fn(&Path) -> Task,
}

const RUST: Kind = Kind {
    echo: |v| Task::rust("echo", v),
    size: |s| Task::rust("len", json!(s)),
    sleep_secs: |secs| Task::rust("sleep_ms", json!(secs * 1000)),
    wait_for_file: |p| Task::rust("wait_for_file", json!(p.to_string_lossy())),
};

const PYTHON: Kind = Kind {
    echo: |v| Task::python("blocking:echo", json!([v])),
    size: |s| Task::python("blocking:size", json!([s])),
    sleep_secs: |secs| Task::python("blocking:nap", json!([secs])),
    wait_for_file: |p| Task::python("blocking:wait_for_file", json!([p.to_string_lossy()])),
};

/// MiB-sized arguments queued behind the long task.
const BIG: usize = 1 << 20;
const BIG_TASKS: usize = 16;

fn never_blocks(cluster: Cluster, kind: &Kind) {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    // Tiny tasks first: the pool learns they are tiny and hands tasks out
    // in batches, two per worker (the second waits in the worker's input).
    let warm = cluster.map((0..2000).map(|i| (kind.echo)(json!(i))));
    assert!(warm.iter().all(|r| r.outcome.is_success()));

    // One worker gets the long task and, behind it, 16 MiB of arguments:
    // a first batch it reads before it starts the long task, a second one
    // that cannot fit in its input pipe until the long task ends.
    let mut tasks = vec![(kind.wait_for_file)(&release)];
    tasks.extend((0..BIG_TASKS).map(|i| (kind.size)("x".repeat(BIG + i))));
    let queued = cluster.submit_many(tasks);

    // The other worker still answers.
    let tiny = cluster.submit((kind.echo)(json!("still here")));
    let r = next_result(&cluster, Duration::from_secs(10)).expect("an answer from worker 2");
    assert_eq!(r.id, tiny, "{:?}", r.outcome);
    assert_eq!(r.value(), Some(&json!("still here")));

    // Its timeout fires on time.
    let timeout = Duration::from_millis(300);
    let submitted = Instant::now();
    let timed = cluster.submit((kind.sleep_secs)(30).timeout(timeout));
    let r = next_result(&cluster, Duration::from_secs(10)).expect("the timeout fired");
    let late = submitted.elapsed().saturating_sub(timeout);
    assert_eq!(r.id, timed);
    assert!(
        matches!(
            r.outcome,
            Outcome::Failed {
                failure: Failure::TimedOut { .. }
            }
        ),
        "{:?}",
        r.outcome
    );
    assert!(
        late <= Duration::from_millis(100),
        "the timeout fired {late:?} after its deadline"
    );

    // And results keep arriving (on the worker that replaced it).
    let more = cluster.submit_many((0..20).map(|i| (kind.echo)(json!(i))));
    for _ in &more {
        let r = next_result(&cluster, Duration::from_secs(10)).expect("results keep arriving");
        assert!(
            more.contains(&r.id),
            "task {} answered before the long task ended",
            r.id
        );
        assert!(r.outcome.is_success(), "{:?}", r.outcome);
    }

    // The long task ends: everything queued behind it runs, once.
    std::fs::write(&release, b"go").unwrap();
    let mut rest: Vec<TaskResult> = (0..queued.len())
        .map(|_| next_result(&cluster, Duration::from_secs(60)).expect("the queued tasks"))
        .collect();
    rest.sort_by_key(|r| r.id);
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), queued);
    assert_eq!(rest[0].value(), Some(&json!(true)), "{:?}", rest[0].outcome);
    for (i, r) in rest[1..].iter().enumerate() {
        assert_eq!(r.value(), Some(&json!(BIG + i)), "{:?}", r.outcome);
        assert_eq!(r.attempts, 1);
    }
    cluster.shutdown();
}

fn next_result(cluster: &Cluster, within: Duration) -> Option<TaskResult> {
    cluster.recv_timeout(within)
}

#[test]
fn rust_workers_never_block_the_scheduler() {
    let cluster = Cluster::builder()
        .workers(2)
        .start_method(StartMethod::Spawn)
        .rust_worker(FIXTURE)
        .build()
        .unwrap();
    never_blocks(cluster, &RUST);
}

fn python_cluster(method: StartMethod, dir: &Path) -> Cluster {
    Cluster::builder()
        .workers(2)
        .start_method(method)
        .python(&fixtures().venv_numpy)
        .env("PYTHONPATH", dir.to_string_lossy())
        .build()
        .unwrap()
}

#[test]
fn python_workers_never_block_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocking.py"), MODULE).unwrap();
    never_blocks(python_cluster(StartMethod::Spawn, dir.path()), &PYTHON);
}

#[cfg(unix)]
#[test]
fn forked_python_workers_never_block_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocking.py"), MODULE).unwrap();
    never_blocks(python_cluster(StartMethod::Forkserver, dir.path()), &PYTHON);
}
