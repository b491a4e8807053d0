//! The reporter of a map: everything the user sees while it runs and when
//! it ends. Each job's output (through the [`Printer`]), the progress bar,
//! the notes about the run (Ctrl-C, halts, the cluster's notices), the
//! summary line, and the exit status as GNU parallel defines it.
//!
//! The texts and the exit status are plain functions of the run's
//! [`Tally`], so they can be checked without running anything.

use std::fmt::Display;

use caiclust_core::{HaltPolicy, HaltTrigger, Threshold};
use colored::Colorize as _;

use super::dispatch::{HaltFacts, Halting, Stop, Tally};
use super::output::{Finished, Printer};
use super::progress::{BarMode, Progress};
use super::{ERROR_EXIT, INTERRUPTED_EXIT};

/// Prints the jobs' output, the progress bar and the notes about the run.
pub struct Reporter {
    printer: Printer,
    progress: Progress,
}

impl Reporter {
    /// For `total` jobs: the bar as `mode` says, output grouped per job,
    /// `--tag`ged and in input order (`--keep-order`) as asked.
    pub fn new(mode: BarMode, total: u64, tag: bool, keep_order: bool) -> Reporter {
        Reporter {
            printer: Printer::new(tag, keep_order),
            progress: Progress::new(mode, total),
        }
    }

    /// A job was handed out (its output's turn comes in this order).
    pub fn submitted(&mut self, seq: u64) {
        self.printer.submitted(seq);
    }

    /// Has standard output gone away (`| head`)?
    pub fn stdout_closed(&self) -> bool {
        self.printer.stdout_closed()
    }

    /// A line on standard error, with the bar out of the way.
    pub fn say(&self, line: impl Display) {
        self.progress.suspend(|| eprintln!("{line}"));
    }

    /// A job ended without a result (cancelled): nothing to print, but
    /// jobs held back behind it (`--keep-order`) may go now.
    pub fn cancelled(&mut self, seq: u64) {
        self.printer.finished(seq, None, &self.progress);
    }

    /// A job finished (`ok`: it succeeded): count it and print it.
    pub fn finished(&mut self, job: Finished, ok: bool) {
        self.progress.job_done(!ok);
        self.printer.finished(job.seq, Some(job), &self.progress);
    }

    /// The run is about to wait: print what has gathered.
    pub fn waiting(&mut self) {
        self.printer.flush(&self.progress);
    }

    /// No more results: print everything held back and leave the bar.
    pub fn close(&mut self) {
        self.printer.drain(&self.progress);
        self.progress.finish();
    }

    /// The summary line (when there is one to print) and the exit status.
    pub fn conclude(self, tally: &Tally, halt: Option<&HaltPolicy>, joblog: bool) -> u8 {
        if let Some(line) = summary(tally, self.progress.is_shown(), joblog) {
            eprintln!("{line}");
        }
        exit_status(tally, halt)
    }
}

/// `--bar`, `--no-bar`, or neither (when standard error is a terminal).
pub fn bar_mode(bar: bool, no_bar: bool) -> BarMode {
    if no_bar {
        BarMode::Off
    } else if bar {
        BarMode::On
    } else {
        BarMode::Auto
    }
}

/// The summary of the run: after failures, jobs not run, or a bar (which
/// it ends with the numbers); `None` after a quiet, complete run.
pub fn summary(tally: &Tally, bar_shown: bool, joblog: bool) -> Option<String> {
    let Tally {
        total,
        succeeded,
        failed,
        cancelled,
        stop,
        ..
    } = *tally;
    let not_run = tally.not_run();
    if failed == 0 && not_run == 0 && !bar_shown {
        return None;
    }
    let mut s = format!(
        "caiclust: {total} job{}: {succeeded} succeeded, {}",
        if total == 1 { "" } else { "s" },
        if failed > 0 {
            format!("{failed} failed").red().bold().to_string()
        } else {
            "0 failed".to_string()
        }
    );
    if not_run > 0 {
        s.push_str(&format!(", {not_run} not run"));
        s.push_str(match stop {
            Some(Stop::Interrupted) => " (interrupted)",
            Some(Stop::Halted) => " (halted)",
            Some(Stop::OutputClosed) => " (standard output was closed)",
            Some(Stop::JoblogFailed) => " (the job log could not be written)",
            None => "",
        });
        if cancelled > 0 {
            s.push_str(&format!(", {cancelled} of them stopped while running"));
        }
        if joblog {
            s.push_str("; --resume runs them");
        }
    }
    Some(s)
}

/// The exit status, as GNU parallel: 255 when the job log could not be
/// written, 130 after Ctrl-C; after a halt as [`halt_status`] says; with a
/// percentage halt policy that did not trigger, the failed percentage of
/// the jobs that ended (rounded up); else the number of failures (at most
/// 101).
pub fn exit_status(tally: &Tally, halt: Option<&HaltPolicy>) -> u8 {
    match tally.stop {
        Some(Stop::JoblogFailed) => ERROR_EXIT,
        Some(Stop::Interrupted) => INTERRUPTED_EXIT,
        _ => match (tally.halted, halt.map(|h| h.trigger)) {
            (Some(facts), _) => halt_status(&facts, tally.total),
            (
                None,
                Some(
                    HaltTrigger::Failures(Threshold::Percent(_))
                    | HaltTrigger::Done(Threshold::Percent(_)),
                ),
            ) => percent_failed(tally.failed, tally.ended()),
            (None, _) => failures_status(tally.failed),
        },
    }
}

/// GNU parallel's exit status after a halt: with `fail=1` (or `done=1`)
/// the job's own, with a percentage the failed share of all `total` jobs
/// rounded up, with a count the failures (at most 101), 0 when halted on
/// successes.
pub fn halt_status(facts: &HaltFacts, total: u64) -> u8 {
    match facts.trigger {
        HaltTrigger::Failures(Threshold::Count(1)) | HaltTrigger::Done(Threshold::Count(1)) => {
            facts.job_status
        }
        HaltTrigger::Failures(Threshold::Percent(_)) | HaltTrigger::Done(Threshold::Percent(_)) => {
            percent_failed(facts.failed, total)
        }
        HaltTrigger::Successes(_) => 0,
        _ => failures_status(facts.failed),
    }
}

/// 0, the number of failures up to 100, or 101.
pub fn failures_status(failed: u64) -> u8 {
    failed.min(101) as u8
}

/// `failed` as a percentage of `of`, rounded up, at most 100.
fn percent_failed(failed: u64, of: u64) -> u8 {
    (failed * 100).div_ceil(of.max(1)).min(100) as u8
}

/// After the first Ctrl-C.
pub fn interrupted_text(running: usize) -> String {
    format!(
        "caiclust: interrupted: starting no more jobs, waiting for the {running} running (Ctrl-C again stops them)"
    )
}

/// After the second Ctrl-C.
pub fn stopping_text(running: usize) -> String {
    format!("caiclust: stopping the {running} running jobs")
}

/// When `--halt POLICY` triggers.
pub fn halting_text(policy: &str, halting: &Halting) -> String {
    format!(
        "caiclust: halting (--halt {policy}): starting no more jobs{}",
        match (halting.now, halting.others) {
            (_, 0) => String::new(),
            (true, n) => format!(", stopping the {n} running"),
            (false, n) => format!(", waiting for the {n} running"),
        }
    )
}

/// One of the cluster's notices, about job `seq` when it names one.
pub fn note_text(seq: Option<u64>, message: &str) -> String {
    match seq {
        Some(seq) => format!("caiclust: note: job {seq}: {message}"),
        None => format!("caiclust: note: {message}"),
    }
}

/// When a job-log line cannot be written.
pub fn joblog_failed_text(error: impl Display) -> String {
    format!("caiclust map: error: writing the job log {error}; starting no more jobs")
}
