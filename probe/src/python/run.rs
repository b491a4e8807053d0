//! Running a child process with a deadline and a cap on what it prints.
//!
//! Used for the interpreter query: the child gets no stdin, its stdout and
//! stderr are read by two threads, and the child is killed when the deadline
//! passes or stdout grows past the cap. Nothing here blocks past the
//! deadline, even when the child hangs or a grandchild keeps a pipe open.

use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::spawn::spawn_retrying;

/// What a finished child printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// At most [`Limits::stderr_cap`] bytes; the rest is read and dropped.
    pub stderr: Vec<u8>,
}

/// Why a child gave no usable answer.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The program could not be started.
    Spawn(io::Error),
    /// Reading its output or waiting for it failed.
    Io(io::Error),
    /// It did not finish within the deadline and was killed.
    TimedOut(Duration),
    /// It printed more than the cap on stdout and was killed.
    TooMuchOutput(usize),
}

/// Bounds of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub deadline: Duration,
    pub stdout_cap: usize,
    pub stderr_cap: usize,
}

enum Stream {
    Out(io::Result<Vec<u8>>),
    Err(io::Result<Vec<u8>>),
}

/// Run `cmd` to completion within `limits`. The child's stdin is closed.
pub(crate) fn run_bounded(cmd: &mut Command, limits: Limits) -> Result<Finished, RunError> {
    let start = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_retrying(cmd).map_err(RunError::Spawn)?;

    let (tx, rx) = mpsc::channel();
    if let Some(mut out) = child.stdout.take() {
        let tx = tx.clone();
        let cap = limits.stdout_cap;
        thread::spawn(move || {
            let mut buf = Vec::new();
            // One byte past the cap tells that the cap was exceeded.
            let r = (&mut out)
                .take(cap as u64 + 1)
                .read_to_end(&mut buf)
                .map(|_| buf);
            let _ = tx.send(Stream::Out(r));
        });
    }
    if let Some(mut err) = child.stderr.take() {
        let tx = tx.clone();
        let cap = limits.stderr_cap;
        thread::spawn(move || {
            let mut buf = Vec::new();
            let r = (&mut err)
                .take(cap as u64)
                .read_to_end(&mut buf)
                // Keep draining so that a chatty child never blocks on stderr.
                .and_then(|_| io::copy(&mut err, &mut io::sink()))
                .map(|_| buf);
            let _ = tx.send(Stream::Err(r));
        });
    }
    drop(tx);

    let mut stdout = None;
    let mut stderr = None;
    while stdout.is_none() || stderr.is_none() {
        let left = limits.deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(Stream::Out(Ok(buf))) => {
                if buf.len() > limits.stdout_cap {
                    kill(&mut child);
                    return Err(RunError::TooMuchOutput(limits.stdout_cap));
                }
                stdout = Some(buf);
            }
            Ok(Stream::Out(Err(e))) => {
                kill(&mut child);
                return Err(RunError::Io(e));
            }
            // Losing stderr is no reason to fail: it only explains failures.
            Ok(Stream::Err(r)) => stderr = Some(r.unwrap_or_default()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill(&mut child);
                return Err(RunError::TimedOut(limits.deadline));
            }
            // Both readers are gone (a pipe could not be taken): stop waiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    // Both pipes are at end of file; the child is exiting or has exited.
    let mut pause = Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() >= limits.deadline => {
                kill(&mut child);
                return Err(RunError::TimedOut(limits.deadline));
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e) => {
                kill(&mut child);
                return Err(RunError::Io(e));
            }
        }
    };
    Ok(Finished {
        status,
        stdout: stdout.unwrap_or_default(),
        stderr: stderr.unwrap_or_default(),
    })
}

/// Kill and reap. Errors are ignored: the child may have exited meanwhile.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn limits(ms: u64) -> Limits {
        Limits {
            deadline: Duration::from_millis(ms),
            stdout_cap: 1000,
            stderr_cap: 100,
        }
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn run_collects_stdout_stderr_and_status() {
        let done =
            run_bounded(&mut sh("echo out; echo err >&2; exit 3"), limits(5000)).expect("runs");
        assert_eq!(done.stdout, b"out\n");
        assert_eq!(done.stderr, b"err\n");
        assert_eq!(done.status.code(), Some(3));
    }

    #[test]
    fn run_truncates_stderr_without_failing() {
        let done = run_bounded(
            &mut sh("head -c 100000 /dev/zero >&2; echo ok"),
            limits(5000),
        )
        .expect("runs");
        assert_eq!(done.stderr.len(), 100);
        assert_eq!(done.stdout, b"ok\n");
    }

    #[test]
    fn run_kills_on_deadline() {
        let start = Instant::now();
        let r = run_bounded(&mut sh("exec sleep 30"), limits(200));
        assert!(matches!(r, Err(RunError::TimedOut(_))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn run_kills_on_too_much_output() {
        let start = Instant::now();
        let r = run_bounded(&mut sh("exec yes"), limits(10_000));
        assert!(matches!(r, Err(RunError::TooMuchOutput(1000))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn run_reports_a_missing_program() {
        let r = run_bounded(
            &mut Command::new("/nonexistent/caiclust-no-such-program"),
            limits(1000),
        );
        assert!(matches!(r, Err(RunError::Spawn(_))), "{r:?}");
    }
}
