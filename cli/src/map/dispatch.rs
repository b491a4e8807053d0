//! The dispatch state machine of a map: which job starts next and in which
//! slot, when the cluster's window of handed-out jobs is refilled, and when
//! the run stops starting jobs (a halt, Ctrl-C, a closed standard output,
//! a job log that cannot be written) or stops the running ones too.
//!
//! It does no I/O. The driver ([`super::runner`]) tells it what happened
//! (a result, the number of Ctrl-Cs so far, a closed output, a failed
//! job-log write) and carries out what it answers: the jobs to prepare and
//! submit, the tasks to withdraw or cancel, what to announce. At the end,
//! its [`Tally`] is what the reporter sums up and turns into the exit
//! status.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use caiclust_core::{HaltPolicy, HaltTrigger, HaltWhen, Outcome, TaskId, TaskResult};

use super::jobs;

/// Python calls handed to the cluster ahead, per worker: four of its
/// largest batches (two in the worker, two queued).
pub const CALLS_AHEAD_PER_WORKER: usize = 2048;

/// How many jobs the cluster holds at once, and when to hand it more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Jobs handed out and not ended, at most; also the number of slots.
    pub ahead: usize,
    /// The cluster's workers.
    pub workers: usize,
}

impl Window {
    /// Commands: one job per worker, so that `{%}` names a slot no other
    /// running job has and every job handed out is running.
    pub fn commands(workers: usize) -> Window {
        Window {
            ahead: workers,
            workers,
        }
    }

    /// Python calls (no `{%}`): enough queued in the cluster for it to hand
    /// each worker two full batches, so that tiny calls travel hundreds to
    /// a message.
    pub fn calls(workers: usize) -> Window {
        Window {
            ahead: workers * CALLS_AHEAD_PER_WORKER,
            workers,
        }
    }

    /// Is it time to hand out more, with `running` jobs out? Calls once a
    /// quarter of the window has drained (a batch's worth per worker),
    /// commands at every free slot.
    fn wants_more(&self, running: usize) -> bool {
        running < self.ahead - self.ahead / 4 || running < self.workers
    }
}

/// Why no more jobs start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Interrupted,
    Halted,
    OutputClosed,
    JoblogFailed,
}

/// What was known when `--halt` triggered, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HaltFacts {
    /// What counted towards the halt.
    pub trigger: HaltTrigger,
    /// The exit status of the job that triggered it (as GNU parallel
    /// reports it for `fail=1`).
    pub job_status: u8,
    /// Jobs failed by then.
    pub failed: u64,
}

/// How the run went, in numbers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tally {
    /// Jobs this run was to run (those the job log had not done).
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Jobs stopped while running (started, then cancelled).
    pub cancelled: u64,
    /// Why it stopped starting jobs, if it did.
    pub stop: Option<Stop>,
    /// When `--halt` triggered.
    pub halted: Option<HaltFacts>,
}

impl Tally {
    /// Jobs that ended with a result (succeeded or failed).
    pub fn ended(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// Jobs that did not run to an end (never started, or stopped).
    pub fn not_run(&self) -> u64 {
        self.total.saturating_sub(self.ended())
    }
}

/// A job to start now: its input row, number and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The index of its inputs in the map's rows.
    pub row: usize,
    /// Its number (`{#}`, the job log's `Seq`): the row's, from 1.
    pub seq: u64,
    /// Its slot (`{%}`), from 1.
    pub slot: usize,
}

/// What a result means, with the job it belongs to (`J`: what the driver
/// keeps about a running job).
#[derive(Debug, PartialEq)]
pub enum Ended<J> {
    /// It never finished (cancelled, withdrawn): nothing to log.
    Cancelled(J),
    /// It finished: `ok` when it succeeded. `halt`: this result made the
    /// run halt.
    Finished {
        job: J,
        ok: bool,
        halt: Option<Halting>,
    },
}

/// The run halts (`--halt`): it starts no more jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halting {
    /// `now`: the running jobs are stopped too.
    pub now: bool,
    /// Jobs still running.
    pub others: usize,
    /// Tasks to cancel (all the running ones with `now`, else none).
    pub cancel: Vec<TaskId>,
}

/// What the Ctrl-Cs so far call for, beyond what earlier ones did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OnInterrupt {
    /// Starting no more jobs from now on (the first Ctrl-C): the number
    /// of jobs still running, to announce.
    pub stopped_starting: Option<usize>,
    /// The running tasks to stop (the second).
    pub cancel: Option<Vec<TaskId>>,
    /// Stop waiting for anything (the third): the run ends now.
    pub give_up: bool,
}

/// The state of the dispatch: the jobs not started yet, the running ones
/// and their slots, the counts, and whether (and why) it has stopped.
#[derive(Debug)]
pub struct Dispatch<J> {
    queue: std::vec::IntoIter<usize>,
    window: Window,
    free_slots: BTreeSet<usize>,
    running: HashMap<TaskId, (usize, J)>,
    halt: Option<HaltPolicy>,
    tally: Tally,
    stopping_running: bool,
    withdrawn: bool,
    /// Run times of the jobs that succeeded, when a timeout depends on
    /// their median.
    runtimes: Option<Vec<f64>>,
}

impl<J> Dispatch<J> {
    /// Run the rows `todo` (indices, in order) through `window`, halting
    /// as `halt` says; `track_runtimes` keeps the successful jobs' run
    /// times for [`Dispatch::median_runtime`].
    pub fn new(
        todo: Vec<usize>,
        window: Window,
        halt: Option<HaltPolicy>,
        track_runtimes: bool,
    ) -> Dispatch<J> {
        Dispatch {
            tally: Tally {
                total: todo.len() as u64,
                ..Tally::default()
            },
            queue: todo.into_iter(),
            window,
            free_slots: (1..=window.ahead).collect(),
            running: HashMap::new(),
            halt,
            stopping_running: false,
            withdrawn: false,
            runtimes: track_runtimes.then(Vec::new),
        }
    }

    /// The jobs to start now, in order, each with a free slot; none once
    /// the run has stopped, or while the window is full enough. Register
    /// what is submitted with [`Dispatch::started`].
    pub fn refill(&mut self) -> impl Iterator<Item = Start> + '_ {
        let running = self.running.len();
        let room = if self.tally.stop.is_none() && self.window.wants_more(running) {
            self.window.ahead.saturating_sub(running)
        } else {
            0
        };
        let free_slots = &mut self.free_slots;
        self.queue.by_ref().take(room).map(move |row| Start {
            row,
            seq: row as u64 + 1,
            slot: free_slots.pop_first().unwrap_or(1),
        })
    }

    /// The cluster took these jobs (`(slot, job)`, as [`Dispatch::refill`]
    /// gave them) under these ids.
    pub fn started(&mut self, ids: Vec<TaskId>, jobs: Vec<(usize, J)>) {
        self.running.extend(ids.into_iter().zip(jobs));
    }

    /// A result came: which job it ends and what that means. `None` for a
    /// task that is not (or no longer) this run's.
    pub fn on_result(&mut self, result: &TaskResult) -> Option<Ended<J>> {
        let (slot, job) = self.running.remove(&result.id)?;
        self.free_slots.insert(slot);
        if let Outcome::Cancelled { .. } = result.outcome {
            if result.attempts > 0 {
                self.tally.cancelled += 1;
            }
            return Some(Ended::Cancelled(job));
        }
        let ok = result.outcome.is_success();
        if ok {
            self.tally.succeeded += 1;
            if let Some(r) = &mut self.runtimes {
                r.push(result.runtime.as_secs_f64());
            }
        } else {
            self.tally.failed += 1;
        }
        let halt = self.check_halt(result);
        Some(Ended::Finished { job, ok, halt })
    }

    /// Does this result make the run halt (the first time only)?
    fn check_halt(&mut self, result: &TaskResult) -> Option<Halting> {
        let h = self.halt?;
        let t = &self.tally;
        if t.halted.is_some() || !h.triggered(t.succeeded, t.failed, t.total) {
            return None;
        }
        self.tally.halted = Some(HaltFacts {
            trigger: h.trigger,
            job_status: jobs::exit_status_of(result),
            failed: self.tally.failed,
        });
        self.tally.stop.get_or_insert(Stop::Halted);
        let now = h.when == HaltWhen::Now;
        Some(Halting {
            now,
            others: self.running.len(),
            cancel: if now { self.running_ids() } else { Vec::new() },
        })
    }

    /// `count` Ctrl-Cs have arrived in all: the first stops starting jobs,
    /// the second stops the running ones, the third ends the run.
    pub fn on_interrupt(&mut self, count: usize) -> OnInterrupt {
        let mut steps = OnInterrupt::default();
        if count == 0 {
            return steps;
        }
        if self.tally.stop != Some(Stop::Interrupted) {
            self.tally.stop = Some(Stop::Interrupted);
            steps.stopped_starting = Some(self.running.len());
        }
        if count >= 2 && !self.stopping_running {
            self.stopping_running = true;
            steps.cancel = Some(self.running_ids());
        }
        steps.give_up = count >= 3;
        steps
    }

    /// Standard output has gone away: start no more jobs.
    pub fn on_output_closed(&mut self) {
        self.tally.stop.get_or_insert(Stop::OutputClosed);
    }

    /// The job log could not be written: start no more jobs, and end with
    /// an error.
    pub fn on_joblog_failed(&mut self) {
        self.tally.stop = Some(Stop::JoblogFailed);
    }

    /// Once the run has stopped starting jobs: the tasks handed out, to
    /// withdraw those the cluster has not begun (once; `None` after, or
    /// before the stop).
    pub fn take_withdrawal(&mut self) -> Option<Vec<TaskId>> {
        if self.tally.stop.is_none() || self.withdrawn {
            return None;
        }
        self.withdrawn = true;
        Some(self.running_ids())
    }

    /// The running job of a task.
    pub fn job(&self, id: TaskId) -> Option<&J> {
        self.running.get(&id).map(|(_, j)| j)
    }

    /// Jobs handed out and not ended.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Nothing running. Right after [`Dispatch::refill`], that means
    /// nothing more will start either: the run is over.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Why it stopped starting jobs, if it did.
    pub fn stop(&self) -> Option<Stop> {
        self.tally.stop
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// The median run time of the jobs that succeeded so far, in seconds
    /// (`None` before the first, or when not tracked).
    pub fn median_runtime(&mut self) -> Option<f64> {
        median(self.runtimes.as_mut()?)
    }

    /// `--timeout P%`: the timeout of the jobs started now, `percent` of
    /// the median run time (at least a millisecond); `None` before any
    /// job has succeeded.
    pub fn job_timeout(&mut self, percent: f64) -> Option<Duration> {
        let secs = (self.median_runtime()? * percent / 100.0).max(0.001);
        Duration::try_from_secs_f64(secs).ok()
    }

    fn running_ids(&self) -> Vec<TaskId> {
        self.running.keys().copied().collect()
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}
