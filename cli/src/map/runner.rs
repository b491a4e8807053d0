//! The map itself: prepare the jobs ([`super::prepare`]), start the
//! cluster ([`super::cluster`]), then keep every slot busy as the dispatch
//! state machine ([`super::dispatch`]) says, and report each job as it
//! ends ([`super::report`]). This module only wires them together and
//! does what they decide: submitting, withdrawing and cancelling tasks,
//! writing the job log.
//!
//! For commands, caiclust hands the cluster one job per free slot rather
//! than all at once: it then knows each job's slot when building its
//! command (`{%}`) and that every job it has handed out is running. Python
//! calls (`-f`) are handed out further ahead, so that tiny calls travel in
//! batches. Either way, when the run stops starting jobs (halt, Ctrl-C, a
//! closed output), what the cluster holds and has not begun is withdrawn.

use std::io::IsTerminal;
use std::time::Duration;

use caiclust_core::{Cluster, TaskResult};
use colored::Colorize as _;

use super::cluster::{self, Launch};
use super::dispatch::{Dispatch, Ended, Window};
use super::interrupt::Interrupts;
use super::joblog::Writer;
use super::jobs;
use super::options::{MapArgs, Timeout};
use super::output::Finished;
use super::prepare::Preparation;
use super::reaper::Reaper;
use super::report::{self, Reporter};
use super::MapError;

/// How often the loop looks at Ctrl-C and the cluster's notices while
/// waiting for a result.
const POLL: Duration = Duration::from_millis(100);

/// What the driver keeps about a running job, to log and print it when it
/// ends.
struct Running {
    seq: u64,
    tag: String,
    command: String,
    call_input: Option<serde_json::Value>,
}

/// Run a map; the exit status.
pub fn run(args: MapArgs) -> Result<u8, MapError> {
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let mut prep = Preparation::new(&args, &mut std::io::stdin().lock(), stdin_is_terminal)?;
    for w in &prep.warnings {
        warn(w);
    }
    if args.dry_run {
        crate::stdout::write_stdout(&prep.dry_run()).map_err(|e| MapError::Input {
            what: "standard output".into(),
            message: e.to_string(),
        })?;
        return Ok(0);
    }
    if prep.rows.is_empty() {
        warn("no inputs: nothing to run");
    }
    if prep.todo.is_empty() {
        prep.log_nothing_run(args.joblog.as_deref())?;
        return Ok(0);
    }

    let token = cluster::run_token();
    let cluster = match cluster::launch(&args, &prep.options, &token)? {
        Launch::Ready(c) => *c,
        Launch::Exit(code) => return Ok(code),
    };
    let todo = std::mem::take(&mut prep.todo);
    if args.verbose {
        let plan = cluster::describe(&cluster, todo.len(), prep.total());
        eprintln!("caiclust: {plan}");
    }
    let interrupts = Interrupts::install().unwrap_or_else(|e| {
        warn(&e);
        Interrupts::default()
    });
    let joblog = prep.open_joblog(args.joblog.as_deref())?;
    let reaper = Reaper::start(&token);
    let mode = report::bar_mode(args.bar, args.no_bar);
    let reporter = Reporter::new(mode, todo.len() as u64, args.tag, args.keep_order);
    let workers = cluster.settings().workers;
    let window = if args.function.is_some() {
        Window::calls(workers)
    } else {
        Window::commands(workers)
    };
    let by_median = matches!(prep.options.timeout, Some(Timeout::PercentOfMedian(_)));
    let dispatch = Dispatch::new(todo, window, prep.options.halt, by_median);

    let mut driver = Driver {
        args: &args,
        prep: &prep,
        cluster,
        interrupts,
        joblog,
        reporter,
        dispatch,
    };
    driver.run_loop();
    let Driver {
        cluster,
        mut reporter,
        dispatch,
        ..
    } = driver;
    reporter.close();
    // Anything still running (a third Ctrl-C) stops with the cluster.
    drop(cluster);
    reaper.finish();
    let halt = prep.options.halt.as_ref();
    Ok(reporter.conclude(&dispatch.tally(), halt, args.joblog.is_some()))
}

/// The running map: the stages, and the cluster and job log they act on.
struct Driver<'a> {
    args: &'a MapArgs,
    prep: &'a Preparation,
    cluster: Cluster,
    interrupts: Interrupts,
    joblog: Option<Writer>,
    reporter: Reporter,
    dispatch: Dispatch<Running>,
}

impl Driver<'_> {
    /// Start jobs and take their results until nothing runs (or a third
    /// Ctrl-C).
    fn run_loop(&mut self) {
        loop {
            if !self.check_stops() {
                break;
            }
            self.refill();
            if self.dispatch.is_idle() {
                break;
            }
            self.pass_notices();
            if let Some(result) = self.receive() {
                self.on_result(result);
            }
        }
    }

    /// Ctrl-C and a closed output: stop starting jobs (withdrawing those
    /// not begun), stop the running ones; `false` to give up at once.
    fn check_stops(&mut self) -> bool {
        let steps = self.dispatch.on_interrupt(self.interrupts.count());
        if let Some(running) = steps.stopped_starting {
            self.reporter.say(report::interrupted_text(running));
        }
        if let Some(ids) = steps.cancel {
            self.reporter.say(report::stopping_text(ids.len()));
            for id in ids {
                self.cluster.cancel(id);
            }
        }
        if steps.give_up {
            return false;
        }
        if self.dispatch.stop().is_none() && self.reporter.stdout_closed() {
            self.dispatch.on_output_closed();
        }
        if let Some(ids) = self.dispatch.take_withdrawal() {
            // Starting no more jobs: those handed to the cluster and not
            // begun are not started either.
            self.cluster.withdraw(ids);
        }
        true
    }

    /// Hand the cluster the jobs the dispatch wants started, in one
    /// submission.
    fn refill(&mut self) {
        let timeout = match self.prep.options.timeout {
            Some(Timeout::PercentOfMedian(p)) => self.dispatch.job_timeout(p),
            _ => None,
        };
        let mut tasks = Vec::new();
        let mut started = Vec::new();
        for start in self.dispatch.refill() {
            let mut prepared = self.prep.job(&start);
            if let Some(t) = timeout {
                prepared.task = prepared.task.timeout(t);
            }
            self.reporter.submitted(start.seq);
            tasks.push(prepared.task);
            let job = Running {
                seq: start.seq,
                tag: self.prep.tag(start.row),
                command: prepared.command,
                call_input: prepared.call_input,
            };
            started.push((start.slot, job));
        }
        if !started.is_empty() {
            let ids = self.cluster.submit_many(tasks);
            self.dispatch.started(ids, started);
        }
    }

    /// The cluster's notices, each with its job's number.
    fn pass_notices(&self) {
        for notice in self.cluster.notices() {
            let seq = notice
                .task
                .and_then(|id| self.dispatch.job(id))
                .map(|r| r.seq);
            self.reporter.say(report::note_text(seq, &notice.message));
        }
    }

    /// The next result: one that is ready, or, after printing what has
    /// gathered, one that comes within [`POLL`].
    fn receive(&mut self) -> Option<TaskResult> {
        match self.cluster.recv_timeout(Duration::ZERO) {
            Some(r) => Some(r),
            None => {
                self.reporter.waiting();
                self.cluster.recv_timeout(POLL)
            }
        }
    }

    /// A job ended: log it, print it, and halt when it makes the run halt.
    fn on_result(&mut self, result: TaskResult) {
        let (job, ok, halt) = match self.dispatch.on_result(&result) {
            None => return,
            Some(Ended::Cancelled(job)) => {
                self.reporter.cancelled(job.seq);
                return;
            }
            Some(Ended::Finished { job, ok, halt }) => (job, ok, halt),
        };
        self.log(&job, &result);
        let finished = Finished {
            seq: job.seq,
            tag: job.tag,
            command: job.command,
            call_input: job.call_input,
            result,
        };
        self.reporter.finished(finished, ok);
        if let Some(h) = halt {
            for &id in &h.cancel {
                self.cluster.cancel(id);
            }
            let policy = self.args.halt.as_deref().unwrap_or("");
            self.reporter.say(report::halting_text(policy, &h));
        }
    }

    /// The job-log line of a finished job; when it cannot be written, no
    /// more lines and no more jobs.
    fn log(&mut self, job: &Running, result: &TaskResult) {
        let Some(w) = &mut self.joblog else {
            return;
        };
        let Some(entry) = jobs::log_entry(job.seq, result, &job.command) else {
            return;
        };
        if let Err(e) = w.write(&entry) {
            self.reporter.say(report::joblog_failed_text(e));
            self.dispatch.on_joblog_failed();
            self.joblog = None;
        }
    }
}

fn warn(message: &str) {
    eprintln!("caiclust map: {} {message}", "warning:".yellow().bold());
}
