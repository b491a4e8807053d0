//! Outcomes: a failed attempt is retried or final, a task's one result
//! goes to the cluster, the halt policy is checked, and cancels,
//! withdrawals and shutdown end what they reach.

use std::collections::HashSet;

use super::events::Details;
use super::state::StopCause;
use super::{Scheduler, Tally};
use crate::ledger::{AfterFailure, Closed, Retry};
use crate::messages::Notice;
use crate::plan::HaltWhen;
use crate::task::{Failure, Outcome, TaskId, TaskResult};

impl Scheduler {
    pub(super) fn fail_attempt(&mut self, id: TaskId, failure: Failure, details: Details) {
        let retry = if self.halted.is_some() || self.shutdown == Some(true) {
            Retry::Never
        } else if matches!(failure, Failure::WorkerDied { .. })
            && self.ledger.get(id).is_some_and(|e| e.free == 0)
        {
            Retry::Free
        } else {
            Retry::Counted
        };
        match self.ledger.fail(id, failure, retry) {
            Some(AfterFailure::Retry) => {
                let pool = self.ledger.get(id).map(|e| e.task.pool());
                if let Some(pool) = pool {
                    self.queues.entry(pool).or_default().push_back(id);
                }
            }
            Some(AfterFailure::Final(e, failure)) => {
                self.finish(id, e, Outcome::Failed { failure }, details)
            }
            None => {}
        }
    }

    pub(super) fn finish(&mut self, id: TaskId, entry: Closed, outcome: Outcome, details: Details) {
        if !self.isolated.is_empty() {
            self.isolated.remove(&id);
        }
        match &outcome {
            Outcome::Succeeded { .. } => self.tally.succeeded += 1,
            Outcome::Failed { .. } => self.tally.failed += 1,
            Outcome::Cancelled { .. } => {}
        }
        let result = TaskResult {
            id,
            outcome,
            attempts: entry.attempts,
            history: entry.history,
            started: details.started,
            runtime: details.runtime,
            exit: details.exit,
            pid: details.pid,
            slot: details.slot,
            stdout: details.stdout,
            stderr: details.stderr,
            payload: details.payload,
        };
        self.outlet.outbox.push(result);
        self.check_halt();
    }

    pub(super) fn check_halt(&mut self) {
        if self.halted.is_some() {
            return;
        }
        let policy = self.settings.halt;
        let Tally {
            submitted,
            succeeded,
            failed,
        } = self.tally;
        if !policy.triggered(succeeded, failed, submitted) {
            return;
        }
        let reason = format!(
            "halted ({} succeeded, {} failed of {} submitted)",
            succeeded, failed, submitted
        );
        let _ = self.notices.send(Notice {
            task: None,
            message: reason.clone(),
        });
        self.halted = Some(reason.clone());
        self.admit(true);
        let queued: Vec<TaskId> = self.queues.values_mut().flat_map(|q| q.drain(..)).collect();
        for id in queued {
            self.cancel_queued(id, &reason);
        }
        if policy.when == HaltWhen::Now {
            self.stop_all_running(&reason);
        }
    }

    pub(super) fn cancel_queued(&mut self, id: TaskId, reason: &str) {
        if let Some(e) = self.ledger.cancel(id) {
            self.finish(
                id,
                e,
                Outcome::Cancelled {
                    reason: reason.to_string(),
                },
                Details::none(),
            );
        }
    }

    pub(super) fn cancel(&mut self, id: TaskId, reason: &str) {
        let Some(entry) = self.ledger.get(id) else {
            return;
        };
        if !entry.running {
            for q in self.queues.values_mut() {
                q.retain(|&x| x != id);
            }
            self.cancel_queued(id, reason);
            return;
        }
        // Running: a command, a worker's current task, or one waiting in
        // a worker's queue.
        let mut stop_pid = None;
        for s in &mut self.slots {
            if let Some(r) = s.running.as_mut() {
                if r.id == id {
                    r.stopping = Some(StopCause::Cancelled(reason.to_string()));
                    stop_pid = r.pid;
                }
            }
        }
        if let Some(pid) = stop_pid {
            self.stop_tree(pid);
            return;
        }
        let mut stop = None;
        let mut dropped = false;
        for (kind, p) in self.pools.iter_mut() {
            for (i, w) in p.workers.iter_mut().enumerate() {
                if let Some(pos) = w.in_flight.iter().position(|f| f.id == id) {
                    if pos == 0 {
                        stop = Some((*kind, i));
                    } else {
                        w.in_flight[pos].dropped = true;
                        dropped = true;
                    }
                }
            }
        }
        if let Some((kind, i)) = stop {
            self.stop_worker(kind, i, StopCause::Cancelled(reason.to_string()));
        } else if dropped {
            self.cancel_queued(id, reason);
        }
    }

    /// Cancel the tasks of `ids` that have not begun: queued ones, and
    /// ones handed to a worker behind the task it is running (as far as
    /// the parent knows: answers come back in groups). They end as
    /// cancelled with no attempt made.
    pub(super) fn withdraw(&mut self, ids: Vec<TaskId>) {
        const REASON: &str = "withdrawn before it started";
        self.admit(true);
        let ids: HashSet<TaskId> = ids.into_iter().collect();
        let mut queued = Vec::new();
        for q in self.queues.values_mut() {
            q.retain(|id| {
                let hit = ids.contains(id);
                if hit {
                    queued.push(*id);
                }
                !hit
            });
        }
        let mut waiting = Vec::new();
        for p in self.pools.values_mut() {
            for w in &mut p.workers {
                for f in w.in_flight.iter_mut().skip(1) {
                    if !f.dropped && ids.contains(&f.id) {
                        f.dropped = true;
                        waiting.push(f.id);
                    }
                }
            }
        }
        for &id in &waiting {
            self.ledger.unstart(id);
        }
        queued.sort_unstable();
        for id in queued.into_iter().chain(waiting) {
            self.cancel_queued(id, REASON);
        }
    }

    pub(super) fn stop_all_running(&mut self, reason: &str) {
        let ids: Vec<TaskId> = self
            .ledger
            .ids()
            .into_iter()
            .filter(|&id| self.ledger.get(id).is_some_and(|e| e.running))
            .collect();
        for id in ids {
            self.cancel(id, reason);
        }
    }

    pub(super) fn begin_shutdown(&mut self, kill: bool) {
        if self.shutdown == Some(true) {
            return;
        }
        self.shutdown = Some(kill);
        if kill {
            self.admit(true);
            let reason = "the cluster was shut down";
            let queued: Vec<TaskId> = self.queues.values_mut().flat_map(|q| q.drain(..)).collect();
            for id in queued {
                self.cancel_queued(id, reason);
            }
            self.stop_all_running(reason);
        }
    }
}
