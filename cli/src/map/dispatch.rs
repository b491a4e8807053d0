//! The dispatch state machine of a map: which job starts next and in which
//! slot, when the cluster's window of handed-out jobs is refilled, and when
//! the run stops starting jobs (a halt, Ctrl-C, a closed standard output,
//! a job log that cannot be written) or stops the running ones too.
//!
//! It does no I/O. The driver ([`super::run`]) tells it what happened
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use caiclust_core::{ExitInfo, Failure, Output};

    use super::*;
    use crate::map::options::parse_halt;
    use crate::map::report;

    /// A result for task `id`.
    fn result(id: TaskId, outcome: Outcome, attempts: u32, runtime_s: f64) -> TaskResult {
        TaskResult {
            id,
            outcome,
            attempts,
            history: Vec::new(),
            started: None,
            runtime: Duration::from_secs_f64(runtime_s),
            exit: None,
            pid: None,
            slot: None,
            stdout: Output::Empty,
            stderr: Output::Empty,
            payload: None,
        }
    }

    fn ok(id: TaskId) -> TaskResult {
        ok_after(id, 0.01)
    }

    fn ok_after(id: TaskId, secs: f64) -> TaskResult {
        let value = serde_json::Value::Null;
        result(id, Outcome::Succeeded { value }, 1, secs)
    }

    fn failed(id: TaskId, code: i32) -> TaskResult {
        let failure = Failure::Exit {
            exit: ExitInfo::Code(code),
        };
        result(id, Outcome::Failed { failure }, 1, 0.01)
    }

    fn cancelled(id: TaskId, attempts: u32) -> TaskResult {
        let reason = "cancelled".to_string();
        result(id, Outcome::Cancelled { reason }, attempts, 0.0)
    }

    /// A dispatcher whose jobs are their numbers, and the next task id.
    struct Harness {
        d: Dispatch<u64>,
        next_id: TaskId,
    }

    impl Harness {
        fn new(jobs: usize, window: Window, halt: Option<&str>) -> Harness {
            let halt = halt.map(|h| parse_halt(h).expect("a valid policy"));
            Harness {
                d: Dispatch::new((0..jobs).collect(), window, halt, true),
                next_id: 100,
            }
        }

        /// Refill, as the driver does; the tasks started, with their ids.
        fn refill(&mut self) -> Vec<(TaskId, Start)> {
            let starts: Vec<Start> = self.d.refill().collect();
            let ids: Vec<TaskId> = (self.next_id..).take(starts.len()).collect();
            self.next_id += starts.len() as u64;
            self.d.started(
                ids.clone(),
                starts.iter().map(|s| (s.slot, s.seq)).collect(),
            );
            ids.into_iter().zip(starts).collect()
        }
    }

    fn sorted(mut ids: Vec<TaskId>) -> Vec<TaskId> {
        ids.sort_unstable();
        ids
    }

    #[test]
    fn commands_get_one_job_per_free_slot() {
        let mut h = Harness::new(5, Window::commands(2), None);
        let first = h.refill();
        let got: Vec<(u64, usize)> = first.iter().map(|(_, s)| (s.seq, s.slot)).collect();
        assert_eq!(got, [(1, 1), (2, 2)]);
        assert_eq!(first[1].1.row, 1);
        assert!(h.refill().is_empty(), "every slot is busy");
        assert_eq!(h.d.job(first[0].0), Some(&1));

        // Job 1 ends: its slot goes to job 3.
        assert!(matches!(
            h.d.on_result(&ok(first[0].0)),
            Some(Ended::Finished {
                job: 1,
                ok: true,
                halt: None
            })
        ));
        let next = h.refill();
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].1.seq, next[0].1.slot), (3, 1));
        assert_eq!(h.d.running(), 2);
    }

    #[test]
    fn calls_are_refilled_once_a_quarter_of_the_window_has_drained() {
        assert_eq!(Window::calls(2).ahead, 2 * CALLS_AHEAD_PER_WORKER);
        let window = Window {
            ahead: 8,
            workers: 2,
        };
        let mut h = Harness::new(20, window, None);
        let out = h.refill();
        assert_eq!(out.len(), 8);
        // 7 and 6 out: not yet (the window refills below 8 - 8/4 = 6).
        for (id, _) in &out[..2] {
            h.d.on_result(&ok(*id));
            assert!(h.refill().is_empty(), "{} running", h.d.running());
        }
        h.d.on_result(&ok(out[2].0));
        let more = h.refill();
        assert_eq!(more.len(), 3, "back to a full window");
        assert_eq!(more[0].1.seq, 9);
    }

    #[test]
    fn the_run_ends_when_nothing_runs_after_a_refill() {
        let mut h = Harness::new(3, Window::commands(4), None);
        let out = h.refill();
        assert_eq!(out.len(), 3);
        for (id, _) in &out {
            assert!(!h.d.is_idle());
            h.d.on_result(&ok(*id));
        }
        assert!(h.refill().is_empty());
        assert!(h.d.is_idle());
        let t = h.d.tally();
        assert_eq!((t.total, t.succeeded, t.failed, t.not_run()), (3, 3, 0, 0));
        assert_eq!(t.stop, None);
        assert_eq!(report::exit_status(&t, None), 0);
    }

    #[test]
    fn halt_soon_stops_refilling_after_the_first_failure_and_lets_running_jobs_finish() {
        let mut h = Harness::new(10, Window::commands(3), Some("soon,fail=1"));
        let out = h.refill();
        assert_eq!(out.len(), 3);
        let Some(Ended::Finished {
            job,
            ok: good,
            halt,
        }) = h.d.on_result(&failed(out[0].0, 3))
        else {
            panic!("a finished job");
        };
        assert_eq!((job, good), (1, false));
        let halting = halt.expect("the first failure halts");
        assert!(!halting.now);
        assert_eq!(halting.others, 2);
        assert!(halting.cancel.is_empty(), "soon cancels nothing");
        assert_eq!(h.d.stop(), Some(Stop::Halted));

        assert!(h.refill().is_empty(), "no more jobs start");
        let withdraw = h.d.take_withdrawal().expect("a withdrawal once stopped");
        assert_eq!(sorted(withdraw), [out[1].0, out[2].0]);
        assert_eq!(h.d.take_withdrawal(), None, "only once");

        // The running ones end normally; a later failure halts nothing more.
        assert!(matches!(
            h.d.on_result(&ok(out[1].0)),
            Some(Ended::Finished {
                ok: true,
                halt: None,
                ..
            })
        ));
        assert!(matches!(
            h.d.on_result(&failed(out[2].0, 5)),
            Some(Ended::Finished {
                ok: false,
                halt: None,
                ..
            })
        ));
        assert!(h.refill().is_empty());
        assert!(h.d.is_idle());
        let t = h.d.tally();
        assert_eq!(
            (t.succeeded, t.failed, t.cancelled, t.not_run()),
            (1, 2, 0, 7)
        );
        let facts = t.halted.expect("halted");
        assert_eq!((facts.job_status, facts.failed), (3, 1));
        // fail=1: the exit status is that of the job that halted the run.
        assert_eq!(
            report::exit_status(&t, parse_halt("soon,fail=1").ok().as_ref()),
            3
        );
    }

    #[test]
    fn halt_now_stops_the_running_jobs() {
        let mut h = Harness::new(6, Window::commands(3), Some("now,fail=1"));
        let out = h.refill();
        let Some(Ended::Finished { halt, .. }) = h.d.on_result(&failed(out[1].0, 2)) else {
            panic!("a finished job");
        };
        let halting = halt.expect("halts");
        assert!(halting.now);
        assert_eq!(halting.others, 2);
        assert_eq!(sorted(halting.cancel), [out[0].0, out[2].0]);
        assert!(h.refill().is_empty());
        // The cancelled jobs come back as such: stopped while running.
        for (id, _) in [&out[0], &out[2]] {
            assert!(matches!(
                h.d.on_result(&cancelled(*id, 1)),
                Some(Ended::Cancelled(_))
            ));
        }
        assert!(h.d.is_idle());
        let t = h.d.tally();
        assert_eq!(
            (t.succeeded, t.failed, t.cancelled, t.not_run()),
            (0, 1, 2, 5)
        );
    }

    #[test]
    fn halting_on_a_count_of_successes_waits_for_the_count() {
        let mut h = Harness::new(6, Window::commands(2), Some("soon,success=2"));
        let out = h.refill();
        let first = h.d.on_result(&ok(out[0].0));
        assert!(matches!(first, Some(Ended::Finished { halt: None, .. })));
        assert_eq!(h.refill().len(), 1, "one success is not enough");
        let second = h.d.on_result(&ok(out[1].0));
        assert!(matches!(
            second,
            Some(Ended::Finished { halt: Some(_), .. })
        ));
        assert_eq!(h.d.stop(), Some(Stop::Halted));
        let t = h.d.tally();
        assert_eq!(report::exit_status(&t, None), 0, "halted on successes");
    }

    #[test]
    fn interrupts_stop_starting_then_stop_running_then_give_up() {
        let mut h = Harness::new(5, Window::commands(2), None);
        assert_eq!(h.d.on_interrupt(0), OnInterrupt::default());
        let out = h.refill();
        let ids = sorted(out.iter().map(|(id, _)| *id).collect());

        let first = h.d.on_interrupt(1);
        assert_eq!(first.stopped_starting, Some(2));
        assert_eq!((first.cancel, first.give_up), (None, false));
        assert_eq!(h.d.stop(), Some(Stop::Interrupted));
        assert_eq!(h.d.on_interrupt(1), OnInterrupt::default(), "said once");
        assert!(h.refill().is_empty(), "no new jobs after Ctrl-C");
        assert_eq!(h.d.take_withdrawal().map(sorted), Some(ids.clone()));

        let second = h.d.on_interrupt(2);
        assert_eq!(second.stopped_starting, None);
        assert_eq!(second.cancel.map(sorted), Some(ids));
        assert!(!second.give_up);
        assert_eq!(h.d.on_interrupt(2), OnInterrupt::default());
        assert!(h.d.on_interrupt(3).give_up);
    }

    #[test]
    fn two_interrupts_at_once_do_both_steps() {
        let mut h = Harness::new(5, Window::commands(2), None);
        let out = h.refill();
        let steps = h.d.on_interrupt(2);
        assert_eq!(steps.stopped_starting, Some(2));
        assert_eq!(steps.cancel.map(|c| c.len()), Some(out.len()));
        let t = {
            h.d.on_result(&cancelled(out[0].0, 1));
            h.d.on_result(&ok(out[1].0));
            h.d.tally()
        };
        assert_eq!((t.succeeded, t.cancelled, t.not_run()), (1, 1, 4));
        assert_eq!(report::exit_status(&t, None), crate::map::INTERRUPTED_EXIT);
    }

    #[test]
    fn an_interrupt_overrides_a_halt_and_a_joblog_failure_overrides_all() {
        let mut h = Harness::new(5, Window::commands(2), Some("soon,fail=1"));
        let out = h.refill();
        h.d.on_result(&failed(out[0].0, 1));
        assert_eq!(h.d.stop(), Some(Stop::Halted));
        h.d.on_output_closed();
        assert_eq!(h.d.stop(), Some(Stop::Halted), "the first reason stays");
        assert_eq!(h.d.on_interrupt(1).stopped_starting, Some(1));
        assert_eq!(h.d.stop(), Some(Stop::Interrupted));
        h.d.on_joblog_failed();
        assert_eq!(h.d.stop(), Some(Stop::JoblogFailed));
        let t = h.d.tally();
        assert_eq!(report::exit_status(&t, None), crate::map::ERROR_EXIT);
    }

    #[test]
    fn a_closed_output_stops_starting_jobs() {
        let mut h = Harness::new(5, Window::commands(2), None);
        let out = h.refill();
        assert_eq!(h.d.take_withdrawal(), None, "not stopped");
        h.d.on_output_closed();
        assert_eq!(h.d.stop(), Some(Stop::OutputClosed));
        assert_eq!(h.d.take_withdrawal().map(|w| w.len()), Some(2));
        h.d.on_result(&ok(out[0].0));
        assert!(h.refill().is_empty());
    }

    #[test]
    fn results_of_other_tasks_and_jobs_never_begun_do_not_count() {
        let mut h = Harness::new(3, Window::commands(2), None);
        let out = h.refill();
        assert_eq!(h.d.on_result(&ok(9999)), None);
        assert_eq!(h.d.running(), 2);
        // Withdrawn before it began: cancelled, not "stopped while running".
        assert_eq!(
            h.d.on_result(&cancelled(out[0].0, 0)),
            Some(Ended::Cancelled(1))
        );
        assert_eq!(h.d.on_result(&ok(out[0].0)), None, "ended already");
        let t = h.d.tally();
        assert_eq!((t.succeeded, t.failed, t.cancelled), (0, 0, 0));
    }

    #[test]
    fn a_percentage_timeout_follows_the_median_of_the_successes() {
        let mut h = Harness::new(10, Window::commands(4), None);
        assert_eq!(h.d.job_timeout(300.0), None, "no success yet");
        let out = h.refill();
        h.d.on_result(&ok_after(out[0].0, 1.0));
        h.d.on_result(&ok_after(out[1].0, 3.0));
        h.d.on_result(&failed(out[2].0, 1));
        h.d.on_result(&ok_after(out[3].0, 2.0));
        assert_eq!(h.d.median_runtime(), Some(2.0));
        assert_eq!(h.d.job_timeout(150.0), Some(Duration::from_secs(3)));
        let next = h.refill();
        h.d.on_result(&ok_after(next[0].0, 10.0));
        assert_eq!(
            h.d.median_runtime(),
            Some(2.5),
            "even count: the mean of two"
        );
        assert_eq!(h.d.job_timeout(0.0001), Some(Duration::from_millis(1)));

        let mut untracked: Dispatch<u64> = Dispatch::new(vec![0], Window::commands(1), None, false);
        let s: Vec<Start> = untracked.refill().collect();
        untracked.started(vec![1], vec![(s[0].slot, 1)]);
        untracked.on_result(&ok_after(1, 1.0));
        assert_eq!(untracked.median_runtime(), None);
    }
}
