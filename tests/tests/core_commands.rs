//! core: external commands. Exit codes and signals, per-task environment,
//! folder and input, timeouts that stop grandchildren, huge outputs that
//! never sit in memory, retries, halt policies, cancellation, order.
//!
//! Unix only: the tasks are `sh` commands and Unix signals (the Windows command tasks have tests of their own).
#![cfg(unix)]

use std::time::{Duration, Instant};

use caiclust_core::{
    Cluster, ExitInfo, Failure, HaltPolicy, Outcome, Output, StartCause, StartMethod, Task,
    TaskResult,
};
use caiclust_tests::{orphans_after, processes_tagged, unique_tag, wait_for, TAG_VAR};

fn sh(script: &str) -> Task {
    Task::command(["sh", "-c", script])
}

/// How many processes tagged `tag` run the command line `cmd`.
fn sleepers(tag: &str, cmd: &str) -> usize {
    processes_tagged(tag)
        .iter()
        .filter(|(_, c)| c.trim_end() == cmd)
        .count()
}

fn failure(r: &TaskResult) -> &Failure {
    match &r.outcome {
        Outcome::Failed { failure } => failure,
        other => panic!("task {} should have failed: {other:?}", r.id),
    }
}

fn cluster(tag: &str, workers: usize) -> caiclust_core::ClusterBuilder {
    Cluster::builder()
        .workers(workers)
        .start_method(StartMethod::Spawn)
        .env(TAG_VAR, tag)
        .grace(Duration::from_millis(300))
}

#[test]
fn exits_signals_env_cwd_stdin_and_missing_programs() {
    let tag = unique_tag("cmd-basics");
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&tag, 2).env("FROM_CLUSTER", "c").build().unwrap();
    // A file without the execute bit, and an executable one the kernel
    // cannot run (no #! line, not a program: ENOEXEC).
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let odd = dir.path().join("odd");
    std::fs::write(&odd, "not a program\n").unwrap();
    std::fs::set_permissions(&odd, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut results = c.map(vec![
        sh("echo out; echo err >&2"),
        sh("exit 3"),
        sh("kill -SEGV $$"),
        sh("echo $FROM_CLUSTER $PER_TASK").env("PER_TASK", "t"),
        Task::command(["pwd"]).cwd(dir.path()),
        Task::command(["tr", "a-z", "A-Z"]).stdin("hello\n"),
        Task::command(["/no/such/program", "x"]),
        Task::command(["true"]).cwd("/no/such/folder"),
        Task::command([plain.to_str().unwrap()]),
        Task::command([odd.to_str().unwrap()]),
    ]);
    assert!(results[0].outcome.is_success());
    assert_eq!(results[0].stdout.to_string_lossy(), "out\n");
    assert_eq!(results[0].stderr.to_string_lossy(), "err\n");
    assert!(matches!(
        failure(&results[1]),
        Failure::Exit {
            exit: ExitInfo::Code(3)
        }
    ));
    assert_eq!(results[1].exit, Some(ExitInfo::Code(3)));
    assert!(matches!(
        failure(&results[2]),
        Failure::Exit {
            exit: ExitInfo::Signal(11)
        }
    ));
    assert_eq!(results[3].stdout.to_string_lossy(), "c t\n");
    let pwd = results[4].stdout.to_string_lossy();
    assert_eq!(
        std::fs::canonicalize(pwd.trim()).unwrap(),
        std::fs::canonicalize(dir.path()).unwrap()
    );
    assert_eq!(results[5].stdout.to_string_lossy(), "HELLO\n");
    assert!(
        matches!(failure(&results[6]), Failure::Start { message, cause: StartCause::NotFound } if message.contains("/no/such/program")),
        "{:?}",
        results[6].outcome
    );
    assert!(
        matches!(failure(&results[7]), Failure::Start { message, cause: StartCause::Other } if message.contains("/no/such/folder")),
        "{:?}",
        results[7].outcome
    );
    for r in &results[8..10] {
        assert!(
            matches!(
                failure(r),
                Failure::Start {
                    cause: StartCause::NotExecutable,
                    ..
                }
            ),
            "{:?}",
            r.outcome
        );
    }
    assert_eq!(
        results[6].attempts, 1,
        "a program that cannot start is not retried"
    );
    drop(c);
    assert!(orphans_after(&tag, Duration::from_secs(3)).is_empty());
}

#[test]
fn a_timeout_stops_the_whole_tree_and_the_rest_complete() {
    let tag = unique_tag("cmd-timeout");
    let c = cluster(&tag, 2).build().unwrap();
    let t0 = Instant::now();
    let results = c.map(vec![
        sh("sleep 30 & sleep 30 & sh -c 'sleep 30'; wait").timeout(Duration::from_millis(700)),
        // Ignores TERM: needs the KILL after the grace period.
        sh("trap '' TERM; sleep 30").timeout(Duration::from_millis(700)),
        sh("echo fine"),
    ]);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    for r in &results[..2] {
        assert!(
            matches!(failure(r), Failure::TimedOut { after_ms } if *after_ms >= 700),
            "{:?}",
            r.outcome
        );
    }
    assert!(results[2].outcome.is_success());
    // Nothing of the trees survives, even before the cluster is dropped.
    let left = orphans_after(&tag, Duration::from_secs(3));
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn huge_outputs_stay_on_disk() {
    let tag = unique_tag("cmd-huge");
    let before = peak_rss_kib();
    let c = cluster(&tag, 2).build().unwrap();
    let mut results = c.map(vec![
        Task::command(["head", "-c", "300000000", "/dev/zero"]),
        sh("echo small"),
    ]);
    assert!(results[0].outcome.is_success());
    assert!(matches!(
        results[0].stdout,
        Output::File {
            len: 300_000_000,
            ..
        }
    ));
    let mut sink = std::io::sink();
    assert_eq!(results[0].stdout.write_to(&mut sink).unwrap(), 300_000_000);
    assert_eq!(results[1].stdout.to_string_lossy(), "small\n");
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 100_000,
        "peak memory grew by {grown} KiB for 300 MB of output"
    );
}

#[test]
fn retries_run_a_failing_task_again_up_to_the_limit() {
    let tag = unique_tag("cmd-retry");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("m");
    let c = cluster(&tag, 1).attempts(3).build().unwrap();
    let flaky = format!("test -e {0} || {{ touch {0}; exit 1; }}", marker.display());
    let results = c.map(vec![sh(&flaky), sh("exit 4")]);
    assert!(results[0].outcome.is_success());
    assert_eq!(results[0].attempts, 2);
    assert_eq!(results[0].history.len(), 1);
    assert_eq!(results[1].attempts, 3);
    assert_eq!(results[1].history.len(), 2);
}

#[test]
fn halt_now_stops_running_and_queued_tasks() {
    let tag = unique_tag("cmd-halt");
    let c = cluster(&tag, 2)
        .halt("now,fail=1".parse::<HaltPolicy>().unwrap())
        .build()
        .unwrap();
    let t0 = Instant::now();
    let mut tasks = vec![sh("sleep 0.3; exit 1"), sh("sleep 30")];
    tasks.extend((0..20).map(|_| sh("sleep 30")));
    let results = c.map(tasks);
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert_eq!(results.len(), 22, "every task has its one result");
    assert!(matches!(failure(&results[0]), Failure::Exit { .. }));
    for r in &results[1..] {
        assert!(
            matches!(&r.outcome, Outcome::Cancelled { reason } if reason.contains("halted")),
            "{:?}",
            r.outcome
        );
    }
    drop(c);
    assert!(orphans_after(&tag, Duration::from_secs(3)).is_empty());
}

#[test]
fn halt_soon_lets_running_tasks_finish() {
    let tag = unique_tag("cmd-halt-soon");
    let c = cluster(&tag, 2)
        .halt("soon,fail=1".parse::<HaltPolicy>().unwrap())
        .build()
        .unwrap();
    let results = c.map(vec![
        sh("exit 1"),
        sh("sleep 0.5; echo finished"),
        sh("echo never"),
        sh("echo never"),
    ]);
    assert!(matches!(failure(&results[0]), Failure::Exit { .. }));
    let cancelled = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Cancelled { .. }))
        .count();
    assert!(
        cancelled >= 1,
        "queued tasks are not started after the halt"
    );
    assert!(results[1].outcome.is_success(), "{:?}", results[1].outcome);
}

#[test]
fn cancel_and_ordering() {
    let tag = unique_tag("cmd-cancel");
    let c = cluster(&tag, 2).build().unwrap();
    let slow = c.submit(sh("sleep 30"));
    let queued = (0..3).map(|_| c.submit(sh("sleep 30"))).collect::<Vec<_>>();
    let fast: Vec<_> = (0..6)
        .map(|i| c.submit(sh(&format!("sleep 0.0{}; echo {i}", 6 - i))))
        .collect();
    // Until both workers run a `sleep 30` (the slow task and the first
    // queued one).
    assert!(
        wait_for(Duration::from_secs(30), || sleepers(&tag, "sleep 30") >= 2),
        "the first two tasks did not start within 30 s"
    );
    c.cancel(slow);
    for id in &queued {
        c.cancel(*id);
    }
    let mut in_order: Vec<TaskResult> = c.results_in_order().collect();
    let ids: Vec<u64> = in_order.iter().map(|r| r.id).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    assert!(matches!(in_order[0].outcome, Outcome::Cancelled { .. }));
    for r in &in_order[1..4] {
        assert!(
            matches!(r.outcome, Outcome::Cancelled { .. }),
            "{:?}",
            r.outcome
        );
    }
    for (i, r) in in_order[4..].iter_mut().enumerate() {
        assert_eq!(r.stdout.to_string_lossy(), format!("{i}\n"));
    }
    assert_eq!(fast.len(), 6);
    drop(c);
    assert!(orphans_after(&tag, Duration::from_secs(3)).is_empty());
}

#[test]
fn dropping_a_cluster_stops_everything_it_started() {
    let tag = unique_tag("cmd-drop");
    let c = cluster(&tag, 2).build().unwrap();
    for _ in 0..4 {
        c.submit(sh("sleep 30 & sleep 30"));
    }
    // Until both workers' tasks run both of their sleeps.
    assert!(
        wait_for(Duration::from_secs(30), || sleepers(&tag, "sleep 30") >= 4),
        "two tasks did not start their sleeps within 30 s: {:?}",
        caiclust_tests::processes_tagged(&tag)
    );
    let t0 = Instant::now();
    drop(c);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let left = orphans_after(&tag, Duration::from_secs(3));
    assert!(left.is_empty(), "left behind: {left:?}");
}
