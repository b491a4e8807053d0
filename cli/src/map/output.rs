//! What a finished job prints, as GNU parallel's `--group`: its standard
//! output to ours and its standard error to ours, each in one piece after
//! the job ends (streamed from the core's files, never read whole), then,
//! when it failed, one line saying why. `--keep-order` holds jobs back
//! until those before them have printed; `--tag` puts the job's inputs and
//! a tab before every line. Python calls print one JSON line each.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;

use caiclust_core::task::{exit_code_text, signal_name};
use caiclust_core::{ExitInfo, Failure, Outcome, TaskResult};
use colored::Colorize as _;

use super::progress::Progress;

/// A job that ended, with what is needed to report it.
#[derive(Debug)]
pub struct Finished {
    pub seq: u64,
    /// The inputs joined by spaces (the `--tag` text).
    pub tag: String,
    /// The command line, as logged.
    pub command: String,
    /// For Python calls: the inputs as JSON (the `input` of the result
    /// line).
    pub call_input: Option<serde_json::Value>,
    pub result: TaskResult,
}

/// Prints finished jobs, in completion or input order.
pub struct Printer {
    tag: bool,
    keep_order: bool,
    /// Jobs submitted and not printed yet, in input order (keep-order).
    order: VecDeque<u64>,
    held: BTreeMap<u64, Option<Finished>>,
    stdout_closed: bool,
    /// Result lines of Python calls not written yet: written together when
    /// the run would wait (see [`Printer::flush`]), when 64 KiB gather, or
    /// before anything else is printed, so order is kept.
    lines: Vec<u8>,
}

/// Result lines gathered before they are written anyway.
const LINES_BUFFER: usize = 64 * 1024;

impl Printer {
    pub fn new(tag: bool, keep_order: bool) -> Printer {
        Printer {
            tag,
            keep_order,
            order: VecDeque::new(),
            held: BTreeMap::new(),
            stdout_closed: false,
            lines: Vec::new(),
        }
    }

    /// A job was submitted (its turn comes in this order).
    pub fn submitted(&mut self, seq: u64) {
        if self.keep_order {
            self.order.push_back(seq);
        }
    }

    /// Has standard output gone away (`| head`)?
    pub fn stdout_closed(&self) -> bool {
        self.stdout_closed
    }

    /// A job ended (`None`: it ended without anything to print, e.g.
    /// cancelled). Prints it and whatever it was holding back.
    pub fn finished(&mut self, seq: u64, job: Option<Finished>, progress: &Progress) {
        if !self.keep_order {
            if let Some(j) = job {
                progress.suspend(|| self.emit(j));
            }
            return;
        }
        self.held.insert(seq, job);
        while let Some(&next) = self.order.front() {
            let Some(job) = self.held.remove(&next) else {
                break;
            };
            self.order.pop_front();
            if let Some(j) = job {
                progress.suspend(|| self.emit(j));
            }
        }
    }

    /// Print everything still held, in order (the run is over).
    pub fn drain(&mut self, progress: &Progress) {
        let held = std::mem::take(&mut self.held);
        self.order.clear();
        for (_, job) in held {
            if let Some(j) = job {
                progress.suspend(|| self.emit(j));
            }
        }
        self.flush(progress);
    }

    /// Write the gathered result lines (the run is about to wait).
    pub fn flush(&mut self, progress: &Progress) {
        if !self.lines.is_empty() {
            progress.suspend(|| self.write_lines());
        }
    }

    fn write_lines(&mut self) {
        let lines = std::mem::take(&mut self.lines);
        self.write_stdout(&lines);
        // Keep the buffer's room for the next lines.
        self.lines = lines;
        self.lines.clear();
    }

    fn emit(&mut self, mut job: Finished) {
        let tag = self.tag.then(|| format!("{}\t", job.tag));
        let report = failure_report(&job);
        if let Some(input) = job.call_input.take() {
            let line = call_line(&job, input);
            if !self.stdout_closed {
                self.lines
                    .extend_from_slice(tag.as_deref().unwrap_or("").as_bytes());
                self.lines.extend_from_slice(line.as_bytes());
                self.lines.push(b'\n');
            }
            if self.lines.len() >= LINES_BUFFER {
                self.write_lines();
            }
        } else if !job.result.stdout.is_empty() && !self.stdout_closed {
            self.write_lines();
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            let r = match &tag {
                Some(t) => {
                    let mut w = Tagged::new(&mut lock, t.as_bytes());
                    job.result.stdout.write_to(&mut w).and_then(|_| w.finish())
                }
                None => job.result.stdout.write_to(&mut lock).map(|_| ()),
            };
            if r.and_then(|_| lock.flush()).is_err() {
                self.stdout_closed = true;
            }
        }
        if job.result.stderr.is_empty() && report.is_none() {
            return;
        }
        // Whatever was printed before comes first.
        self.write_lines();
        let stderr = std::io::stderr();
        let mut err = stderr.lock();
        if !job.result.stderr.is_empty() {
            let _ = match &tag {
                Some(t) => {
                    let mut w = Tagged::new(&mut err, t.as_bytes());
                    job.result.stderr.write_to(&mut w).and_then(|_| w.finish())
                }
                None => job.result.stderr.write_to(&mut err).map(|_| ()),
            };
        }
        if let Some(text) = report {
            let _ = err.write_all(text.as_bytes());
        }
        let _ = err.flush();
    }

    fn write_stdout(&mut self, bytes: &[u8]) {
        if self.stdout_closed || bytes.is_empty() {
            return;
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        if lock.write_all(bytes).and_then(|_| lock.flush()).is_err() {
            self.stdout_closed = true;
        }
    }
}

/// The JSON line of a Python call's result: `seq`, `input`, then `value`,
/// `error` (the failure, with its `kind`) or `cancelled`.
fn call_line(job: &Finished, input: serde_json::Value) -> String {
    let (key, value) = match &job.result.outcome {
        Outcome::Succeeded { value } => ("value", value.clone()),
        Outcome::Failed { failure } => (
            "error",
            serde_json::to_value(failure).unwrap_or(serde_json::Value::Null),
        ),
        Outcome::Cancelled { reason } => ("cancelled", reason.clone().into()),
    };
    format!(
        "{{\"seq\":{},\"input\":{input},\"{key}\":{value}}}",
        job.seq
    )
}

/// How a failure reads in a sentence after "job N".
pub fn describe_failure(f: &Failure) -> String {
    match f {
        Failure::Exit {
            exit: ExitInfo::Code(c),
        } => format!("failed with exit code {}", exit_code_text(*c)),
        Failure::Exit {
            exit: ExitInfo::Signal(s),
        } => format!("was killed by signal {s} ({})", signal_name(*s)),
        Failure::TimedOut { after_ms } => format!(
            "timed out after {:.1} s and was stopped with its child processes",
            *after_ms as f64 / 1000.0
        ),
        Failure::Hung { after_ms, cause } => format!(
            "hung (no progress for {:.1} s) and was stopped: {cause}",
            *after_ms as f64 / 1000.0
        ),
        Failure::Exception {
            type_name, message, ..
        } => format!("raised {type_name}: {message}"),
        Failure::Error { message } => format!("failed: {message}"),
        Failure::WorkerDied { exit, pid } => match exit {
            Some(e) => format!("lost its worker: process {pid} died ({e})"),
            None => format!("lost its worker: process {pid} died"),
        },
        Failure::Start { message, .. } => format!("could not start: {message}"),
    }
}

/// The lines (with newline) saying why a job failed; `None` when it did
/// not.
pub fn failure_report(job: &Finished) -> Option<String> {
    let Outcome::Failed { failure } = &job.result.outcome else {
        return None;
    };
    let mut s = format!(
        "caiclust: job {} {}",
        job.seq,
        describe_failure(failure).red().bold()
    );
    if job.result.attempts > 1 {
        let earlier: Vec<String> = job.result.history.iter().map(describe_failure).collect();
        s.push_str(&format!(
            " (attempt {}; before: {})",
            job.result.attempts,
            earlier.join("; ")
        ));
    }
    s.push_str(&format!(": {}\n", job.command));
    match failure {
        Failure::Exception { traceback, .. } if !traceback.trim().is_empty() => {
            for line in traceback.trim_end().lines() {
                s.push_str("    ");
                s.push_str(line);
                s.push('\n');
            }
        }
        Failure::Start { .. } => {
            let program = job.command.split(' ').next().unwrap_or("");
            if program.starts_with('\'') {
                s.push_str(
                    "    (commands run without a shell: for pipes, redirections or a command line in one argument, use --shell)\n",
                );
            }
        }
        _ => {}
    }
    Some(s)
}

/// Puts a tag before every line written through it.
struct Tagged<'a> {
    inner: &'a mut dyn Write,
    tag: &'a [u8],
    at_line_start: bool,
}

impl<'a> Tagged<'a> {
    fn new(inner: &'a mut dyn Write, tag: &'a [u8]) -> Tagged<'a> {
        Tagged {
            inner,
            tag,
            at_line_start: true,
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Write for Tagged<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.at_line_start {
                self.inner.write_all(self.tag)?;
                self.at_line_start = false;
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.inner.write_all(&rest[..=i])?;
                    self.at_line_start = true;
                    rest = &rest[i + 1..];
                }
                None => {
                    self.inner.write_all(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_every_line_across_writes() {
        let mut out = Vec::new();
        {
            let mut w = Tagged::new(&mut out, b"a 1\t");
            w.write_all(b"one\ntw").unwrap();
            w.write_all(b"o\n\nthree").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a 1\tone\na 1\ttwo\na 1\t\na 1\tthree"
        );
    }

    #[test]
    fn failures_read_as_sentences() {
        assert_eq!(
            describe_failure(&Failure::Exit {
                exit: ExitInfo::Signal(9)
            }),
            "was killed by signal 9 (SIGKILL)"
        );
        assert!(describe_failure(&Failure::TimedOut { after_ms: 1500 }).contains("1.5 s"));
    }
}
