//! The caller's side: start the helper, bound it, read it, judge it.
//!
//! Nothing here loads a library. The child gets a cleared environment plus
//! the query, no stdin, and two pipes that are read by threads with caps
//! (the rest is drained so that the child never blocks). The parent polls
//! for the child's end until the deadline, then kills it. On Unix the child
//! leads its own process group, and the group is killed before the child is
//! reaped (the unreaped child keeps the group id from being reused), so
//! nothing the library started outlives the query.

use std::io::{self, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::spawn::spawn_retrying;

use super::protocol::{Request, Stage, Transcript, PROTOCOL_VERSION};
use super::{
    calls, LoadFirst, RuntimeQuery, RuntimeQueryOptions, RUNTIME_QUERY_ENV,
    RUNTIME_QUERY_STDERR_CAP, RUNTIME_QUERY_STDOUT_CAP,
};
use crate::facts::RuntimeAnswer;

/// How long to wait, after the child ended, for its pipes to reach end of
/// file (a grandchild that left the process group may hold them open).
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// The longest stderr excerpt appended to an error.
const STDERR_EXCERPT: usize = 400;

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it (Unix).
    #[cfg_attr(not(unix), allow(dead_code))]
    Signal(i32),
    /// It died of an exception, e.g. `0xC0000005` (Windows).
    #[cfg_attr(not(windows), allow(dead_code))]
    Exception(u32),
    /// The deadline passed; it was killed.
    TimedOut(Duration),
    /// Its status could not be read.
    Unknown,
}

/// See [`super::query_runtime`].
pub(super) fn run(
    query: &RuntimeQuery,
    load_first: &[LoadFirst],
    options: &RuntimeQueryOptions,
) -> RuntimeAnswer {
    let failed = |error: String| RuntimeAnswer {
        error: Some(error),
        ..RuntimeAnswer::default()
    };
    if !calls::is_supported(query.vendor) {
        return failed(format!(
            "no runtime query is defined for {} libraries",
            query.vendor
        ));
    }
    if options.affinity.is_some() && !cfg!(target_os = "linux") {
        return failed("CPU affinity can only be set on Linux".to_owned());
    }
    let request = Request {
        protocol: PROTOCOL_VERSION,
        query: query.clone(),
        affinity: options.affinity.clone(),
        load_first: load_first.to_vec(),
    };
    let json = match serde_json::to_string(&request) {
        Ok(json) => json,
        Err(e) => return failed(format!("cannot encode the query: {e}")),
    };

    let mut cmd = Command::new(&options.helper);
    cmd.args(&options.helper_args)
        .env_clear()
        .envs(&options.env)
        .env(RUNTIME_QUERY_ENV, json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let start = Instant::now();
    let mut child = match spawn_retrying(&mut cmd) {
        Ok(child) => child,
        Err(e) => {
            return failed(format!(
                "cannot start the query helper {}: {e}",
                options.helper.display()
            ))
        }
    };

    let (done_tx, done_rx) = mpsc::channel();
    let stdout = child
        .stdout
        .take()
        .map(|pipe| Capture::start(pipe, RUNTIME_QUERY_STDOUT_CAP, done_tx.clone()));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| Capture::start(pipe, RUNTIME_QUERY_STDERR_CAP, done_tx.clone()));
    drop(done_tx);

    let ending = wait_bounded(&mut child, start, options.deadline);

    // Collect what was printed; the pipes close once the group is gone.
    let grace_end = Instant::now() + DRAIN_GRACE;
    let mut open = usize::from(stdout.is_some()) + usize::from(stderr.is_some());
    while open > 0 {
        let left = grace_end.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => open -= 1,
            Err(_) => break,
        }
    }
    let stdout = stdout.map(|c| c.take()).unwrap_or_default();
    let stderr = stderr.map(|c| c.take()).unwrap_or_default();

    let transcript = Transcript::read(&stdout);
    judge(
        transcript,
        ending,
        &stderr,
        &options.helper.display().to_string(),
    )
}

/// Turn what happened into the answer.
pub(super) fn judge(
    transcript: Transcript,
    ending: Ending,
    stderr: &[u8],
    helper: &str,
) -> RuntimeAnswer {
    if let Some(answer) = transcript.answer {
        return answer;
    }
    let mut error = describe(ending, &transcript.stage, helper);
    if let Some(excerpt) = excerpt(stderr) {
        error.push_str("; stderr: ");
        error.push_str(&excerpt);
    }
    RuntimeAnswer {
        calls: transcript.calls,
        error: Some(error),
        ..RuntimeAnswer::default()
    }
}

/// Why there is no answer, as a sentence without the subject ("the query
/// child ...").
pub(super) fn describe(ending: Ending, stage: &Stage, helper: &str) -> String {
    let when = stage.describe();
    match (ending, stage) {
        (Ending::TimedOut(deadline), _) => format!(
            "timed out after {:.1} s (killed) {when}",
            deadline.as_secs_f64()
        ),
        (Ending::Signal(signal), _) => {
            format!(
                "crashed with signal {signal} ({}) {when}",
                signal_name(signal)
            )
        }
        (Ending::Exception(code), _) => {
            format!(
                "crashed with exception {code:#010X} ({}) {when}",
                exception_name(code)
            )
        }
        (_, Stage::NotStarted) => format!(
            "printed no answer ({}; is {helper} a query helper? its main() must call \
             serve_runtime_query_if_requested first)",
            match ending {
                Ending::Exited(code) => format!("exited with status {code}"),
                _ => "ended".to_owned(),
            }
        ),
        (Ending::Exited(code), Stage::Loading) => format!(
            "exited with status {code} before answering (the library's constructor called exit?)"
        ),
        (Ending::Exited(code), _) => format!("exited with status {code} before answering ({when})"),
        (Ending::Unknown, _) => format!("printed no answer (it ended {when})"),
    }
}

/// The end of stderr, on one line, when there is any.
fn excerpt(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return None;
    }
    let joined = lines.join(" | ");
    let chars: Vec<char> = joined.chars().collect();
    Some(if chars.len() > STDERR_EXCERPT {
        let tail: String = chars[chars.len() - STDERR_EXCERPT..].iter().collect();
        format!("...{tail}")
    } else {
        joined
    })
}

/// The usual name of a Unix signal.
fn signal_name(signal: i32) -> &'static str {
    #[cfg(unix)]
    {
        let names: &[(i32, &str)] = &[
            (libc::SIGSEGV, "SIGSEGV"),
            (libc::SIGBUS, "SIGBUS"),
            (libc::SIGILL, "SIGILL"),
            (libc::SIGFPE, "SIGFPE"),
            (libc::SIGABRT, "SIGABRT"),
            (libc::SIGKILL, "SIGKILL"),
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGTRAP, "SIGTRAP"),
            (libc::SIGSYS, "SIGSYS"),
            (libc::SIGPIPE, "SIGPIPE"),
            (libc::SIGXCPU, "SIGXCPU"),
            (libc::SIGXFSZ, "SIGXFSZ"),
            (libc::SIGINT, "SIGINT"),
            (libc::SIGHUP, "SIGHUP"),
            (libc::SIGQUIT, "SIGQUIT"),
            (libc::SIGALRM, "SIGALRM"),
            (libc::SIGUSR1, "SIGUSR1"),
            (libc::SIGUSR2, "SIGUSR2"),
        ];
        names
            .iter()
            .find(|(n, _)| *n == signal)
            .map_or("unknown signal", |(_, name)| name)
    }
    #[cfg(not(unix))]
    {
        let _ = signal;
        "unknown signal"
    }
}

/// The name of a Windows exception code seen as an exit status.
fn exception_name(code: u32) -> &'static str {
    match code {
        0xC000_0005 => "access violation",
        0xC000_001D => "illegal instruction",
        0xC000_0094 => "integer division by zero",
        0xC000_00FD => "stack overflow",
        0xC000_0135 => "a DLL was not found",
        0xC000_0139 => "an entry point was not found",
        0xC000_0142 => "DLL initialization failed",
        0xC000_0409 => "stack buffer overrun",
        0xC000_0374 => "heap corruption",
        _ => "unhandled exception",
    }
}

/// Wait for the child until `deadline` after `start`; kill it (and on Unix
/// its process group) when it passes. The child is always reaped.
fn wait_bounded(child: &mut Child, start: Instant, deadline: Duration) -> Ending {
    let mut pause = Duration::from_micros(500);
    loop {
        match has_ended(child) {
            Ok(true) => {
                kill_group(child);
                return match child.wait() {
                    Ok(status) => ending_of(status),
                    Err(_) => Ending::Unknown,
                };
            }
            Ok(false) => {}
            Err(_) => {
                kill_group(child);
                let _ = child.kill();
                let _ = child.wait();
                return Ending::Unknown;
            }
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            kill_group(child);
            let _ = child.kill();
            let _ = child.wait();
            return Ending::TimedOut(deadline);
        }
        thread::sleep(pause.min(deadline - elapsed));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Has the child ended? On Unix this leaves it unreaped (`waitid` with
/// `WNOWAIT`), so that its process group can still be killed safely.
#[cfg(unix)]
fn has_ended(child: &mut Child) -> io::Result<bool> {
    let pid = libc::id_t::from(child.id());
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value, and
        // waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our own unreaped child; WNOWAIT leaves it
        // waitable for `Child::wait`.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            // SAFETY: after a successful waitid the pid field is set (0
            // when the child has not changed state).
            return Ok(unsafe { info.si_pid() } != 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            // Fall back to the portable (reaping) check.
            return child.try_wait().map(|s| s.is_some()).or(Err(e));
        }
    }
}

#[cfg(not(unix))]
fn has_ended(child: &mut Child) -> io::Result<bool> {
    child.try_wait().map(|s| s.is_some())
}

/// Kill the child's process group: whatever the library started. The
/// child is not reaped yet, so the group id cannot belong to anyone else.
#[cfg(unix)]
fn kill_group(child: &Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: the child leads this group (`process_group(0)`) and has
        // not been reaped, so the id still names our group.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

#[cfg(not(unix))]
fn kill_group(_child: &Child) {}

#[cfg(unix)]
fn ending_of(status: std::process::ExitStatus) -> Ending {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Exited(code),
        (None, Some(signal)) => Ending::Signal(signal),
        _ => Ending::Unknown,
    }
}

#[cfg(windows)]
fn ending_of(status: std::process::ExitStatus) -> Ending {
    match status.code() {
        // NTSTATUS error codes (0xC...) are crashes, not exit() calls.
        Some(code) if (code as u32) >= 0xC000_0000 => Ending::Exception(code as u32),
        Some(code) => Ending::Exited(code),
        None => Ending::Unknown,
    }
}

#[cfg(not(any(unix, windows)))]
fn ending_of(status: std::process::ExitStatus) -> Ending {
    status.code().map_or(Ending::Unknown, Ending::Exited)
}

/// One pipe read by a thread into a capped buffer the parent can take at
/// any time (even while a grandchild keeps the pipe open).
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Capture {
    fn start(mut pipe: impl Read + Send + 'static, cap: usize, done: mpsc::Sender<()>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&buf);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut kept = shared.lock().unwrap_or_else(|e| e.into_inner());
                        let room = cap.saturating_sub(kept.len());
                        kept.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        });
        Self { buf }
    }

    fn take(self) -> Vec<u8> {
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELPER: &str = "/usr/bin/caiclust";

    #[test]
    fn endings_read_as_sentences() {
        let loading = Stage::Loading;
        let calling = Stage::Calling("openblas_get_config".into());
        #[cfg(unix)]
        assert_eq!(
            describe(Ending::Signal(libc::SIGSEGV), &loading, HELPER),
            format!(
                "crashed with signal {} (SIGSEGV) while loading",
                libc::SIGSEGV
            )
        );
        assert_eq!(
            describe(Ending::TimedOut(Duration::from_secs(5)), &loading, HELPER),
            "timed out after 5.0 s (killed) while loading"
        );
        assert_eq!(
            describe(
                Ending::TimedOut(Duration::from_millis(2000)),
                &calling,
                HELPER
            ),
            "timed out after 2.0 s (killed) while calling openblas_get_config"
        );
        assert_eq!(
            describe(Ending::Exited(3), &loading, HELPER),
            "exited with status 3 before answering (the library's constructor called exit?)"
        );
        assert_eq!(
            describe(Ending::Exited(1), &calling, HELPER),
            "exited with status 1 before answering (while calling openblas_get_config)"
        );
        assert_eq!(
            describe(Ending::Exception(0xC000_0005), &loading, HELPER),
            "crashed with exception 0xC0000005 (access violation) while loading"
        );
        let dependency = Stage::LoadingDependency("libgfortran-040039e1.so.5.0.0".into());
        assert_eq!(
            describe(
                Ending::TimedOut(Duration::from_secs(5)),
                &dependency,
                HELPER
            ),
            "timed out after 5.0 s (killed) while loading its dependency \
             libgfortran-040039e1.so.5.0.0"
        );
        assert_eq!(
            describe(Ending::Exited(3), &dependency, HELPER),
            "exited with status 3 before answering (while loading its dependency \
             libgfortran-040039e1.so.5.0.0)"
        );
        let not_helper = describe(Ending::Exited(0), &Stage::NotStarted, HELPER);
        assert!(
            not_helper.starts_with("printed no answer (exited with status 0;"),
            "{not_helper}"
        );
        assert!(not_helper.contains(HELPER), "{not_helper}");
    }

    #[test]
    fn a_partial_transcript_keeps_its_calls_and_stderr() {
        let transcript = Transcript {
            stage: Stage::Calling("openblas_get_parallel".into()),
            calls: vec!["openblas_get_config".into(), "openblas_get_parallel".into()],
            answer: None,
        };
        let a = judge(
            transcript,
            Ending::Exited(1),
            b"\nOpenBLAS: boom\n\n",
            HELPER,
        );
        assert_eq!(a.calls, ["openblas_get_config", "openblas_get_parallel"]);
        assert_eq!(
            a.error.as_deref(),
            Some(
                "exited with status 1 before answering (while calling openblas_get_parallel); \
                 stderr: OpenBLAS: boom"
            )
        );
    }

    #[test]
    fn an_answer_wins_over_the_ending() {
        let answer = RuntimeAnswer {
            num_threads: Some(4),
            ..RuntimeAnswer::default()
        };
        let transcript = Transcript {
            stage: Stage::Answered,
            calls: vec![],
            answer: Some(answer.clone()),
        };
        assert_eq!(judge(transcript, Ending::Signal(11), b"", HELPER), answer);
    }

    #[test]
    fn long_stderr_is_cut_to_its_end() {
        let long = "x".repeat(1000) + "\nlast words";
        let e = excerpt(long.as_bytes()).unwrap();
        assert!(e.starts_with("..."), "{e}");
        assert!(e.ends_with("last words"), "{e}");
        assert_eq!(e.chars().count(), STDERR_EXCERPT + 3);
        assert_eq!(excerpt(b"  \n"), None);
    }

    #[test]
    fn unsupported_vendors_fail_without_a_child() {
        let q = RuntimeQuery::new("/x", crate::facts::Vendor::Accelerate);
        let options = super::super::RuntimeQueryOptions::new("/nonexistent/helper");
        let a = run(&q, &[], &options);
        assert_eq!(
            a.error.as_deref(),
            Some("no runtime query is defined for Apple Accelerate libraries")
        );
    }

    #[test]
    fn a_missing_helper_is_reported() {
        let q = RuntimeQuery::new("/x", crate::facts::Vendor::Openblas);
        let options = super::super::RuntimeQueryOptions::new("/nonexistent/caiclust-helper");
        let a = run(&q, &[], &options);
        let e = a.error.unwrap();
        assert!(
            e.starts_with("cannot start the query helper /nonexistent/caiclust-helper:"),
            "{e}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_program_that_is_not_a_helper_is_named() {
        let q = RuntimeQuery::new("/x", crate::facts::Vendor::Openblas);
        let options = super::super::RuntimeQueryOptions::new("/bin/true");
        let a = run(&q, &[], &options);
        let e = a.error.unwrap();
        assert!(
            e.starts_with("printed no answer (exited with status 0;"),
            "{e}"
        );
        assert!(e.contains("/bin/true"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn helper_arguments_come_first_on_the_command_line() {
        let q = RuntimeQuery::new("/x", crate::facts::Vendor::Openblas);
        let mut options = super::super::RuntimeQueryOptions::new("/bin/sh");
        options.helper_args = vec!["-c".into(), "exit 3".into()];
        let a = run(&q, &[], &options);
        let e = a.error.unwrap();
        assert!(e.contains("exited with status 3"), "{e}");
    }

    /// A helper script that starts a grandchild (which holds the pipes
    /// open) and then does `then`; returns the options and the file where
    /// the grandchild's pid is written.
    #[cfg(target_os = "linux")]
    fn script_helper(
        dir: &std::path::Path,
        then: &str,
    ) -> (super::super::RuntimeQueryOptions, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let pid_file = dir.join("grandchild.pid");
        let script = dir.join("helper.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nsleep 30 &\necho $! > '{}'\n{then}\n",
                pid_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut options = super::super::RuntimeQueryOptions::new(&script);
        options.deadline = Duration::from_millis(500);
        (options, pid_file)
    }

    /// Gone, or a zombie waiting for a reaper (containers may lack one),
    /// within a second: SIGKILL is delivered asynchronously.
    #[cfg(target_os = "linux")]
    fn is_gone(pid_file: &std::path::Path) -> bool {
        let pid = std::fs::read_to_string(pid_file).unwrap();
        let stat_file = format!("/proc/{}/stat", pid.trim());
        let start = Instant::now();
        loop {
            let gone = match std::fs::read_to_string(&stat_file) {
                Err(_) => true,
                Ok(stat) => stat
                    .rsplit(") ")
                    .next()
                    .is_some_and(|rest| rest.starts_with('Z')),
            };
            if gone || start.elapsed() > Duration::from_secs(1) {
                return gone;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_hanging_helper_and_its_grandchildren_are_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (options, pid_file) = script_helper(dir.path(), "exec sleep 30");
        let q = RuntimeQuery::new("/x", crate::facts::Vendor::Openblas);
        let start = Instant::now();
        let a = run(&q, &[], &options);
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            a.error.as_deref(),
            Some("timed out after 0.5 s (killed) before the query began")
        );
        assert!(is_gone(&pid_file));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_grandchild_holding_the_pipes_does_not_delay_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut options, pid_file) = script_helper(dir.path(), "exit 0");
        options.deadline = Duration::from_secs(20);
        let q = RuntimeQuery::new("/x", crate::facts::Vendor::Openblas);
        let start = Instant::now();
        let a = run(&q, &[], &options);
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        let e = a.error.unwrap();
        assert!(
            e.starts_with("printed no answer (exited with status 0;"),
            "{e}"
        );
        assert!(is_gone(&pid_file));
    }
}
