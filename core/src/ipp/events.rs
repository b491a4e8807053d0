//! What the backend reports: its events ([`IppEvent`]), its errors
//! ([`IppError`]) with the engines that failed to start, and what a stop
//! did.

use std::fmt;
use std::path::PathBuf;

use crate::task::{TaskId, TaskResult};

/// Why the backend could not start or stopped working.
#[derive(Debug, thiserror::Error)]
pub enum IppError {
    #[error("bad ipyparallel backend configuration: {0}")]
    Config(String),
    #[error("cannot start the ipyparallel driver with {}: {source}", .python.display())]
    Spawn {
        python: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("probing {} for the recommended environment failed: {message}", .python.display())]
    Probe { python: PathBuf, message: String },
    #[error("{}", startup_text(.message, .engines, .log))]
    Startup {
        message: String,
        /// The engines that did not register, and what became of them.
        engines: Vec<EngineFailure>,
        /// The last lines the driver wrote to its standard error.
        log: String,
    },
    #[error("cannot create the run folder in {}: {source}", .dir.display())]
    RunDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the ipyparallel driver is gone: {0}")]
    Driver(String),
}

fn startup_text(message: &str, engines: &[EngineFailure], log: &str) -> String {
    let mut s = format!("the ipyparallel cluster did not start: {message}");
    for e in engines {
        s.push_str(&format!("\n  {e}"));
    }
    if engines.iter().all(|e| e.output.trim().is_empty()) && !log.trim().is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        s.push_str("\n  driver log:");
        for line in tail.iter().rev() {
            s.push_str(&format!("\n    {line}"));
        }
    }
    s
}

/// An engine that did not register.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineFailure {
    /// The launcher's name for it (`0`, `1`, ... for local engine sets).
    pub engine: String,
    pub pid: Option<u32>,
    /// `exited`, or `running, not registered`.
    pub state: String,
    pub exit_code: Option<i64>,
    /// The last lines of its log.
    pub output: String,
}

impl fmt::Display for EngineFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "engine {}", self.engine)?;
        if let Some(pid) = self.pid {
            write!(f, " (pid {pid})")?;
        }
        write!(f, ": {}", self.state)?;
        if let Some(c) = self.exit_code {
            write!(f, " (exit code {c})")?;
        }
        let out = self.output.trim();
        if !out.is_empty() {
            let lines: Vec<&str> = out.lines().rev().take(12).collect();
            write!(f, "; its output ends:")?;
            for line in lines.iter().rev() {
                write!(f, "\n      {line}")?;
            }
        }
        Ok(())
    }
}

/// A registered engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// ipyparallel's engine id.
    pub id: u32,
    pub pid: u32,
    pub host: String,
}

/// What the backend reports.
#[derive(Debug)]
pub enum IppEvent {
    /// The one result of a task.
    Result(TaskResult),
    /// An engine registered (at startup, or a replacement).
    EngineStarted(EngineInfo),
    /// A task began running on an engine (as soon as the driver saw it;
    /// a task that ends quickly may have no such event).
    Started {
        id: TaskId,
        engine: Option<u32>,
        pid: Option<u32>,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// An engine went away; `tasks` were running on it (they are retried
    /// or reported). `expected`: caiclust stopped it (timeout, cancel).
    EngineDied {
        engine: u32,
        pid: Option<u32>,
        host: Option<String>,
        tasks: Vec<TaskId>,
        reason: String,
        expected: bool,
    },
    /// Something worth telling: a retry, an engine stopped for a timeout.
    Notice {
        task: Option<TaskId>,
        message: String,
    },
    /// The driver ended while the backend was in use; every task still
    /// outstanding got a failed result just before.
    DriverExited { message: String },
}

/// What a stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// The driver stopped the cluster itself and confirmed it.
    pub clean: bool,
    /// Processes caiclust had to kill itself.
    pub killed: Vec<u32>,
}
