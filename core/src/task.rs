//! What a task is, and what becomes of it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

mod ntstatus;

pub use ntstatus::{exit_code_text, ntstatus_name};

/// A task's number: its position in submission order, from 1 (the `Seq` of
/// a GNU parallel joblog).
pub type TaskId = u64;

/// One unit of work.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub kind: TaskKind,
    /// Overrides the cluster's per-task timeout.
    pub timeout: Option<Duration>,
}

/// The three kinds of work a cluster runs.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskKind {
    /// An external program, started fresh (fork+exec) for each task.
    Command(CommandTask),
    /// `package.module:function` in a long-lived Python worker.
    Python(CallTask),
    /// A Rust function registered by name, in a worker process of the
    /// same binary (see [`crate::worker::serve_if_requested`]).
    Rust(CallTask),
}

/// An external command.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CommandTask {
    pub argv: Vec<String>,
    /// Added to the worker environment for this task only.
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Bytes fed to the command's standard input (none: empty input).
    pub stdin: Option<Vec<u8>>,
}

/// A call by name with JSON arguments: an array is passed as positional
/// arguments, an object as keyword arguments (Python), `null` as no
/// argument, anything else as the single argument. Or, with a `payload`,
/// a call with bytes (the JSON arguments are then `null` and unused): a
/// pickled `(args, kwargs)` pair for Python ([`Task::python_pickled`]),
/// the argument of a bytes function for Rust ([`Task::rust_bytes`]).
#[derive(Clone, PartialEq)]
pub struct CallTask {
    pub function: String,
    pub args: serde_json::Value,
    /// Sent to the worker as raw bytes, never inside JSON.
    pub payload: Option<Vec<u8>>,
}

impl fmt::Debug for CallTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallTask")
            .field("function", &self.function)
            .field("args", &self.args)
            .field(
                "payload",
                &self.payload.as_ref().map(|p| ByteCount(p.len())),
            )
            .finish()
    }
}

/// Shows a payload by its size (a payload can be many MiB).
struct ByteCount(usize);

impl fmt::Debug for ByteCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl Task {
    /// An external command; `argv[0]` is looked up on `PATH`.
    pub fn command<I, S>(argv: I) -> Task
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Task {
            kind: TaskKind::Command(CommandTask {
                argv: argv.into_iter().map(Into::into).collect(),
                ..CommandTask::default()
            }),
            timeout: None,
        }
    }

    /// A Python callable, `package.module:function` (dotted attributes
    /// after the colon are followed).
    pub fn python(function: impl Into<String>, args: serde_json::Value) -> Task {
        Task {
            kind: TaskKind::Python(CallTask {
                function: function.into(),
                args,
                payload: None,
            }),
            timeout: None,
        }
    }

    /// A Python callable called with pickled arguments: the worker runs
    /// `args, kwargs = pickle.loads(pickled)` and `function(*args,
    /// **kwargs)`, and pickles what it returns (highest protocol) into the
    /// result's [`payload`](TaskResult::payload); the result's value is
    /// `null`. The bytes travel as they are, never escaped into JSON.
    pub fn python_pickled(function: impl Into<String>, pickled: impl Into<Vec<u8>>) -> Task {
        Task {
            kind: TaskKind::Python(CallTask {
                function: function.into(),
                args: serde_json::Value::Null,
                payload: Some(pickled.into()),
            }),
            timeout: None,
        }
    }

    /// A Rust function registered under `name` in the worker binary.
    pub fn rust(name: impl Into<String>, args: serde_json::Value) -> Task {
        Task {
            kind: TaskKind::Rust(CallTask {
                function: name.into(),
                args,
                payload: None,
            }),
            timeout: None,
        }
    }

    /// A Rust function of bytes registered under `name` with
    /// [`crate::worker::Registry::register_bytes`]: it gets `bytes`, and
    /// what it returns comes back as the result's
    /// [`payload`](TaskResult::payload) (the value is `null`).
    pub fn rust_bytes(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Task {
        Task {
            kind: TaskKind::Rust(CallTask {
                function: name.into(),
                args: serde_json::Value::Null,
                payload: Some(bytes.into()),
            }),
            timeout: None,
        }
    }

    /// Set one environment variable for this command.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Task {
        if let TaskKind::Command(c) = &mut self.kind {
            c.env.insert(name.into(), value.into());
        }
        self
    }

    /// Run this command in `dir`.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Task {
        if let TaskKind::Command(c) = &mut self.kind {
            c.cwd = Some(dir.into());
        }
        self
    }

    /// Feed `bytes` to this command's standard input.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Task {
        if let TaskKind::Command(c) = &mut self.kind {
            c.stdin = Some(bytes.into());
        }
        self
    }

    /// This task's own timeout.
    pub fn timeout(mut self, timeout: Duration) -> Task {
        self.timeout = Some(timeout);
        self
    }

    /// A one-line description for logs and joblogs.
    pub fn describe(&self) -> String {
        match &self.kind {
            TaskKind::Command(c) => c
                .argv
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
            TaskKind::Python(c) | TaskKind::Rust(c) => match &c.payload {
                Some(p) => format!("{}(<{} bytes>)", c.function, p.len()),
                None => format!("{}({})", c.function, c.args),
            },
        }
    }

    pub(crate) fn pool(&self) -> PoolKind {
        match self.kind {
            TaskKind::Command(_) => PoolKind::Command,
            TaskKind::Python(_) => PoolKind::Python,
            TaskKind::Rust(_) => PoolKind::Rust,
        }
    }
}

/// Which pool runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PoolKind {
    Command,
    Python,
    Rust,
}

/// Quote for display the way a POSIX shell would read it back.
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitInfo {
    Code(i32),
    Signal(i32),
}

impl ExitInfo {
    pub fn from_status(status: std::process::ExitStatus) -> ExitInfo {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(sig) = status.signal() {
                return ExitInfo::Signal(sig);
            }
        }
        ExitInfo::Code(status.code().unwrap_or(-1))
    }

    pub fn success(self) -> bool {
        self == ExitInfo::Code(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitInfo::Code(c) => write!(f, "exit code {}", exit_code_text(c)),
            ExitInfo::Signal(s) => write!(f, "signal {s} ({})", signal_name(s)),
        }
    }
}

/// `SIGKILL` for 9 and so on; "unknown" when not a common signal.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "unknown",
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// A command exited with a non-zero code or was killed by a signal.
    Exit { exit: ExitInfo },
    /// Ran past its timeout; the whole process tree was stopped.
    TimedOut { after_ms: u64 },
    /// The watchdog saw it make no progress, and why.
    Hung { after_ms: u64, cause: String },
    /// The Python callable raised.
    Exception {
        type_name: String,
        message: String,
        traceback: String,
    },
    /// The Rust function panicked or returned an error.
    Error { message: String },
    /// The worker process running it died.
    WorkerDied { exit: Option<ExitInfo>, pid: u32 },
    /// It could not be started (program not found, bad cwd, ...).
    Start {
        message: String,
        /// What the system said, where it tells (absent in older
        /// reports: `other`).
        #[serde(default)]
        cause: StartCause,
    },
}

/// Why a task could not start, as a shell would tell (exit 127 or 126).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartCause {
    /// The program does not exist.
    NotFound,
    /// It exists but cannot be executed (no permission, not a program).
    NotExecutable,
    /// Anything else: a missing working directory, no resources, a
    /// worker pool that cannot start, ...
    #[default]
    Other,
}

impl StartCause {
    /// From the error of starting a program.
    pub fn of(e: &std::io::Error) -> StartCause {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ENOEXEC) {
            return StartCause::NotExecutable;
        }
        #[cfg(windows)]
        if e.raw_os_error().is_some_and(windows_not_executable) {
            return StartCause::NotExecutable;
        }
        match e.kind() {
            std::io::ErrorKind::NotFound => StartCause::NotFound,
            std::io::ErrorKind::PermissionDenied => StartCause::NotExecutable,
            _ => StartCause::Other,
        }
    }
}

/// The Win32 errors of `CreateProcess` that a shell reports as "cannot
/// execute" (126): the file exists but is not a program this Windows runs
/// (`ERROR_BAD_EXE_FORMAT`, os error 193, for a script or a Linux binary).
/// Pure, so tested everywhere; used on Windows only.
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) fn windows_not_executable(code: i32) -> bool {
    const ERROR_BAD_FORMAT: i32 = 11;
    const ERROR_INVALID_EXE_SIGNATURE: i32 = 191;
    const ERROR_BAD_EXE_FORMAT: i32 = 193;
    const ERROR_EXE_MARKED_INVALID: i32 = 192;
    const ERROR_EXE_MACHINE_TYPE_MISMATCH: i32 = 216;
    matches!(
        code,
        ERROR_BAD_FORMAT
            | ERROR_INVALID_EXE_SIGNATURE
            | ERROR_EXE_MARKED_INVALID
            | ERROR_BAD_EXE_FORMAT
            | ERROR_EXE_MACHINE_TYPE_MISMATCH
    )
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exit { exit } => write!(f, "{exit}"),
            Failure::TimedOut { after_ms } => {
                write!(f, "timed out after {:.1} s", *after_ms as f64 / 1000.0)
            }
            Failure::Hung { after_ms, cause } => write!(
                f,
                "hung (no progress for {:.1} s): {cause}",
                *after_ms as f64 / 1000.0
            ),
            Failure::Exception {
                type_name, message, ..
            } => write!(f, "{type_name}: {message}"),
            Failure::Error { message } => write!(f, "{message}"),
            Failure::WorkerDied { exit, pid } => match exit {
                Some(e) => write!(f, "worker process {pid} died ({e})"),
                None => write!(f, "worker process {pid} died"),
            },
            Failure::Start { message, .. } => write!(f, "could not start: {message}"),
        }
    }
}

/// What became of a task, once and for all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Commands: exit code 0. Calls: the return value.
    Succeeded { value: serde_json::Value },
    /// The last attempt's failure (earlier ones are in `history`).
    Failed { failure: Failure },
    /// Never finished: cancelled, halted, or the cluster shut down.
    Cancelled { reason: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }
}

/// A task's captured output stream: in memory when small, else in an
/// unnamed temporary file that this value owns.
#[derive(Debug, Default)]
pub enum Output {
    #[default]
    Empty,
    Memory(Vec<u8>),
    File {
        file: File,
        len: u64,
    },
}

impl Output {
    pub fn len(&self) -> u64 {
        match self {
            Output::Empty => 0,
            Output::Memory(v) => v.len() as u64,
            Output::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy the whole output to `out`.
    pub fn write_to(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<u64> {
        match self {
            Output::Empty => Ok(0),
            Output::Memory(v) => out.write_all(v).map(|_| v.len() as u64),
            Output::File { file, .. } => {
                file.seek(SeekFrom::Start(0))?;
                std::io::copy(file, out)
            }
        }
    }

    /// The whole output as bytes (reads a spilled file into memory).
    pub fn to_bytes(&mut self) -> std::io::Result<Vec<u8>> {
        match self {
            Output::Empty => Ok(Vec::new()),
            Output::Memory(v) => Ok(v.clone()),
            Output::File { file, .. } => {
                file.seek(SeekFrom::Start(0))?;
                let mut v = Vec::new();
                file.read_to_end(&mut v)?;
                Ok(v)
            }
        }
    }

    /// The output as text, lossily (convenient for small outputs).
    pub fn to_string_lossy(&mut self) -> String {
        String::from_utf8_lossy(&self.to_bytes().unwrap_or_default()).into_owned()
    }
}

/// The one result of one task.
pub struct TaskResult {
    pub id: TaskId,
    pub outcome: Outcome,
    /// Attempts made (0 when it never started).
    pub attempts: u32,
    /// Failures of the attempts before the last one.
    pub history: Vec<Failure>,
    /// When the last attempt started.
    pub started: Option<SystemTime>,
    /// How long the last attempt ran.
    pub runtime: Duration,
    /// The last attempt's exit (commands).
    pub exit: Option<ExitInfo>,
    /// The process that ran the last attempt.
    pub pid: Option<u32>,
    /// The worker slot (1-based, `{%}` in GNU parallel).
    pub slot: Option<usize>,
    pub stdout: Output,
    pub stderr: Output,
    /// The bytes a call returned: the pickled return value of a
    /// [`Task::python_pickled`], the result of a [`Task::rust_bytes`]
    /// (their value is then `null`).
    pub payload: Option<Vec<u8>>,
}

impl fmt::Debug for TaskResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskResult")
            .field("id", &self.id)
            .field("outcome", &self.outcome)
            .field("attempts", &self.attempts)
            .field("history", &self.history)
            .field("started", &self.started)
            .field("runtime", &self.runtime)
            .field("exit", &self.exit)
            .field("pid", &self.pid)
            .field("slot", &self.slot)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field(
                "payload",
                &self.payload.as_ref().map(|p| ByteCount(p.len())),
            )
            .finish()
    }
}

impl TaskResult {
    /// A result with nothing but its outcome (a task that never ran, or
    /// one whose details are filled in by the caller).
    pub(crate) fn bare(id: TaskId, outcome: Outcome) -> TaskResult {
        TaskResult {
            id,
            outcome,
            attempts: 0,
            history: Vec::new(),
            started: None,
            runtime: Duration::ZERO,
            exit: None,
            pid: None,
            slot: None,
            stdout: Output::Empty,
            stderr: Output::Empty,
            payload: None,
        }
    }

    /// The bytes a call returned (see [`TaskResult::payload`]), when it
    /// succeeded with bytes.
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    /// Take the returned bytes out of the result, without copying them.
    pub fn take_payload(&mut self) -> Option<Vec<u8>> {
        self.payload.take()
    }

    /// The value a call returned, or `None` when it did not succeed.
    pub fn value(&self) -> Option<&serde_json::Value> {
        match &self.outcome {
            Outcome::Succeeded { value } => Some(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_exe_format_is_not_executable_on_windows() {
        assert!(windows_not_executable(193));
        assert!(windows_not_executable(216));
        assert!(!windows_not_executable(2)); // ERROR_FILE_NOT_FOUND
        assert!(!windows_not_executable(5)); // ERROR_ACCESS_DENIED: by its kind
        #[cfg(windows)]
        assert_eq!(
            StartCause::of(&std::io::Error::from_raw_os_error(193)),
            StartCause::NotExecutable
        );
    }

    #[test]
    fn windows_crash_codes_show_their_ntstatus() {
        let e = ExitInfo::Code(0xC000_0005_u32 as i32);
        assert_eq!(
            e.to_string(),
            "exit code 0xC0000005 (STATUS_ACCESS_VIOLATION)"
        );
        assert_eq!(ExitInfo::Code(3).to_string(), "exit code 3");
    }
}
