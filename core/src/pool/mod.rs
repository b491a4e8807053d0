//! The local pools' scheduler: one thread that owns every task and
//! worker, reacts to events (requests, answers, exits, ticks) and keeps
//! the ledger. Its parts, one job each:
//!
//! - [`dispatch`]: admission of submitted tasks and which task goes to
//!   which worker, in what batches (the policy itself is pure code, in
//!   `dispatch::policy`);
//! - [`supervise`]: starting workers and fork servers, reconciling a
//!   worker's EOF with its exit, attributing crashes;
//! - [`slots`]: command slots;
//! - [`timers`]: timeouts, kill escalation, the hang watchdog;
//! - [`answers`] and [`outcomes`]: what a worker answered, and how a task
//!   ends (retries, halting, the ledger, results to the cluster);
//! - [`io`]: the channels to processes; no write ever blocks this thread;
//! - [`events`]: what the loop reacts to, [`state`]: what it knows.

mod answers;
mod dispatch;
mod events;
mod io;
mod outcomes;
mod slots;
mod state;
mod supervise;
mod timers;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::command::SlotReport;
use crate::ledger::Ledger;
use crate::messages::{Notice, Request, Spare};
use crate::plan::Settings;
use crate::task::{PoolKind, Task, TaskId, TaskResult};

pub(crate) use events::Event;
use state::{CallPool, CmdSlot, Worker};
#[cfg(unix)]
pub(crate) use supervise::prepare_command;

/// Maps keyed by the three pool kinds, hashed by their discriminant (the
/// default SipHash costs more than the lookups it serves, on every task).
type KindMap<V> = HashMap<PoolKind, V, std::hash::BuildHasherDefault<KindHasher>>;

#[derive(Default)]
struct KindHasher(u64);

impl std::hash::Hasher for KindHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(b));
        }
    }
}

/// Pending tasks are taken into the ledger while fewer than this many are
/// queued (enough for every worker's next batches).
const ADMIT_AHEAD: usize = 8192;

/// At most this many events between two hand-outs of tasks.
const EVENTS_PER_TURN: usize = 64;

/// How many tasks were submitted, and how many ended which way (what
/// the halt policy weighs).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    submitted: u64,
    succeeded: u64,
    failed: u64,
}

/// Where results go: to the cluster, in one message per turn of the
/// loop, in groups the cluster hands back emptied.
struct Outlet {
    results: Sender<Vec<TaskResult>>,
    /// Emptied groups the cluster handed back.
    spare: Spare,
    /// Results finished since the last send.
    outbox: Vec<TaskResult>,
}

impl Outlet {
    fn send(&mut self) {
        if !self.outbox.is_empty() {
            let next = self
                .spare
                .lock()
                .ok()
                .and_then(|mut s| s.pop())
                .unwrap_or_default();
            let _ = self.results.send(std::mem::replace(&mut self.outbox, next));
        }
    }
}

/// The scheduler of a cluster's local pools (see the module's doc).
pub(crate) struct Scheduler {
    settings: Arc<Settings>,
    env: Arc<BTreeMap<String, String>>,
    events: Receiver<Event>,
    events_tx: Sender<Event>,
    outlet: Outlet,
    notices: Sender<Notice>,
    ledger: Ledger,
    /// Submitted, not yet in the ledger: large submissions are taken in
    /// as the queues run low (a ledger the size of what is in play, not
    /// of everything submitted). Runs of consecutive ids.
    pending: VecDeque<(TaskId, std::vec::IntoIter<Task>)>,
    queues: KindMap<VecDeque<TaskId>>,
    pools: KindMap<CallPool>,
    slots: Vec<CmdSlot>,
    next_serial: u64,
    #[cfg_attr(not(unix), allow(dead_code))]
    socket_dir: Option<tempfile::TempDir>,
    kills: Vec<(Instant, Vec<u32>)>,
    tally: Tally,
    halted: Option<String>,
    shutdown: Option<bool>,
    /// Tasks that run alone (suspects of a crash), one per worker.
    isolated: HashSet<TaskId>,
}

impl Scheduler {
    pub fn new(
        settings: Settings,
        events: Receiver<Event>,
        events_tx: Sender<Event>,
        (results, spare): (Sender<Vec<TaskResult>>, Spare),
        notices: Sender<Notice>,
    ) -> Scheduler {
        let env = Arc::new(settings.env.clone());
        Scheduler {
            ledger: Ledger::new(settings.max_attempts),
            settings: Arc::new(settings),
            env,
            events,
            events_tx,
            outlet: Outlet {
                results,
                spare,
                outbox: Vec::new(),
            },
            notices,
            pending: VecDeque::new(),
            queues: KindMap::default(),
            pools: KindMap::default(),
            slots: Vec::new(),
            next_serial: 1,
            socket_dir: None,
            kills: Vec::new(),
            tally: Tally::default(),
            halted: None,
            shutdown: None,
            isolated: HashSet::new(),
        }
    }

    pub fn run(mut self) {
        if self.settings.python_workers_now {
            self.start_all_workers(PoolKind::Python);
        }
        loop {
            let timeout = self.tick_interval();
            match self.events.recv_timeout(timeout) {
                Ok(ev) => {
                    // Take what else is already waiting before pumping, but
                    // not too much: workers start on the first slices of a
                    // large submission while the rest is queued, and
                    // results go out between groups of answers.
                    let mut budget = EVENTS_PER_TURN;
                    let mut next = Some(ev);
                    while let Some(ev) = next.take() {
                        budget = budget.saturating_sub(match &ev {
                            Event::Request(Request::SubmitMany { .. }) => EVENTS_PER_TURN,
                            _ => 1,
                        });
                        self.handle(ev);
                        if budget > 0 {
                            next = self.events.try_recv().ok();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if self.shutdown.is_none() {
                        self.begin_shutdown(true);
                    }
                }
            }
            self.tick();
            self.pump();
            self.send_results();
            if self.finished() {
                break;
            }
        }
        self.stop_everything();
        self.send_results();
    }

    fn send_results(&mut self) {
        self.outlet.send();
    }

    fn tick_interval(&self) -> Duration {
        let busy = !self.kills.is_empty()
            || self.slots.iter().any(|s| s.running.is_some())
            || self.pools.values().any(|p| {
                p.workers
                    .iter()
                    .any(|w| !w.in_flight.is_empty() || !w.ready)
            });
        if busy {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(250)
        }
    }

    fn finished(&self) -> bool {
        self.shutdown.is_some() && self.ledger.len() == 0 && self.pending.is_empty()
    }

    // ---------------------------------------------------------------
    // Events

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Request(request) => self.on_request(request),
            Event::Connected {
                serial,
                pid,
                writer,
            } => self.connected(serial, pid, writer),
            Event::FromWorkerBatch { serial, msgs } => self.on_answers(serial, msgs),
            Event::WorkerEof { serial } => {
                self.worker_eof(serial);
                self.reap_workers();
            }
            Event::WorkerExited { serial, exit } => {
                self.worker_exited(serial, exit);
                self.reap_workers();
            }
            Event::FromServer { pool, msg } => self.on_server_message(pool, msg),
            Event::ServerEof { pool, exit } => self.server_gone(pool, exit),
            Event::Slot { slot, report } => match report {
                SlotReport::Started { id, pid } => self.command_started(slot, id, pid),
                SlotReport::Finished { id, done } => self.command_finished(slot, id, done),
            },
            Event::Diagnosis {
                id,
                pid,
                stalled,
                cause,
                detail,
            } => self.diagnosed(id, pid, stalled, cause, detail),
        }
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Submit(id, task) => {
                self.tally.submitted += 1;
                if self.pending.is_empty() {
                    self.admit_one(id, *task);
                } else {
                    // After the tasks submitted before it.
                    self.pending.push_back((id, vec![*task].into_iter()));
                }
            }
            Request::SubmitMany { first, tasks } => {
                self.tally.submitted += tasks.len() as u64;
                self.pending.push_back((first, tasks.into_iter()));
                self.admit(false);
            }
            Request::Cancel(id) => {
                self.admit(true);
                self.cancel(id, "cancelled")
            }
            Request::Withdraw(ids) => self.withdraw(ids),
            Request::Shutdown { kill } => self.begin_shutdown(kill),
        }
    }

    fn worker_mut(&mut self, serial: u64) -> Option<&mut Worker> {
        self.pools
            .values_mut()
            .flat_map(|p| p.workers.iter_mut())
            .find(|w| w.serial == serial)
    }

    fn locate(&self, serial: u64) -> Option<(PoolKind, usize)> {
        for (kind, p) in &self.pools {
            if let Some(i) = p.workers.iter().position(|w| w.serial == serial) {
                return Some((*kind, i));
            }
        }
        None
    }

    /// Where worker `serial` is now, trying `(kind, i)` first.
    fn relocate(&self, serial: u64, kind: PoolKind, i: usize) -> Option<(PoolKind, usize)> {
        let here = self
            .pools
            .get(&kind)
            .and_then(|p| p.workers.get(i))
            .is_some_and(|w| w.serial == serial);
        if here {
            Some((kind, i))
        } else {
            self.locate(serial)
        }
    }
}
