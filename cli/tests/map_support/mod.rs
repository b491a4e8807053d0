//! Shared by the `map_*` and `run` tests: running `caiclust` and GNU
//! `parallel` (the oracle, from Debian's `parallel` package) side by side
//! in a temporary folder, and reading job logs.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CAICLUST: &str = env!("CARGO_BIN_EXE_caiclust");

/// A temporary working folder for one test (no configuration file above).
pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Work {
        Work {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// `caiclust ARGS`, in this folder, colourless.
    pub fn caiclust(&self, args: &[&str]) -> Command {
        let mut c = Command::new(CAICLUST);
        c.args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("CLICOLOR_FORCE")
            .stdin(Stdio::null());
        c
    }

    /// GNU parallel, in this folder, without its citation notice.
    pub fn parallel(&self, args: &[&str]) -> Command {
        let mut c = Command::new("parallel");
        c.arg("--will-cite")
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::null());
        c
    }
}

/// Run to the end; the output. Panics (with the command) when it cannot
/// start: GNU parallel missing means `scripts/setup-test-envs.sh` was not
/// run.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (GNU parallel comes from scripts/setup-test-envs.sh)")
    })
}

/// Run with `input` on standard input.
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("wait")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Both streams, for assertion messages.
pub fn both(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

/// Assert the exit status, showing everything when it differs; and that
/// nothing panicked.
pub fn expect_status(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", both(o));
    assert!(!stderr(o).contains("panicked"), "{}", both(o));
}

/// One job-log line, split into its nine fields.
pub fn joblog_rows(text: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"),
        "job log header:\n{text}"
    );
    lines
        .map(|l| {
            let f: Vec<String> = l.splitn(9, '\t').map(str::to_string).collect();
            assert_eq!(f.len(), 9, "job log line: {l:?}");
            f
        })
        .collect()
}

/// The job numbers in a job log, sorted.
pub fn joblog_seqs(text: &str) -> Vec<u64> {
    let mut v: Vec<u64> = joblog_rows(text)
        .iter()
        .map(|r| r[0].parse().expect("seq"))
        .collect();
    v.sort_unstable();
    v
}

/// Wait until `done` says yes, at most `within`.
pub fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    done()
}

/// Send `sig` to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The lines of `text`, sorted.
pub fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Numbers as strings, `1..=n`.
pub fn numbers(n: u32) -> Vec<String> {
    (1..=n).map(|i| i.to_string()).collect()
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The variables of the pool `caiclust map --python P` plans (its
/// `--print-plan`), as (name, value) pairs sorted by name.
pub fn recommended_env(python: &Path) -> Vec<(String, String)> {
    plan_env(
        &["map", "--print-plan", "--python"],
        python,
        &["--", "true", ":::", "x"],
    )
}

/// The variables `caiclust run` plans for a program run by `python` (its
/// `--print-plan`), sorted by name.
pub fn run_env(python: &Path) -> Vec<(String, String)> {
    plan_env(&["run", "--print-plan", "--python"], python, &[])
}

/// The `env` object of a `--print-plan` document.
fn plan_env(head: &[&str], python: &Path, tail: &[&str]) -> Vec<(String, String)> {
    let mut c = Command::new(CAICLUST);
    c.args(head).arg(python).args(tail).env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.ends_with("_NUM_THREADS") || k == "MKL_THREADING_LAYER" {
            c.env_remove(k);
        }
    }
    let o = output(&mut c);
    assert!(o.status.success(), "{}", both(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("a JSON plan");
    doc["env"]
        .as_object()
        .expect("an env object")
        .iter()
        .filter(|(k, _)| !k.starts_with("CAICLUST_"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}
