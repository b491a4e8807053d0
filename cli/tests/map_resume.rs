//! Resume (issue #5's acceptance): after a map is killed (SIGKILL) or
//! interrupted (Ctrl-C) mid-run, `--resume` redoes only what did not
//! finish, so every input is done exactly once overall; nothing of the
//! killed run lives on; GNU parallel reads the same job log and agrees on
//! what is left. `--resume-failed` redoes the failures too.
//!
//! Unix only: `sh` commands.
#![cfg(unix)]

mod map_support;
use map_support::*;

use std::process::Stdio;
use std::time::Duration;

use caiclust_tests::{orphans_after, unique_tag, TAG_VAR};

/// Every job marks that it started; jobs above 4 hang while the file
/// `slow` exists; each appends its input to `done` when it finishes.
const LINE: &str =
    "echo {} >> started; if [ -e slow ] && [ {} -gt 4 ]; then sleep 60; fi; echo {} >> done";

fn map_args<'a>(extra: &[&'a str], inputs: &'a [String]) -> Vec<&'a str> {
    let mut v = vec!["map", "--no-auto", "-j", "2", "--joblog", "run.log"];
    v.extend_from_slice(extra);
    v.extend(["--shell", LINE, ":::"]);
    v.extend(inputs.iter().map(String::as_str));
    v
}

/// The job numbers GNU parallel would still run, given this job log.
fn gnu_left(w: &Work, log: &str, resume: &str, n: u32) -> Vec<u64> {
    let inputs = numbers(n);
    let mut args = vec!["--dry-run", resume, "--joblog", log, "echo", "{#}", ":::"];
    args.extend(strs(&inputs));
    let o = output(&mut w.parallel(&args));
    assert!(
        o.status.success(),
        "GNU parallel rejects the job log:\n{}",
        both(&o)
    );
    let mut v: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| l.trim_start_matches("echo ").parse().expect("seq"))
        .collect();
    v.sort_unstable();
    v
}

/// The job numbers caiclust would still run.
fn ours_left(w: &Work, log: &str, resume: &str, n: u32) -> Vec<u64> {
    let inputs = numbers(n);
    let mut args = vec![
        "map",
        "--no-auto",
        "--dry-run",
        resume,
        "--joblog",
        log,
        "echo",
        "{#}",
        ":::",
    ];
    args.extend(strs(&inputs));
    let o = output(&mut w.caiclust(&args));
    expect_status(&o, 0);
    let mut v: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| l.trim_start_matches("echo ").parse().expect("seq"))
        .collect();
    v.sort_unstable();
    v
}

/// Start the first run and wait until jobs 1–4 are logged and 5 and 6
/// hang in both slots.
fn start_and_wait_for_hang(w: &Work, inputs: &[String], tag: &str) -> std::process::Child {
    w.write("slow", "");
    let child = w
        .caiclust(&map_args(&[], inputs))
        .env(TAG_VAR, tag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start caiclust map");
    let ready = wait_for(Duration::from_secs(60), || {
        let started = w.read("started");
        w.read("run.log").lines().count() == 5
            && started.lines().any(|l| l == "5")
            && started.lines().any(|l| l == "6")
    });
    assert!(
        ready,
        "jobs 1-4 never finished while 5 and 6 hang; log:\n{}\nstarted:\n{}",
        w.read("run.log"),
        w.read("started")
    );
    child
}

fn finish_and_check_exactly_once(w: &Work, inputs: &[String], after_kill: &[u64]) {
    // GNU parallel and caiclust agree on what is left.
    std::fs::copy(w.path("run.log"), w.path("copy.log")).expect("copy");
    assert_eq!(gnu_left(w, "copy.log", "--resume", 8), after_kill);
    assert_eq!(ours_left(w, "copy.log", "--resume", 8), after_kill);
    // GNU parallel's stricter check of every line (--resume-failed parses
    // all fields) passes too.
    assert_eq!(gnu_left(w, "copy.log", "--resume-failed", 8), after_kill);

    std::fs::remove_file(w.path("slow")).expect("rm slow");
    let o = output(&mut w.caiclust(&map_args(&["--resume"], inputs)));
    expect_status(&o, 0);

    let done = sorted_lines(&w.read("done"));
    let mut want: Vec<String> = numbers(8);
    want.sort();
    assert_eq!(done, want, "every input done exactly once");
    let started = sorted_lines(&w.read("started"));
    let twice: Vec<&String> = started
        .iter()
        .filter(|s| started.iter().filter(|t| t == s).count() == 2)
        .collect();
    assert_eq!(
        twice,
        ["5", "5", "6", "6"],
        "only the killed jobs ran again"
    );
    assert_eq!(
        joblog_seqs(&w.read("run.log")),
        (1..=8).collect::<Vec<u64>>()
    );
    assert!(gnu_left(w, "run.log", "--resume", 8).is_empty());
}

#[test]
fn resume_after_sigkill_redoes_only_what_did_not_finish() {
    let w = Work::new();
    let inputs = numbers(8);
    let tag = unique_tag("resume-sigkill");
    let mut child = start_and_wait_for_hang(&w, &inputs, &tag);
    signal(child.id(), "KILL");
    let _ = child.wait();
    // The hanging jobs died with the map: they never write to `done`.
    let left = orphans_after(&tag, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "processes outlived the killed map: {left:?}"
    );
    assert_eq!(sorted_lines(&w.read("done")), ["1", "2", "3", "4"]);
    finish_and_check_exactly_once(&w, &inputs, &[5, 6, 7, 8]);
}

#[test]
fn ctrl_c_twice_stops_running_jobs_and_resume_finishes() {
    let w = Work::new();
    let inputs = numbers(8);
    let tag = unique_tag("resume-sigint");
    let mut child = start_and_wait_for_hang(&w, &inputs, &tag);
    // The first Ctrl-C waits for the running jobs (which hang); the second
    // stops them.
    signal(child.id(), "INT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the first Ctrl-C waits"
    );
    signal(child.id(), "INT");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let left = orphans_after(&tag, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "processes outlived the interrupted map: {left:?}"
    );
    finish_and_check_exactly_once(&w, &inputs, &[5, 6, 7, 8]);
}

#[test]
fn first_ctrl_c_lets_running_jobs_finish_and_logs_them() {
    let w = Work::new();
    let inputs = numbers(6);
    let line = "echo {} >> started; sleep 1; echo {} >> done";
    let mut args = vec![
        "map",
        "--no-auto",
        "-j",
        "2",
        "--joblog",
        "run.log",
        "--shell",
        line,
        ":::",
    ];
    args.extend(strs(&inputs));
    let child = w
        .caiclust(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    assert!(wait_for(Duration::from_secs(30), || w
        .read("started")
        .lines()
        .count()
        == 2));
    signal(child.id(), "INT");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(130), "{}", both(&o));
    assert!(
        stderr(&o).contains("interrupted: starting no more jobs"),
        "{}",
        both(&o)
    );
    // The two running when interrupted finished and were logged.
    assert_eq!(sorted_lines(&w.read("done")), ["1", "2"]);
    assert_eq!(joblog_seqs(&w.read("run.log")), [1, 2]);
    assert!(
        stderr(&o).contains("4 not run (interrupted); --resume runs them"),
        "{}",
        both(&o)
    );
    args.insert(1, "--resume");
    let o = output(&mut w.caiclust(&args));
    expect_status(&o, 0);
    assert_eq!(
        sorted_lines(&w.read("done")),
        ["1", "2", "3", "4", "5", "6"]
    );
}

#[test]
fn resume_failed_redoes_failures_and_agrees_with_gnu_parallel() {
    let w = Work::new();
    let inputs = numbers(6);
    // Odd inputs fail while the file `fail` exists.
    let line = "if [ -e fail ] && [ $(({} % 2)) = 1 ]; then exit 3; fi; echo {} >> done";
    let run = |extra: &[&str]| {
        let mut args = vec!["map", "--no-auto", "-j", "2", "--joblog", "run.log"];
        args.extend_from_slice(extra);
        args.extend(["--shell", line, ":::"]);
        args.extend(strs(&inputs));
        output(&mut w.caiclust(&args))
    };
    w.write("fail", "");
    let o = run(&[]);
    expect_status(&o, 3);
    for n in [1, 3, 5] {
        assert!(
            stderr(&o).contains(&format!("job {n} failed with exit code 3")),
            "{}",
            both(&o)
        );
    }
    std::fs::copy(w.path("run.log"), w.path("copy.log")).expect("copy");
    assert_eq!(gnu_left(&w, "copy.log", "--resume-failed", 6), [1, 3, 5]);
    assert_eq!(ours_left(&w, "copy.log", "--resume-failed", 6), [1, 3, 5]);
    assert!(ours_left(&w, "copy.log", "--resume", 6).is_empty());

    // --resume: everything is logged, nothing runs.
    std::fs::remove_file(w.path("fail")).expect("rm");
    let o = run(&["--resume"]);
    expect_status(&o, 0);
    assert_eq!(sorted_lines(&w.read("done")), ["2", "4", "6"]);
    // --resume-failed: the failures run again, and succeed.
    let o = run(&["--resume-failed"]);
    expect_status(&o, 0);
    assert_eq!(
        sorted_lines(&w.read("done")),
        ["1", "2", "3", "4", "5", "6"]
    );
    assert_eq!(w.read("run.log").lines().count(), 1 + 6 + 3);
    assert!(gnu_left(&w, "run.log", "--resume-failed", 6).is_empty());
}

#[test]
fn a_joblog_written_by_gnu_parallel_resumes() {
    let w = Work::new();
    let inputs = numbers(5);
    let line = "if [ {} = 4 ]; then exit 1; fi; echo {} >> done";
    let mut gnu = vec!["--joblog", "run.log", line, ":::"];
    gnu.extend(strs(&inputs[..3]));
    let o = output(&mut w.parallel(&gnu));
    assert!(o.status.success(), "{}", both(&o));
    let mut ours = vec![
        "map",
        "--no-auto",
        "--resume",
        "--joblog",
        "run.log",
        "--shell",
        line,
        ":::",
    ];
    ours.extend(strs(&inputs));
    let o = output(&mut w.caiclust(&ours));
    expect_status(&o, 1);
    assert_eq!(sorted_lines(&w.read("done")), ["1", "2", "3", "5"]);
    assert_eq!(joblog_seqs(&w.read("run.log")), [1, 2, 3, 4, 5]);
    assert_eq!(gnu_left(&w, "run.log", "--resume-failed", 5), [4]);
}
