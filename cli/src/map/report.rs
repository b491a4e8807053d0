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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::options::parse_halt;

    fn tally(total: u64, succeeded: u64, failed: u64) -> Tally {
        Tally {
            total,
            succeeded,
            failed,
            ..Tally::default()
        }
    }

    fn halted(trigger: &str, job_status: u8, failed: u64) -> Option<HaltFacts> {
        Some(HaltFacts {
            trigger: parse_halt(trigger).expect("a valid policy").trigger,
            job_status,
            failed,
        })
    }

    #[test]
    fn a_quiet_complete_run_has_no_summary_unless_the_bar_was_shown() {
        assert_eq!(summary(&tally(3, 3, 0), false, true), None);
        assert_eq!(
            summary(&tally(3, 3, 0), true, true).as_deref(),
            Some("caiclust: 3 jobs: 3 succeeded, 0 failed")
        );
        assert_eq!(
            summary(&tally(1, 1, 0), true, false).as_deref(),
            Some("caiclust: 1 job: 1 succeeded, 0 failed")
        );
    }

    #[test]
    fn the_summary_says_what_failed_and_what_did_not_run_and_why() {
        let line = summary(&tally(4, 3, 1), false, false).expect("a failure is summed up");
        assert!(
            line.starts_with("caiclust: 4 jobs: 3 succeeded, "),
            "{line}"
        );
        assert!(
            line.contains("1 failed") && !line.contains("not run"),
            "{line}"
        );

        let t = Tally {
            cancelled: 2,
            stop: Some(Stop::Halted),
            ..tally(10, 2, 1)
        };
        let line = summary(&t, false, true).expect("a summary");
        assert!(
            line.ends_with(
                ", 7 not run (halted), 2 of them stopped while running; --resume runs them"
            ),
            "{line}"
        );
        let reasons = [
            (Stop::Interrupted, "(interrupted)"),
            (Stop::OutputClosed, "(standard output was closed)"),
            (Stop::JoblogFailed, "(the job log could not be written)"),
        ];
        for (stop, reason) in reasons {
            let t = Tally {
                stop: Some(stop),
                ..tally(5, 1, 0)
            };
            let line = summary(&t, false, false).expect("jobs not run");
            assert!(line.ends_with(&format!(", 4 not run {reason}")), "{line}");
        }
    }

    #[test]
    fn exit_status_counts_failures_like_gnu_parallel() {
        assert_eq!(failures_status(0), 0);
        assert_eq!(failures_status(7), 7);
        assert_eq!(failures_status(100), 100);
        assert_eq!(failures_status(101), 101);
        assert_eq!(failures_status(150), 101);
        assert_eq!(exit_status(&tally(10, 10, 0), None), 0);
        assert_eq!(exit_status(&tally(10, 7, 3), None), 3);
        assert_eq!(exit_status(&tally(300, 100, 200), None), 101);
        // A policy that never triggered does not change the count...
        let count = parse_halt("soon,fail=5").ok();
        assert_eq!(exit_status(&tally(10, 7, 3), count.as_ref()), 3);
        // ... a percentage makes it the failed share of the jobs that
        // ended, rounded up.
        let percent = parse_halt("soon,fail=50%").ok();
        assert_eq!(exit_status(&tally(10, 7, 3), percent.as_ref()), 30);
        assert_eq!(exit_status(&tally(3, 2, 1), percent.as_ref()), 34);
        assert_eq!(exit_status(&tally(0, 0, 0), percent.as_ref()), 0);
    }

    #[test]
    fn exit_status_after_a_halt_is_gnu_parallels() {
        let after = |trigger: &str, status: u8, failed_then: u64| {
            let t = Tally {
                stop: Some(Stop::Halted),
                halted: halted(trigger, status, failed_then),
                ..tally(10, 2, failed_then + 1)
            };
            exit_status(&t, None)
        };
        // fail=1 and done=1: the status of the job that halted the run.
        assert_eq!(after("now,fail=1", 42, 1), 42);
        assert_eq!(after("soon,done=1", 0, 0), 0);
        // A count: the failures when it halted (not those after).
        assert_eq!(after("soon,fail=3", 9, 3), 3);
        // A percentage: of all the jobs, rounded up.
        assert_eq!(after("now,fail=20%", 1, 3), 30);
        assert_eq!(after("now,done=10%", 1, 1), 10);
        // On successes: 0.
        assert_eq!(after("now,success=1", 7, 2), 0);
    }

    #[test]
    fn ctrl_c_and_a_lost_job_log_win_over_everything() {
        let t = Tally {
            stop: Some(Stop::Interrupted),
            ..tally(10, 2, 3)
        };
        assert_eq!(exit_status(&t, None), INTERRUPTED_EXIT);
        let t = Tally {
            stop: Some(Stop::JoblogFailed),
            halted: halted("now,fail=1", 4, 1),
            ..tally(10, 0, 1)
        };
        assert_eq!(exit_status(&t, None), ERROR_EXIT);
        let t = Tally {
            stop: Some(Stop::OutputClosed),
            ..tally(10, 2, 3)
        };
        assert_eq!(exit_status(&t, None), 3);
    }

    #[test]
    fn notes_name_the_job_and_the_halt() {
        let soon = Halting {
            now: false,
            others: 2,
            cancel: Vec::new(),
        };
        assert_eq!(
            halting_text("soon,fail=1", &soon),
            "caiclust: halting (--halt soon,fail=1): starting no more jobs, waiting for the 2 running"
        );
        let now = Halting {
            now: true,
            others: 3,
            cancel: vec![1, 2, 3],
        };
        assert!(halting_text("2", &now).ends_with(", stopping the 3 running"));
        let alone = Halting {
            now: true,
            others: 0,
            cancel: Vec::new(),
        };
        assert!(halting_text("2", &alone).ends_with("starting no more jobs"));
        assert_eq!(note_text(Some(4), "slow"), "caiclust: note: job 4: slow");
        assert_eq!(note_text(None, "slow"), "caiclust: note: slow");
        assert!(interrupted_text(3).contains("waiting for the 3 running"));
        assert_eq!(stopping_text(2), "caiclust: stopping the 2 running jobs");
        assert_eq!(bar_mode(true, false), BarMode::On);
        assert_eq!(bar_mode(false, true), BarMode::Off);
        assert_eq!(bar_mode(false, false), BarMode::Auto);
    }
}
