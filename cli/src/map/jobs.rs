//! What each job runs: a command (argument vector or shell line) built
//! from the template and the job's inputs, or a Python call with the
//! inputs as arguments; and how its end reads in the job log.

use caiclust_core::{ExitInfo, Failure, Outcome, StartCause, Task, TaskResult};
use serde_json::Value;

use super::inputs::Source;
use super::joblog::Entry;
use super::placeholders::{Template, Values};
use super::MapError;

/// The kind of work every job of a map does.
#[derive(Debug, Clone)]
pub enum Work {
    /// The template's words as the argument vector (no shell).
    Argv(Template),
    /// The template as a shell command line, values quoted.
    Shell(Template),
    /// No command: the inputs (joined by spaces) are the command line.
    InputIsCommand,
    /// A Python function; with `json`, each input is parsed as JSON.
    Call {
        function: String,
        json: Option<Vec<Vec<Value>>>,
    },
}

/// What one job of the map is.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub task: Task,
    /// The command line as the job log records it.
    pub command: String,
    /// For calls: the inputs as JSON (the `input` of its result line).
    pub call_input: Option<Value>,
}

impl Work {
    /// Parse every input as JSON up front (for `--json-args`), naming the
    /// file and line of the first that is not.
    pub fn parse_json_inputs(sources: &[Source]) -> Result<Vec<Vec<Value>>, MapError> {
        sources
            .iter()
            .map(|s| {
                s.values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        serde_json::from_str(v).map_err(|e| MapError::Input {
                            what: s.locate(i),
                            message: format!("not JSON ({e}): {v}"),
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// The job for the inputs `row` (an index into each source), numbered
    /// `seq`, in `slot`, of `total`.
    pub fn prepare(
        &self,
        sources: &[Source],
        row: &[usize],
        seq: u64,
        slot: usize,
        total: u64,
    ) -> Prepared {
        let args: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(s, &i)| sources[s].values[i].clone())
            .collect();
        let values = Values {
            args: &args,
            seq,
            slot,
            total,
        };
        match self {
            Work::Argv(t) => {
                let task = Task::command(t.argv(&values));
                let command = task.describe();
                Prepared {
                    task,
                    command,
                    call_input: None,
                }
            }
            Work::Shell(t) => shell(t.shell(&values)),
            Work::InputIsCommand => shell(args.join(" ")),
            Work::Call { function, json } => {
                let input: Vec<Value> = match json {
                    None => args.iter().map(|a| Value::String(a.clone())).collect(),
                    Some(json) => row
                        .iter()
                        .enumerate()
                        .map(|(s, &i)| json[s][i].clone())
                        .collect(),
                };
                let (call_args, input) = match <[Value; 1]>::try_from(input) {
                    // One source: the value itself is the argument(s).
                    Ok([one]) => (one.clone(), one),
                    // Several: one positional argument each.
                    Err(many) => (Value::Array(many.clone()), Value::Array(many)),
                };
                let task = Task::python(function.clone(), call_args);
                let command = task.describe();
                Prepared {
                    task,
                    command,
                    call_input: Some(input),
                }
            }
        }
    }
}

fn shell(line: String) -> Prepared {
    #[cfg(unix)]
    let task = Task::command(["sh".to_string(), "-c".to_string(), line.clone()]);
    #[cfg(not(unix))]
    let task = Task::command(["cmd".to_string(), "/C".to_string(), line.clone()]);
    Prepared {
        task,
        command: line,
        call_input: None,
    }
}

/// `Exitval` and `Signal` for the job log, as GNU parallel writes them:
/// a signal leaves the exit value 0; a job stopped for its timeout has
/// exit value -1; a command that could not start reads as the shell's 127
/// (not found) or 126 (not executable); a Python exception as 1. `None`
/// for a job that never finished (cancelled), which is not logged.
pub fn log_status(r: &TaskResult) -> Option<(i64, i64)> {
    let from_exit = |e: ExitInfo| match e {
        ExitInfo::Code(c) => (i64::from(c), 0),
        ExitInfo::Signal(s) => (0, i64::from(s)),
    };
    Some(match &r.outcome {
        Outcome::Succeeded { .. } => (0, 0),
        Outcome::Cancelled { .. } => return None,
        Outcome::Failed { failure } => match failure {
            Failure::Exit { exit } => match from_exit(*exit) {
                (0, 0) => (1, 0),
                other => other,
            },
            // A timeout logs signal 15 on Windows too, as GNU parallel
            // does there: it runs only under Cygwin or MSYS2, where its
            // --termseq TERM reaches the job's process through the Cygwin
            // process emulation, which ends a native Windows program
            // (TerminateProcess) and reports to parallel, through waitpid,
            // a death by SIGTERM. So the log reads the same on every OS;
            // the TerminateProcess exit code (ExitInfo::Code) is not used.
            Failure::TimedOut { .. } | Failure::Hung { .. } => (
                -1,
                match r.exit {
                    Some(ExitInfo::Signal(s)) => i64::from(s),
                    _ => 15,
                },
            ),
            Failure::Exception { .. } | Failure::Error { .. } => (1, 0),
            Failure::WorkerDied { exit, .. } => match exit.map(from_exit) {
                Some((0, 0)) | None => (-1, 0),
                Some(other) => other,
            },
            Failure::Start { cause, .. } => match cause {
                StartCause::NotExecutable => (126, 0),
                StartCause::NotFound | StartCause::Other => (127, 0),
            },
        },
    })
}

/// The job-log line for a finished job.
pub fn log_entry(seq: u64, r: &TaskResult, command: &str) -> Option<Entry> {
    let (exitval, signal) = log_status(r)?;
    let started = r
        .started
        .unwrap_or_else(|| std::time::SystemTime::now() - r.runtime);
    Some(Entry {
        seq,
        host: ":".into(),
        starttime: Entry::epoch_seconds(started),
        runtime: r.runtime.as_secs_f64(),
        send: 0,
        receive: r.stdout.len(),
        exitval,
        signal,
        command: command.to_string(),
    })
}

/// The exit status GNU parallel gives with `--halt ...,fail=1`: that of
/// the job that ended the run (128 + N for signal N, 1 when a failure has
/// neither).
pub fn exit_status_of(r: &TaskResult) -> u8 {
    match log_status(r) {
        Some((0, 0)) => 0,
        Some((c, 0)) if (1..=255).contains(&c) => c as u8,
        Some((_, s)) if (1..=127).contains(&s) => 128 + s as u8,
        _ => 1,
    }
}
