//! A cluster's sending side on its own: submit, cancel and withdraw from
//! any thread while another thread receives the results (what a Python
//! pool's result handler does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::messages::{Request, Requests};
use crate::task::{Task, TaskId};

/// How many tasks [`Submitter::submit_many`] sends in one event.
pub(super) const SUBMIT_SLICE: usize = 512;

/// Sends tasks and cancellations to a [`super::Cluster`]'s backend. It is
/// `Send + Sync + Clone`; ids come from the cluster's one counter, so they
/// stay unique and in submission order whoever submits. Once the cluster
/// is shut down, what it sends is ignored (the results never come).
#[derive(Clone)]
pub struct Submitter {
    pub(super) requests: Requests,
    pub(super) next_id: Arc<AtomicU64>,
}

impl Submitter {
    pub(super) fn new(requests: Requests) -> Submitter {
        Submitter {
            requests,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Queue a task; its result comes back through the cluster's `recv`.
    pub fn submit(&self, task: Task) -> TaskId {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.requests.send(Request::Submit(id, Box::new(task)));
        id
    }

    /// Queue many tasks, in slices of consecutive ids (much cheaper than
    /// one `submit` each); their ids, in the order given.
    pub fn submit_many(&self, tasks: impl IntoIterator<Item = Task>) -> Vec<TaskId> {
        let mut ids = Vec::new();
        self.submit_slices(tasks, |range| ids.extend(range));
        ids
    }

    /// Send `tasks` in slices of consecutive ids, reading the iterator as
    /// it goes; `each` sees every slice's ids.
    pub(super) fn submit_slices(
        &self,
        tasks: impl IntoIterator<Item = Task>,
        mut each: impl FnMut(std::ops::Range<TaskId>),
    ) {
        let mut tasks = tasks.into_iter();
        loop {
            let slice: Vec<Task> = tasks.by_ref().take(SUBMIT_SLICE).collect();
            if slice.is_empty() {
                return;
            }
            each(self.send_slice(slice));
        }
    }

    /// Queue one slice of tasks under consecutive ids.
    pub(super) fn send_slice(&self, tasks: Vec<Task>) -> std::ops::Range<TaskId> {
        let n = tasks.len() as u64;
        let first = self.next_id.fetch_add(n, Ordering::SeqCst);
        self.requests.send(Request::SubmitMany { first, tasks });
        first..first + n
    }

    /// Ids handed out so far.
    pub(super) fn submitted(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst) - 1
    }

    /// Cancel a task: a queued one never starts, a running one is stopped
    /// (its whole process tree). Its result says cancelled.
    pub fn cancel(&self, id: TaskId) {
        self.requests.send(Request::Cancel(id));
    }

    /// Cancel those of `ids` that have not begun; running ones go on.
    /// Withdrawn tasks end as cancelled with `attempts == 0`.
    pub fn withdraw(&self, ids: impl IntoIterator<Item = TaskId>) {
        let ids: Vec<TaskId> = ids.into_iter().collect();
        if !ids.is_empty() {
            self.requests.send(Request::Withdraw(ids));
        }
    }

    pub(super) fn shutdown(&self, kill: bool) {
        self.requests.send(Request::Shutdown { kill });
    }
}
