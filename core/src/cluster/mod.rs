//! The public face: a [`Cluster`] of workers, built from the rules'
//! recommendation ([`Cluster::auto`]) or explicit choices
//! ([`Cluster::builder`]), that takes tasks and gives back one result each.
//! Its requests go to a backend thread (the local pools' scheduler, or
//! the ipyparallel loop), whose results come back in groups.

mod builder;
mod ipp_loop;
mod submitter;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

pub use builder::{Advice, ClusterBuilder, CoreError};
pub use submitter::Submitter;
use submitter::SUBMIT_SLICE;

use crate::ipp::IppBackend;
use crate::messages::{Notice, Request, Requests, Spare};
use crate::plan::Settings;
use crate::pool::Scheduler;
use crate::task::{Task, TaskId, TaskResult};

/// How many of its tasks [`Cluster::map`] keeps in play at once (at
/// least; more with many workers).
const MAP_AHEAD: usize = 16384;

/// Worker processes running tasks. Dropping it stops everything it
/// started.
pub struct Cluster {
    submitter: Submitter,
    /// Results arrive in groups (one per turn of the scheduler's loop).
    results: Receiver<Vec<TaskResult>>,
    /// Received and not yet handed out.
    arrived: RefCell<VecDeque<TaskResult>>,
    /// Emptied groups, for the scheduler to fill again.
    spare: Spare,
    notices: Receiver<Notice>,
    received: AtomicU64,
    scheduler: Option<JoinHandle<()>>,
    settings: Settings,
    advice: Option<Advice>,
}

impl Cluster {
    /// Probe, run the rules, and start the recommended backend.
    pub fn auto() -> Result<Cluster, CoreError> {
        ClusterBuilder::default().auto(true).build()
    }

    /// Explicit choices; call `.auto(true)` to fill the rest from the
    /// recommendation.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Start with settings decided elsewhere.
    pub fn with_settings(settings: Settings) -> Result<Cluster, CoreError> {
        Cluster::start(settings, None)
    }

    fn start(settings: Settings, advice: Option<Advice>) -> Result<Cluster, CoreError> {
        let scheduler_settings = settings.clone();
        Cluster::launch(
            "caiclust-scheduler",
            settings,
            advice,
            move |events, events_tx, results, notices| {
                Scheduler::new(scheduler_settings, events, events_tx, results, notices).run()
            },
        )
    }

    /// Run on ipyparallel engines: tasks go through the backend's driver;
    /// results and notices arrive as from local pools.
    fn start_ipp(
        settings: Settings,
        backend: IppBackend,
        advice: Option<Advice>,
    ) -> Result<Cluster, CoreError> {
        Cluster::launch(
            "caiclust-ipyparallel",
            settings,
            advice,
            move |requests, _: Sender<Request>, (results, _), notices| {
                ipp_loop::run_ipp(backend, requests, results, notices)
            },
        )
    }

    /// The channels between a cluster and the thread that runs its tasks
    /// (`serve`, started under `name`): events in, results (with emptied
    /// groups handed back) and notices out.
    fn launch<E: From<Request> + Send + 'static>(
        name: &str,
        settings: Settings,
        advice: Option<Advice>,
        serve: impl FnOnce(Receiver<E>, Sender<E>, (Sender<Vec<TaskResult>>, Spare), Sender<Notice>)
            + Send
            + 'static,
    ) -> Result<Cluster, CoreError> {
        let (events_tx, events_rx) = mpsc::channel();
        let (results_tx, results_rx) = mpsc::channel();
        let (notices_tx, notices_rx) = mpsc::channel();
        let spare = Spare::default();
        let (serve_events, serve_spare) = (events_tx.clone(), spare.clone());
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                serve(
                    events_rx,
                    serve_events,
                    (results_tx, serve_spare),
                    notices_tx,
                )
            })?;
        Ok(Cluster {
            submitter: Submitter::new(Requests::into_channel(events_tx)),
            results: results_rx,
            arrived: RefCell::default(),
            spare,
            notices: notices_rx,
            received: AtomicU64::new(0),
            scheduler: Some(handle),
            settings,
            advice,
        })
    }

    /// How this cluster runs.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The facts, recommendation and findings it was built from.
    pub fn advice(&self) -> Option<&Advice> {
        self.advice.as_ref()
    }

    /// Queue a task; its result comes back through [`Cluster::recv`].
    pub fn submit(&self, task: Task) -> TaskId {
        self.submitter.submit(task)
    }

    /// Queue many tasks at once, much cheaper than one [`Cluster::submit`]
    /// each; their ids, in the order given (consecutive unless the
    /// iterator itself submits to this cluster).
    pub fn submit_many(&self, tasks: impl IntoIterator<Item = Task>) -> Vec<TaskId> {
        self.submitter.submit_many(tasks)
    }

    /// A sending side for other threads: submit and cancel there while
    /// this thread receives.
    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// Hand an emptied group back to the scheduler, to fill again (large
    /// buffers freed and allocated anew cost fresh pages each time).
    fn recycle(&self, group: Vec<TaskResult>) {
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < 4 {
                spare.push(group);
            }
        }
    }

    /// Tasks submitted and not yet received.
    pub fn outstanding(&self) -> u64 {
        self.submitter.submitted() - self.received.load(Ordering::SeqCst)
    }

    /// Take the next result already received, if any.
    fn take_arrived(&self) -> Option<TaskResult> {
        let r = self.arrived.borrow_mut().pop_front()?;
        self.received.fetch_add(1, Ordering::SeqCst);
        Some(r)
    }

    /// The next result in completion order; `None` when nothing is
    /// outstanding.
    pub fn recv(&self) -> Option<TaskResult> {
        self.next_result(None)
    }

    /// As [`Cluster::recv`], waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<TaskResult> {
        self.next_result(Some(std::time::Instant::now() + timeout))
    }

    /// The next result, waiting for a group until `deadline` (`None`: for
    /// as long as it takes).
    fn next_result(&self, deadline: Option<std::time::Instant>) -> Option<TaskResult> {
        loop {
            if let Some(r) = self.take_arrived() {
                return Some(r);
            }
            if self.outstanding() == 0 {
                return None;
            }
            let mut group = match deadline {
                None => self.results.recv().ok()?,
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    self.results.recv_timeout(left).ok()?
                }
            };
            self.arrived.borrow_mut().extend(group.drain(..));
            self.recycle(group);
        }
    }

    /// Results of everything outstanding, in completion order.
    pub fn results(&self) -> impl Iterator<Item = TaskResult> + '_ {
        std::iter::from_fn(move || self.recv())
    }

    /// Results of everything outstanding, in submission order.
    pub fn results_in_order(&self) -> InOrder<'_> {
        let first = self.received.load(Ordering::SeqCst) + 1;
        InOrder {
            cluster: self,
            next: first,
            held: BTreeMap::new(),
        }
    }

    /// Submit every task and return their results in submission order.
    /// Tasks are taken from the iterator as the work goes on (16 384 in
    /// play, or 2 048 per worker if more), so a long iterator never sits
    /// in memory whole. Results of tasks submitted earlier that arrive
    /// meanwhile stay for [`Cluster::recv`].
    pub fn map(&self, tasks: impl IntoIterator<Item = Task>) -> Vec<TaskResult> {
        let mut tasks = tasks.into_iter();
        let mut more = true;
        // Runs of consecutive ids and where each begins in the output.
        let mut runs: Vec<(std::ops::Range<TaskId>, usize)> = Vec::new();
        let mut slots: Vec<Option<TaskResult>> = Vec::new();
        let mut others = Vec::new();
        let mut got = 0usize;
        // Enough for every worker's batches in flight and queued.
        let ahead = MAP_AHEAD.max(self.settings.workers.saturating_mul(2048));
        loop {
            while more && slots.len() - got < ahead {
                let slice: Vec<Task> = tasks.by_ref().take(SUBMIT_SLICE).collect();
                if slice.is_empty() {
                    more = false;
                    break;
                }
                let ids = self.submitter.send_slice(slice);
                let base = slots.len();
                slots.resize_with(base + (ids.end - ids.start) as usize, || None);
                match runs.last_mut() {
                    Some((last, _)) if last.end == ids.start => last.end = ids.end,
                    _ => runs.push((ids, base)),
                }
            }
            if got == slots.len() && !more {
                break;
            }
            // Groups straight from the channel into place (each result
            // moved once).
            let Ok(mut group) = self.results.recv() else {
                break;
            };
            self.received
                .fetch_add(group.len() as u64, Ordering::SeqCst);
            for r in group.drain(..) {
                let i = runs.partition_point(|(ids, _)| ids.end <= r.id);
                match runs.get(i) {
                    Some((ids, base)) if ids.contains(&r.id) => {
                        let slot = &mut slots[base + (r.id - ids.start) as usize];
                        if slot.replace(r).is_none() {
                            got += 1;
                        }
                    }
                    _ => others.push(r),
                }
            }
            self.recycle(group);
        }
        if !others.is_empty() {
            // Not ours: kept for recv, uncounted.
            self.received
                .fetch_sub(others.len() as u64, Ordering::SeqCst);
            self.arrived.borrow_mut().extend(others);
        }
        // In place: an Option<TaskResult> is the size of a TaskResult, and
        // filter_map (unlike flatten) reuses the allocation.
        #[allow(clippy::filter_map_identity)]
        slots.into_iter().filter_map(|r| r).collect()
    }

    /// Messages about workers and stalls received so far.
    pub fn notices(&self) -> Vec<Notice> {
        self.notices.try_iter().collect()
    }

    /// Cancel a task: a queued one never starts, a running one is stopped
    /// (its whole process tree). Its result says cancelled.
    pub fn cancel(&self, id: TaskId) {
        self.submitter.cancel(id);
    }

    /// Cancel those of `ids` that have not begun (queued, or waiting in a
    /// worker behind its current task); running ones go on. How a run
    /// stops "starting no more jobs" with many tasks submitted ahead.
    /// Withdrawn tasks end as cancelled with `attempts == 0`.
    pub fn withdraw(&self, ids: impl IntoIterator<Item = TaskId>) {
        self.submitter.withdraw(ids);
    }

    /// Wait for every task to finish, then stop the workers.
    pub fn shutdown(mut self) {
        self.submitter.shutdown(false);
        self.join();
    }

    /// Cancel queued tasks, stop running ones, stop the workers.
    pub fn kill(mut self) {
        self.submitter.shutdown(true);
        self.join();
    }

    fn join(&mut self) {
        if let Some(h) = self.scheduler.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.submitter.shutdown(true);
        self.join();
    }
}

/// Results in submission order (held back until their turn).
pub struct InOrder<'a> {
    cluster: &'a Cluster,
    next: TaskId,
    held: BTreeMap<TaskId, TaskResult>,
}

impl Iterator for InOrder<'_> {
    type Item = TaskResult;
    fn next(&mut self) -> Option<TaskResult> {
        loop {
            if let Some(r) = self.held.remove(&self.next) {
                self.next += 1;
                return Some(r);
            }
            match self.cluster.recv() {
                Some(r) => {
                    self.held.insert(r.id, r);
                }
                None => {
                    // Whatever is left, in order.
                    let (&id, _) = self.held.iter().next()?;
                    self.next = id;
                }
            }
        }
    }
}
