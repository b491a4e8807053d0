//! What a [`crate::Cluster`] says to the thread that runs its tasks, and
//! what that thread says back besides results. Both backends (the local
//! pools and ipyparallel) take the same requests; each has its own
//! internal events.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use crate::task::{Task, TaskId, TaskResult};

/// A cluster's request to its backend.
pub(crate) enum Request {
    Submit(TaskId, Box<Task>),
    /// Tasks with consecutive ids from `first` (one request for a batch).
    SubmitMany {
        first: TaskId,
        tasks: Vec<Task>,
    },
    Cancel(TaskId),
    /// Cancel these where they have not begun; leave the running ones.
    Withdraw(Vec<TaskId>),
    /// Finish what was submitted (`kill: false`) or stop everything now.
    Shutdown {
        kill: bool,
    },
}

/// Where a cluster sends its requests: into the backend's own event
/// channel, whatever its event type. Cloned, it serves any thread.
#[derive(Clone)]
pub(crate) struct Requests(Arc<dyn Fn(Request) -> bool + Send + Sync>);

impl Requests {
    /// Requests that arrive on `events` as `E`.
    pub fn into_channel<E: From<Request> + Send + 'static>(events: Sender<E>) -> Requests {
        Requests(Arc::new(move |r| events.send(E::from(r)).is_ok()))
    }

    /// Send `request`; false when the backend has gone.
    pub fn send(&self, request: Request) -> bool {
        (self.0)(request)
    }
}

/// Emptied result groups, handed back by the cluster for reuse.
pub(crate) type Spare = Arc<Mutex<Vec<Vec<TaskResult>>>>;

/// Something the cluster reports besides results: a worker that died while
/// idle, a stalled task, a halt.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub task: Option<TaskId>,
    pub message: String,
}
