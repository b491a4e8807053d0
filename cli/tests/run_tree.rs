//! `caiclust run`: the program's whole tree ends with caiclust (issue #16).
//!
//! The program is this test executable, run as an ignored helper test
//! ([`helper_program`]) that starts a grandchild (the same executable
//! again, [`helper_grandchild`]), writes both pids and waits: no shell, so
//! the tests run the same under wine.
//!
//! * Killed the way a supervisor kills: on Unix a signal to the process
//!   group caiclust leads (a terminal's Ctrl-C or hangup, a batch
//!   system's cancel), which reaches the program because caiclust keeps
//!   it in its group; on Windows `TerminateProcess` on caiclust alone,
//!   after which the program's Job Object, whose only handle caiclust
//!   held, ends the program and its grandchild.
//! * On Windows, what the program leaves running ends with it (its job is
//!   released when it exits); on Unix it would go on, as it always has.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use caiclust_core::tree;

const CAICLUST: &str = env!("CARGO_BIN_EXE_caiclust");

/// Where the helpers write their pids (set only for the helpers).
const DIR_VAR: &str = "CAICLUST_TEST_RUN_TREE_DIR";
/// `wait` (for the grandchild) or `leave` (exit at once, leaving it).
const MODE_VAR: &str = "CAICLUST_TEST_RUN_TREE_MODE";

/// Facts to plan with, so that no interpreter is probed.
const FACTS: &str = include_str!("../../rules/tests/snapshots/windows-opencv.facts.json");

/// How long starting caiclust, the program and its grandchild may take
/// (wine starts processes slowly).
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long the tree may take to end once caiclust is gone.
const END_LIMIT: Duration = Duration::from_secs(10);

/// Poll `done` every 20 ms until it holds or `within` passes.
fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Write `pid` to `path`, whole or not at all.
fn write_pid(pid: u32, path: &Path) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string()).expect("write a pid");
    std::fs::rename(&tmp, path).expect("rename a pid file");
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// This executable, running only the helper test `name`.
fn helper(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("this test's path"));
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// Not a test on its own: the program `caiclust run` runs here.
#[test]
#[ignore = "helper: the program run by the tests of this file"]
fn helper_program() {
    let Some(dir) = std::env::var_os(DIR_VAR).map(PathBuf::from) else {
        return;
    };
    let mut grandchild = helper("helper_grandchild")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the grandchild");
    write_pid(std::process::id(), &dir.join("child"));
    write_pid(grandchild.id(), &dir.join("grandchild"));
    if std::env::var(MODE_VAR).as_deref() == Ok("wait") {
        let _ = grandchild.wait();
    } else {
        // Left running, on purpose.
        std::mem::forget(grandchild);
    }
}

/// Not a test on its own: the grandchild, which sleeps (a minute at
/// most, should a test fail to end it).
#[test]
#[ignore = "helper: the grandchild started by helper_program"]
fn helper_grandchild() {
    if std::env::var_os(DIR_VAR).is_some() {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// `caiclust run` of [`helper_program`] in `mode`, its standard error
/// going to a file in `dir`; on Unix it leads a process group of its own,
/// as a shell's job does.
fn start(dir: &Path, mode: &str) -> Child {
    let facts = dir.join("facts.json");
    std::fs::write(&facts, FACTS).expect("write the facts");
    let stderr = std::fs::File::create(dir.join("caiclust.stderr")).expect("stderr file");
    let mut cmd = Command::new(CAICLUST);
    cmd.args(["run", "--quiet", "--no-lint", "--facts"])
        .arg(&facts)
        .arg("--")
        .arg(std::env::current_exe().expect("this test's path"))
        .args([
            "--exact",
            "helper_program",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(MODE_VAR, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.spawn().expect("start caiclust run")
}

/// caiclust's standard error so far, for a failure's message.
fn stderr_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("caiclust.stderr")).unwrap_or_default()
}

/// The pids of the program and its grandchild, once both are written.
fn started(dir: &Path, caiclust: &mut Child) -> (u32, u32) {
    let pids = || {
        Some((
            read_pid(&dir.join("child"))?,
            read_pid(&dir.join("grandchild"))?,
        ))
    };
    if !wait_until(START_LIMIT, || pids().is_some()) {
        let _ = caiclust.kill();
        let _ = caiclust.wait();
        panic!(
            "the program did not start its grandchild within {START_LIMIT:?}; caiclust: {}",
            stderr_of(dir)
        );
    }
    pids().expect("both pids")
}

/// Kill caiclust the way a supervisor does: Unix signals the process
/// group it leads; Windows has no groups and ends caiclust alone.
fn kill_as_a_supervisor_does(caiclust: &mut Child) {
    #[cfg(unix)]
    {
        let group = libc::pid_t::try_from(caiclust.id()).expect("a pid");
        // SAFETY: killpg takes plain integers; the group is the one this
        // test started caiclust in.
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    caiclust.kill().expect("TerminateProcess on caiclust");
    caiclust.wait().expect("reap caiclust");
}

/// Assert that `pids` end within [`END_LIMIT`]; kill what is left.
fn assert_ended(pids: &[(&str, u32)], dir: &Path) {
    let gone = wait_until(END_LIMIT, || pids.iter().all(|&(_, p)| !tree::alive(p)));
    let left: Vec<(&str, u32)> = pids
        .iter()
        .copied()
        .filter(|&(_, p)| tree::alive(p))
        .collect();
    for &(_, p) in &left {
        tree::signal_tree(p, tree::StopSignal::Kill);
    }
    assert!(
        gone,
        "still running {END_LIMIT:?} after caiclust ended: {left:?}; caiclust: {}",
        stderr_of(dir)
    );
}

#[test]
fn killing_caiclust_ends_the_program_and_its_grandchild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut caiclust = start(dir.path(), "wait");
    let (child, grandchild) = started(dir.path(), &mut caiclust);
    assert!(
        tree::alive(child) && tree::alive(grandchild),
        "the program {child} or its grandchild {grandchild} ended early"
    );
    assert!(
        caiclust.try_wait().expect("caiclust's state").is_none(),
        "caiclust ended early: {}",
        stderr_of(dir.path())
    );
    kill_as_a_supervisor_does(&mut caiclust);
    assert_ended(
        &[("program", child), ("grandchild", grandchild)],
        dir.path(),
    );
}

/// The job is released when the program ends: what it left running goes.
#[cfg(windows)]
#[test]
fn what_the_program_leaves_running_ends_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut caiclust = start(dir.path(), "leave");
    let (_, grandchild) = started(dir.path(), &mut caiclust);
    let status = caiclust.wait().expect("caiclust's exit");
    assert!(status.success(), "{status}: {}", stderr_of(dir.path()));
    assert_ended(&[("grandchild", grandchild)], dir.path());
}
