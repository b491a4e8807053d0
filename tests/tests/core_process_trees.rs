//! core: whole process trees, on every platform (on Windows through Job
//! Objects, issue #16): a timeout ends a command's grandchildren too, and
//! what a command leaves running ends with it;
//! killing a program outright ends its workers at once, also when the
//! program itself runs in a job (jobs nest); a Rust task that
//! prints never breaks the worker protocol. The programs involved are
//! `caiclust-tree-helper`, so no shell is needed.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caiclust_core::{job, tree};
use caiclust_core::{Cluster, Failure, Outcome, StartMethod, Task};

const HELPER: &str = env!("CARGO_BIN_EXE_caiclust-tree-helper");

/// Poll `done` every 10 ms until it holds or `within` passes.
fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids written to files named after them in `dir`.
fn pids_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[test]
fn a_timeout_ends_the_command_and_its_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild");
    let cluster = Cluster::builder()
        .workers(1)
        .start_method(StartMethod::Spawn)
        .grace(Duration::from_millis(300))
        .build()
        .unwrap();
    let task = Task::command([HELPER, "tree", pidfile.to_str().unwrap(), "60"])
        .timeout(Duration::from_secs(3));
    let t0 = Instant::now();
    cluster.submit(task);
    // While it runs, the grandchild is found among this process's
    // descendants (on Windows from a snapshot, with its parent's pid).
    assert!(
        wait_until(Duration::from_secs(30), || pidfile.exists()),
        "the command did not start its grandchild"
    );
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .expect("the command wrote its grandchild's pid")
        .parse()
        .unwrap();
    let found = tree::descendants(std::process::id());
    assert!(found.contains(&grandchild), "{grandchild} not in {found:?}");
    let r = cluster.recv().expect("the task's result");
    assert!(
        matches!(
            &r.outcome,
            Outcome::Failed {
                failure: Failure::TimedOut { .. }
            }
        ),
        "{:?}",
        r.outcome
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let child = r.pid.expect("the command's pid");
    assert!(
        wait_until(Duration::from_secs(2), || !tree::alive(grandchild)
            && !tree::alive(child)),
        "left running: the command {child} ({}), its grandchild {grandchild} ({})",
        tree::alive(child),
        tree::alive(grandchild)
    );
}

#[test]
fn what_a_command_leaves_running_ends_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild");
    let cluster = Cluster::builder()
        .workers(1)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    let results = cluster.map([Task::command([HELPER, "orphan", pidfile.to_str().unwrap()])]);
    assert!(
        matches!(results[0].outcome, Outcome::Succeeded { .. }),
        "{:?}",
        results[0].outcome
    );
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .expect("the command wrote its grandchild's pid")
        .parse()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || !tree::alive(grandchild)),
        "the grandchild {grandchild} outlived its command"
    );
}

/// Start a program holding two spawn workers (in a job of its own when
/// `in_job`, as under a CI runner or another caiclust), kill it outright,
/// and check its workers end within a second.
fn workers_end_with_their_killed_parent(in_job: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(HELPER);
    cmd.args(["parent", dir.path().to_str().unwrap(), "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if in_job {
        job::prepare(&mut cmd);
    }
    let mut parent = cmd.spawn().unwrap();
    if in_job {
        job::adopt(&parent).unwrap();
    }
    let started = wait_until(Duration::from_secs(60), || pids_in(dir.path()).len() >= 2);
    let workers = pids_in(dir.path());
    if !started {
        let _ = parent.kill();
        let _ = parent.wait();
        job::release(parent.id());
        panic!("the workers did not start: {workers:?}");
    }
    assert!(workers.iter().all(|&p| tree::alive(p)), "{workers:?}");
    // TerminateProcess on Windows, SIGKILL elsewhere: no chance to clean
    // up. The outer job, if any, lives on: only the workers' own jobs,
    // nested in it, can end them.
    parent.kill().unwrap();
    parent.wait().unwrap();
    let killed = Instant::now();
    let gone = wait_until(Duration::from_secs(1), || {
        workers.iter().all(|&p| !tree::alive(p))
    });
    let left: Vec<u32> = workers
        .iter()
        .copied()
        .filter(|&p| tree::alive(p))
        .collect();
    job::release(parent.id());
    for &p in &left {
        tree::signal_tree(p, tree::StopSignal::Kill);
    }
    assert!(
        gone,
        "workers still running {:?} after the parent was killed: {left:?}",
        killed.elapsed()
    );
}

#[test]
fn killing_the_parent_ends_its_workers_at_once() {
    workers_end_with_their_killed_parent(false);
}

/// Jobs nest (Windows 8 and later, and wine): a parent that runs in a job
/// still gives its workers jobs of their own.
#[test]
fn killing_a_parent_that_runs_in_a_job_ends_its_workers_at_once() {
    workers_end_with_their_killed_parent(true);
}

#[test]
fn a_printing_rust_task_returns_its_value_and_prints_to_stderr() {
    let mut child = Command::new(HELPER)
        .arg("print-parent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    let stderr = err_reader.join().unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    let values: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {stdout:?}, stderr {stderr:?}"));
    assert_eq!(values, serde_json::json!([5, 5, 4]), "stderr: {stderr}");
    for text in [
        "alpha-without-newline alpha-with-newline",
        "beta-with-newline",
        "beta-left-unflushed",
        "gamma-from-c",
    ] {
        assert!(stderr.contains(text), "{text:?} not in stderr {stderr:?}");
    }
    assert!(
        !stderr.contains("unreadable"),
        "the protocol was disturbed: {stderr}"
    );
}
