//! core: tasks of every kind under injected faults. Each fault is reported
//! with its reason, the other tasks complete, and no process is left
//! behind (every process a test starts carries a tag in its environment).

use std::time::Duration;

use caiclust_core::{
    Cluster, ClusterBuilder, ExitInfo, Failure, Outcome, StartMethod, Task, TaskResult,
};
use caiclust_tests::{orphans_after, unique_tag, TAG_VAR};
use serde_json::json;

const FIXTURE: &str = env!("CARGO_BIN_EXE_caiclust-task-fixture");

fn rust_cluster(tag: &str, method: StartMethod) -> ClusterBuilder {
    Cluster::builder()
        .workers(2)
        .start_method(method)
        .rust_worker(FIXTURE)
        .env(TAG_VAR, tag)
        .grace(Duration::from_millis(500))
}

fn assert_no_orphans(tag: &str) {
    let left = orphans_after(tag, Duration::from_secs(5));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

fn failure(r: &TaskResult) -> &Failure {
    match &r.outcome {
        Outcome::Failed { failure } => failure,
        other => panic!("task {} should have failed: {other:?}", r.id),
    }
}

/// How a worker that dereferenced null ends: SIGSEGV on Unix; on Windows
/// the exception's NTSTATUS as exit code, named in the notices (#16).
#[cfg(unix)]
const SEGFAULT: (ExitInfo, &str) = (ExitInfo::Signal(11), "signal 11 (SIGSEGV)");
#[cfg(windows)]
const SEGFAULT: (ExitInfo, &str) = (
    ExitInfo::Code(0xC000_0005_u32 as i32),
    "exit code 0xC0000005 (STATUS_ACCESS_VIOLATION)",
);

fn rust_faults(method: StartMethod) {
    let tag = unique_tag("rust-faults");
    {
        let cluster = rust_cluster(&tag, method)
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let mut tasks = vec![
            Task::rust("panic", json!("boom")),
            Task::rust("segfault", json!(null)),
            Task::rust("exit", json!(7)),
            Task::rust("fail", json!(1)),
            Task::rust("spawn_sleepers", json!(30)).timeout(Duration::from_millis(800)),
            Task::rust("nonexistent", json!(1)),
        ];
        tasks.extend((0..40).map(|i| Task::rust("square", json!(i))));
        let results = cluster.map(tasks);
        assert_eq!(results.len(), 46);
        assert!(
            matches!(failure(&results[0]), Failure::Error { message } if message.contains("panicked") && message.contains("boom")),
            "{:?}",
            results[0].outcome
        );
        // A task under which the worker dies runs once more on a new
        // worker; killing that one too, it is the culprit.
        for (r, exit) in [(&results[1], SEGFAULT.0), (&results[2], ExitInfo::Code(7))] {
            assert!(
                matches!(failure(r), Failure::WorkerDied { exit: Some(e), .. } if *e == exit),
                "{:?}",
                r.outcome
            );
            assert_eq!(r.attempts, 2);
            assert!(
                matches!(&r.history[..], [Failure::WorkerDied { exit: Some(e), .. }] if *e == exit)
            );
        }
        assert!(
            matches!(failure(&results[3]), Failure::Error { message } if message.contains("on purpose"))
        );
        assert!(
            matches!(failure(&results[4]), Failure::TimedOut { after_ms } if *after_ms >= 800 && *after_ms < 3000),
            "{:?}",
            results[4].outcome
        );
        assert!(
            matches!(failure(&results[5]), Failure::Error { message } if message.contains("nonexistent") && message.contains("square"))
        );
        for (i, r) in results[6..].iter().enumerate() {
            assert_eq!(r.value(), Some(&json!(i * i)), "task {}", r.id);
        }
        let notices = cluster.notices();
        assert!(
            notices.iter().any(|n| n.message.contains(SEGFAULT.1)),
            "{notices:?}"
        );
    }
    // A worker that exits after answering (one worker, so nothing else can
    // take it down first): reported, and the rest complete.
    {
        let cluster = rust_cluster(&tag, method).workers(1).build().unwrap();
        let mut tasks = vec![Task::rust("exit_soon_after", json!(3))];
        tasks.extend((0..20).map(|i| Task::rust("square", json!(i))));
        let results = cluster.map(tasks);
        assert_eq!(
            results[0].value(),
            Some(&json!(3)),
            "answered before exiting"
        );
        for (i, r) in results[1..].iter().enumerate() {
            assert_eq!(r.value(), Some(&json!(i * i)), "{:?}", r.outcome);
        }
        std::thread::sleep(Duration::from_millis(300));
        let notices = cluster.notices();
        assert!(
            notices.iter().any(|n| n.message.contains("exit code 3")),
            "{notices:?}"
        );
    }
    assert_no_orphans(&tag);
}

#[test]
fn rust_task_faults_with_spawn() {
    rust_faults(StartMethod::Spawn);
}

#[test]
#[cfg(unix)]
fn rust_task_faults_with_forkserver() {
    rust_faults(StartMethod::Forkserver);
}

/// A program holding a cluster is killed outright (SIGKILL: no destructor
/// runs): its workers, however started, die with it.
fn killed_parent_leaves_no_workers(method: &str) {
    use std::io::BufRead;
    let tag = unique_tag("killed-parent");
    let mut parent = std::process::Command::new(FIXTURE)
        .args(["parent", method, "2"])
        .env(TAG_VAR, &tag)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "running");
    // Wait for the workers to be up: seen twice in a row, 100 ms apart (a
    // process between fork and exec is counted, and one in the middle of
    // exec may not be).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let up = || caiclust_tests::processes_tagged(&tag).len() >= 3;
    let mut seen_up = false;
    while !seen_up && std::time::Instant::now() < deadline {
        seen_up = up() && {
            std::thread::sleep(Duration::from_millis(100));
            up()
        };
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen_up, "parent and two workers");
    parent.kill().unwrap();
    parent.wait().unwrap();
    let left = orphans_after(&tag, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "left behind by a killed parent ({method}): {left:?}"
    );
}

#[test]
fn a_killed_parent_takes_its_spawned_workers_along() {
    killed_parent_leaves_no_workers("spawn");
}

#[test]
#[cfg(unix)]
fn a_killed_parent_takes_its_forkserver_workers_along() {
    killed_parent_leaves_no_workers("forkserver");
}

#[test]
#[cfg(unix)]
fn a_killed_parent_takes_its_forked_workers_along() {
    killed_parent_leaves_no_workers("fork");
}
