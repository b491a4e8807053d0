//! The ipyparallel side of a cluster: the cluster's requests go to the
//! backend, its results and reports come back, until shutdown.

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crate::ipp::{IppBackend, IppEvent};
use crate::messages::{Notice, Request};
use crate::task::{Failure, Outcome, StartCause, Task, TaskId, TaskResult};

/// Serve the cluster's requests on `backend` until shutdown.
pub(super) fn run_ipp(
    backend: IppBackend,
    requests: Receiver<Request>,
    results: Sender<Vec<TaskResult>>,
    notices: Sender<Notice>,
) {
    let mut state = IppLoop {
        backend: &backend,
        results: &results,
        shutdown: None,
        submitted: Vec::new(),
    };
    loop {
        state.take_requests(&requests);
        match state.shutdown {
            Some(true) => {
                state.cancel_everything();
                break;
            }
            Some(false) if backend.outstanding() == 0 => break,
            _ => {}
        }
        if let Some(ev) = backend.recv_timeout(Duration::from_millis(5)) {
            forward(ev, &results, &notices);
        }
    }
    backend.shutdown();
}

/// What the loop keeps between turns.
struct IppLoop<'a> {
    backend: &'a IppBackend,
    results: &'a Sender<Vec<TaskResult>>,
    /// `Some(kill)` once a shutdown was asked for.
    shutdown: Option<bool>,
    submitted: Vec<TaskId>,
}

impl IppLoop<'_> {
    /// Handle every request waiting now.
    fn take_requests(&mut self, requests: &Receiver<Request>) {
        loop {
            match requests.try_recv() {
                Ok(Request::Submit(id, task)) => {
                    if let Some(r) = self.submit(id, &task) {
                        let _ = self.results.send(vec![r]);
                    }
                }
                Ok(Request::SubmitMany { first, tasks }) => {
                    let failed: Vec<TaskResult> = (first..)
                        .zip(&tasks)
                        .filter_map(|(id, task)| self.submit(id, task))
                        .collect();
                    if !failed.is_empty() {
                        let _ = self.results.send(failed);
                    }
                }
                Ok(Request::Cancel(id)) => {
                    let _ = self.backend.cancel(id);
                }
                Ok(Request::Withdraw(ids)) => {
                    for id in ids {
                        let _ = self.backend.withdraw(id);
                    }
                }
                Ok(Request::Shutdown { kill }) => {
                    self.shutdown = Some(kill || self.shutdown == Some(true));
                }
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.shutdown = Some(true);
                    return;
                }
            }
        }
    }

    /// Hand a task to the backend; if it cannot, the result saying why.
    fn submit(&mut self, id: TaskId, task: &Task) -> Option<TaskResult> {
        match self.backend.submit(id, task) {
            Ok(()) => {
                self.submitted.push(id);
                None
            }
            Err(e) => Some(TaskResult::bare(
                id,
                Outcome::Failed {
                    failure: Failure::Start {
                        message: e.to_string(),
                        cause: StartCause::Other,
                    },
                },
            )),
        }
    }

    /// Cancel what is outstanding and pass on its results, briefly.
    fn cancel_everything(&mut self) {
        if self.backend.outstanding() == 0 {
            return;
        }
        for id in self.submitted.drain(..) {
            let _ = self.backend.cancel(id);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.backend.outstanding() > 0 && Instant::now() < deadline {
            if let Some(IppEvent::Result(r)) = self.backend.recv_timeout(Duration::from_millis(50))
            {
                let _ = self.results.send(vec![r]);
            }
        }
    }
}

/// Pass a backend event on to the cluster: a result, or a notice.
fn forward(ev: IppEvent, results: &Sender<Vec<TaskResult>>, notices: &Sender<Notice>) {
    let notice = |task, message| {
        let _ = notices.send(Notice { task, message });
    };
    match ev {
        IppEvent::Result(r) => {
            let _ = results.send(vec![r]);
        }
        IppEvent::Notice { task, message } => notice(task, message),
        IppEvent::EngineDied {
            engine,
            pid,
            host,
            tasks,
            reason,
            expected: false,
        } => notice(
            tasks.first().copied(),
            format!(
                "engine {engine}{}{} died ({reason}){}",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                host.map(|h| format!(" on {h}")).unwrap_or_default(),
                while_running(&tasks)
            ),
        ),
        IppEvent::DriverExited { message } => {
            notice(None, format!("the ipyparallel driver exited: {message}"))
        }
        _ => {}
    }
}

/// " while running task 3" / " while running tasks 3, 4" / "".
fn while_running(tasks: &[TaskId]) -> String {
    match tasks {
        [] => String::new(),
        [one] => format!(" while running task {one}"),
        many => format!(
            " while running tasks {}",
            many.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
