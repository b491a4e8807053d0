//! The running backend: [`IppBackend`] itself, submitting, cancelling and
//! withdrawing tasks, receiving the events, and what it knows about the
//! cluster.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use super::input::Input;
use super::reader::{lock, Shared};
use super::{wire, EngineInfo, IppConfig, IppError, IppEvent};
use crate::task::{Failure, Outcome, Task, TaskId, TaskKind, TaskResult};

/// A cluster of ipyparallel engines running tasks. Dropping it stops
/// everything it started.
pub struct IppBackend {
    pub(super) config: IppConfig,
    pub(super) child: Option<Child>,
    pub(super) driver_pid: u32,
    pub(super) input: Arc<Input>,
    pub(super) events: Receiver<IppEvent>,
    pub(super) events_tx: Sender<IppEvent>,
    /// Startup events held back until the first `recv`.
    pub(super) early: Mutex<VecDeque<IppEvent>>,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) readers: Vec<JoinHandle<()>>,
    pub(super) run_dir: Option<tempfile::TempDir>,
    pub(super) cluster_id: String,
    pub(super) connection_file: Option<PathBuf>,
    pub(super) owned: bool,
    pub(super) versions: (String, String),
}

impl fmt::Debug for IppBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IppBackend")
            .field("cluster_id", &self.cluster_id)
            .field("driver_pid", &self.driver_pid)
            .field("owned", &self.owned)
            .finish()
    }
}

impl IppBackend {
    pub(super) fn early_lock(&self) -> MutexGuard<'_, VecDeque<IppEvent>> {
        self.early
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue a task under the id the caller chose; its result comes back
    /// as an [`IppEvent::Result`] with that id. A
    /// [`Task::python_pickled`] runs on its engine as on a local worker,
    /// its pickled result in the result's
    /// [`payload`](crate::task::TaskResult::payload). Rust tasks cannot run
    /// on engines: they get a failed result at once.
    pub fn submit(&self, id: TaskId, task: &Task) -> Result<(), IppError> {
        let timeout = task
            .timeout
            .or(self.config.timeout)
            .map(|t| t.as_secs_f64());
        let msg = match &task.kind {
            // Pickled arguments travel to the driver in base64; from there
            // to the engine, and back, as raw bytes (ipyparallel's frames).
            TaskKind::Python(c) => match &c.payload {
                Some(payload) => json!({
                    "op": "run", "id": id, "kind": "python", "f": c.function,
                    "payload": wire::base64_encode(payload), "timeout": timeout,
                })
                .to_string(),
                // The common case, as a compact row `[id, f, args, timeout]`
                // written without building a JSON tree.
                None => serde_json::to_string(&(id, &c.function, &c.args, timeout))
                    .map_err(|e| IppError::Driver(format!("cannot encode task {id}: {e}")))?,
            },
            TaskKind::Command(c) => {
                if c.argv.is_empty() {
                    self.fail_now(id, "empty command".into());
                    return Ok(());
                }
                json!({
                    "op": "run", "id": id, "kind": "command", "argv": c.argv, "env": c.env,
                    "cwd": c.cwd.as_ref().map(|p| p.to_string_lossy().into_owned()),
                    "stdin": c.stdin.as_ref().map(|b| wire::base64_encode(b)),
                    "timeout": timeout,
                })
                .to_string()
            }
            TaskKind::Rust(c) => {
                self.fail_now(
                    id,
                    format!(
                        "Rust task '{}' cannot run on ipyparallel engines (they run Python \
                         callables and commands)",
                        c.function
                    ),
                );
                return Ok(());
            }
        };
        {
            let mut s = lock(&self.shared);
            if s.eof {
                return Err(self.driver_gone());
            }
            // Pending before it is queued: should the driver end before
            // it reads it, the reader reports it lost.
            s.pending.insert(id);
            s.outstanding.insert(id);
        }
        self.input.submit(msg);
        Ok(())
    }

    fn driver_gone(&self) -> IppError {
        IppError::Driver(format!(
            "the ipyparallel driver (pid {}) has exited",
            self.driver_pid
        ))
    }

    fn fail_now(&self, id: TaskId, message: String) {
        lock(&self.shared).outstanding.insert(id);
        let _ = self.events_tx.send(IppEvent::Result(TaskResult::bare(
            id,
            Outcome::Failed {
                failure: Failure::Start {
                    message,
                    cause: crate::task::StartCause::Other,
                },
            },
        )));
    }

    /// Cancel a task: a queued one never starts; a running one is
    /// interrupted (SIGINT through its engine's nanny), and its engine
    /// killed and replaced when it does not stop within the grace period.
    /// Its result says cancelled. A tiny task in a batch an engine has
    /// begun is reported cancelled at once (see "Batches" in the module
    /// documentation).
    pub fn cancel(&self, id: TaskId) -> Result<(), IppError> {
        self.send(&json!({"op": "cancel", "id": id}))
    }

    /// Cancel a task that has not begun (its result says cancelled, with
    /// no attempt made); a running one goes on.
    pub fn withdraw(&self, id: TaskId) -> Result<(), IppError> {
        self.send(&json!({"op": "withdraw", "id": id}))
    }

    pub(super) fn send(&self, msg: &Value) -> Result<(), IppError> {
        if lock(&self.shared).eof {
            return Err(self.driver_gone());
        }
        self.input.send(msg).map_err(IppError::Driver)
    }

    /// The next event; `None` once the driver is gone and every event was
    /// received.
    pub fn recv(&self) -> Option<IppEvent> {
        if let Some(ev) = self.early_lock().pop_front() {
            return Some(self.received(ev));
        }
        self.events.recv().ok().map(|ev| self.received(ev))
    }

    /// As [`IppBackend::recv`], waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<IppEvent> {
        if let Some(ev) = self.early_lock().pop_front() {
            return Some(self.received(ev));
        }
        self.events
            .recv_timeout(timeout)
            .ok()
            .map(|ev| self.received(ev))
    }

    /// An event if one is waiting.
    pub fn try_recv(&self) -> Option<IppEvent> {
        if let Some(ev) = self.early_lock().pop_front() {
            return Some(self.received(ev));
        }
        self.events.try_recv().ok().map(|ev| self.received(ev))
    }

    fn received(&self, ev: IppEvent) -> IppEvent {
        if let IppEvent::Result(r) = &ev {
            lock(&self.shared).outstanding.remove(&r.id);
        }
        ev
    }

    /// Tasks submitted whose results were not received yet.
    pub fn outstanding(&self) -> usize {
        lock(&self.shared).outstanding.len()
    }

    /// The engines registered now.
    pub fn engines(&self) -> Vec<EngineInfo> {
        lock(&self.shared).engines.values().cloned().collect()
    }

    /// Processes of the cluster the driver started and reported
    /// (controller, engines, their nannies), alive or not; empty when
    /// attached.
    pub fn cluster_pids(&self) -> Vec<u32> {
        lock(&self.shared).pids.iter().copied().collect()
    }

    pub fn driver_pid(&self) -> u32 {
        self.driver_pid
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// This run's profile folder (removed at the end); `None` once
    /// stopped.
    pub fn run_dir(&self) -> Option<&Path> {
        self.run_dir.as_ref().map(|d| d.path())
    }

    /// The client connection file of a cluster this backend started: give
    /// it to [`Attach::ConnectionFile`](super::Attach::ConnectionFile) to
    /// share the cluster.
    pub fn connection_file(&self) -> Option<&Path> {
        self.connection_file.as_deref()
    }

    /// The driver interpreter's Python version and ipyparallel's version.
    pub fn versions(&self) -> (&str, &str) {
        (&self.versions.0, &self.versions.1)
    }

    pub fn config(&self) -> &IppConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_can_move_to_another_thread() {
        fn is_send<T: Send>() {}
        is_send::<IppBackend>();
        is_send::<IppEvent>();
    }
}
