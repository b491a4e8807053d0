//! Command slots: a thread per slot runs external commands one after
//! another; the scheduler hands each a job and hears when it started and
//! how it ended.

use std::sync::mpsc;
use std::time::Instant;

use super::events::{Details, Event};
use super::state::{CmdSlot, RunningCmd, StopCause, Watch};
use super::Scheduler;
use crate::command::{slot_thread, CmdDone, CmdJob};
use crate::ledger::{AfterFailure, Retry};
use crate::task::{Failure, Outcome, PoolKind, TaskId, TaskKind};
use crate::tree::{self, StopSignal};

impl Scheduler {
    /// The command of `slot` runs as process `pid`.
    pub(super) fn command_started(&mut self, slot: usize, id: TaskId, pid: u32) {
        if let Some(r) = self
            .slots
            .get_mut(slot - 1)
            .and_then(|s| s.running.as_mut())
        {
            if r.id == id {
                r.pid = Some(pid);
                if r.stopping.is_some() {
                    self.stop_tree(pid);
                }
            }
        }
    }

    pub(super) fn command_finished(&mut self, slot: usize, id: TaskId, done: CmdDone) {
        let Some(s) = self.slots.get_mut(slot - 1) else {
            return;
        };
        let running = s.running.take();
        let stopping = running.as_ref().and_then(|r| r.stopping.clone());
        let pid = running.as_ref().and_then(|r| r.pid);
        if let Some(pid) = pid {
            // Background children a command left in its process group
            // (orphans are re-parented, so only the group still finds them).
            if tree::group_alive(pid) {
                tree::signal_group(pid, StopSignal::Kill);
            }
        }
        let exit = done.exit.as_ref().ok().copied();
        let details = Details {
            started: Some(done.started),
            runtime: done.runtime,
            exit,
            pid,
            slot: Some(slot),
            stdout: done.stdout,
            stderr: done.stderr,
            payload: None,
        };
        let after_ms = details.runtime.as_millis() as u64;
        match (stopping, done.exit) {
            (Some(StopCause::Cancelled(reason)), _) => {
                if let Some(e) = self.ledger.cancel(id) {
                    self.finish(id, e, Outcome::Cancelled { reason }, details);
                }
            }
            (Some(StopCause::Timeout), _) => {
                self.fail_attempt(id, Failure::TimedOut { after_ms }, details)
            }
            (Some(StopCause::Hung(cause)), _) => {
                self.fail_attempt(id, Failure::Hung { after_ms, cause }, details)
            }
            (_, Ok(e)) if e.success() => {
                if let Some(entry) = self.ledger.succeed(id) {
                    self.finish(
                        id,
                        entry,
                        Outcome::Succeeded {
                            value: serde_json::Value::Null,
                        },
                        details,
                    );
                }
            }
            (_, Ok(exit)) => self.fail_attempt(id, Failure::Exit { exit }, details),
            (_, Err((message, cause))) => {
                // Not starting is not worth retrying.
                if let Some(AfterFailure::Final(e, f)) =
                    self.ledger
                        .fail(id, Failure::Start { message, cause }, Retry::Never)
                {
                    self.finish(id, e, Outcome::Failed { failure: f }, details);
                }
            }
        }
    }

    pub(super) fn pump_commands(&mut self) {
        loop {
            let Some(q) = self.queues.get_mut(&PoolKind::Command) else {
                return;
            };
            if q.is_empty() {
                return;
            }
            let free = self.slots.iter().position(|s| s.running.is_none());
            let slot = match free {
                Some(i) => i + 1,
                None if self.slots.len() < self.settings.workers => {
                    let (tx, rx) = mpsc::channel();
                    let slot = self.slots.len() + 1;
                    let events = self.events_tx.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("caiclust-slot-{slot}"))
                        .spawn(move || {
                            slot_thread(slot, rx, |report| {
                                events.send(Event::Slot { slot, report }).is_ok()
                            })
                        });
                    if spawned.is_err() {
                        return;
                    }
                    self.slots.push(CmdSlot {
                        jobs: tx,
                        running: None,
                    });
                    slot
                }
                None => return,
            };
            let Some(id) = q.pop_front() else { return };
            let Some(entry) = self.ledger.get(id) else {
                continue;
            };
            let TaskKind::Command(task) = &entry.task.kind else {
                continue;
            };
            let job = CmdJob {
                id,
                task: task.clone(),
                env: self.env.clone(),
                memory_limit: self.settings.output_memory_limit,
            };
            if self.ledger.start(id).is_none() {
                continue;
            }
            let s = &mut self.slots[slot - 1];
            s.running = Some(RunningCmd {
                id,
                pid: None,
                since: Instant::now(),
                stopping: None,
                watch: Watch::default(),
            });
            if s.jobs.send(job).is_err() {
                s.running = None;
                self.ledger.unstart(id);
                self.queues
                    .entry(PoolKind::Command)
                    .or_default()
                    .push_front(id);
                return;
            }
        }
    }
}
