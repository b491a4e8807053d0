//! The scheduler: one thread that owns every task and worker, reacts to
//! events (submissions, answers, exits, ticks) and keeps the ledger.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::command::{slot_thread, CmdDone, CmdJob};
use crate::ledger::{AfterFailure, Closed, Ledger, Retry};
use crate::plan::{HaltWhen, Settings, StartMethod};
use crate::task::{
    ExitInfo, Failure, Outcome, Output, PoolKind, StartCause, Task, TaskId, TaskKind, TaskResult,
};
use crate::tree::{self, StopSignal, TreeSample};
use crate::watchdog;
use crate::worker::frame::{self, FrameReader};
use crate::worker::protocol::{self, ToParent};
use crate::worker::{PYTHON_WORKER, WORKER_ENV, WORKER_SOCKET_ENV};

/// Emptied result groups, handed back by the cluster for reuse.
pub(crate) type Spare = Arc<std::sync::Mutex<Vec<Vec<TaskResult>>>>;

/// Something the cluster reports besides results: a worker that died while
/// idle, a stalled task, a halt.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub task: Option<TaskId>,
    pub message: String,
}

// Fork servers and sockets exist on Unix only.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) enum Event {
    Submit(TaskId, Box<Task>),
    /// Tasks with consecutive ids from `first` (one event for a batch).
    SubmitMany {
        first: TaskId,
        tasks: Vec<Task>,
    },
    Cancel(TaskId),
    /// Cancel these where they have not begun; leave the running ones.
    Withdraw(Vec<TaskId>),
    Shutdown {
        kill: bool,
    },
    Connected {
        serial: u64,
        pid: u32,
        writer: Box<dyn Write + Send>,
    },
    /// Answers read in one go.
    FromWorkerBatch {
        serial: u64,
        msgs: Vec<ToParent>,
    },
    /// The worker's channel closed.
    WorkerEof {
        serial: u64,
    },
    /// The worker process ended (seen by waiting for it).
    WorkerExited {
        serial: u64,
        exit: Option<ExitInfo>,
    },
    FromServer {
        pool: PoolKind,
        msg: ToParent,
    },
    ServerEof {
        pool: PoolKind,
        exit: Option<ExitInfo>,
    },
    CmdStarted {
        slot: usize,
        id: TaskId,
        pid: u32,
    },
    CmdFinished {
        slot: usize,
        id: TaskId,
        done: CmdDone,
    },
    Diagnosis {
        id: TaskId,
        pid: u32,
        stalled: Duration,
        cause: Option<String>,
        detail: String,
    },
}

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

/// When a group of answers arrived, and each one's share of the time since
/// the first of them began (`None` for a lone answer).
#[derive(Debug, Clone, Copy)]
struct GroupClock {
    now: Instant,
    share: Option<Duration>,
}

/// Why a process is being stopped.
#[derive(Debug, Clone, PartialEq)]
enum StopCause {
    Timeout,
    Hung(String),
    Cancelled(String),
}

/// The hang watchdog's view of one running attempt.
#[derive(Debug, Default)]
struct Watch {
    last: Option<(Instant, TreeSample)>,
    idle_since: Option<Instant>,
    diagnosing: bool,
}

struct InFlight {
    id: TaskId,
    /// Cancelled while queued in the worker: its answer is dropped.
    dropped: bool,
}

struct Worker {
    serial: u64,
    slot: usize,
    pid: Option<u32>,
    writer: Option<Box<dyn Write + Send>>,
    ready: bool,
    in_flight: VecDeque<InFlight>,
    /// When the task at the head of `in_flight` began.
    head_since: Option<Instant>,
    head_started_wall: Option<SystemTime>,
    served: u64,
    retiring: bool,
    stopping: Option<StopCause>,
    watch: Watch,
    /// The process ended, and how (inner `None`: unknown).
    exit: Option<Option<ExitInfo>>,
    /// Its channel reached EOF.
    channel_closed: bool,
    /// When to stop waiting for the other half of its end.
    gone_by: Option<Instant>,
    /// It was signalled to go because its channel closed early.
    nudged: bool,
}

struct Server {
    pid: u32,
    writer: Option<Box<dyn Write + Send>>,
    ready: bool,
    /// Fork requests sent before the server said hello.
    backlog: Vec<u64>,
}

struct CallPool {
    workers: Vec<Worker>,
    server: Option<Server>,
    start_failures: u32,
    broken: Option<String>,
    /// Mean task time (seconds), for how many tasks to hand out at once.
    mean_task: f64,
}

struct CmdSlot {
    jobs: Sender<CmdJob>,
    running: Option<RunningCmd>,
}

struct RunningCmd {
    id: TaskId,
    pid: Option<u32>,
    since: Instant,
    stopping: Option<StopCause>,
    watch: Watch,
}

pub(crate) struct Scheduler {
    settings: Arc<Settings>,
    env: Arc<BTreeMap<String, String>>,
    events: Receiver<Event>,
    events_tx: Sender<Event>,
    results: Sender<Vec<TaskResult>>,
    /// Emptied groups the cluster handed back.
    spare: Spare,
    /// Results finished since the last send: they go to the cluster in
    /// one message per turn of the event loop.
    outbox: Vec<TaskResult>,
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
    submitted: u64,
    succeeded: u64,
    failed: u64,
    halted: Option<String>,
    shutdown: Option<bool>,
    /// Tasks that run alone (suspects of a crash), one per worker.
    isolated: std::collections::HashSet<TaskId>,
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
            results,
            spare,
            outbox: Vec::new(),
            notices,
            pending: VecDeque::new(),
            queues: KindMap::default(),
            pools: KindMap::default(),
            slots: Vec::new(),
            next_serial: 1,
            socket_dir: None,
            kills: Vec::new(),
            submitted: 0,
            succeeded: 0,
            failed: 0,
            halted: None,
            shutdown: None,
            isolated: std::collections::HashSet::new(),
        }
    }

    pub fn run(mut self) {
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
                            Event::SubmitMany { .. } => EVENTS_PER_TURN,
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
            Event::Submit(id, task) => {
                self.submitted += 1;
                if self.pending.is_empty() {
                    self.admit_one(id, *task);
                } else {
                    // After the tasks submitted before it.
                    self.pending.push_back((id, vec![*task].into_iter()));
                }
            }
            Event::SubmitMany { first, tasks } => {
                self.submitted += tasks.len() as u64;
                self.pending.push_back((first, tasks.into_iter()));
                self.admit(false);
            }
            Event::Cancel(id) => {
                self.admit(true);
                self.cancel(id, "cancelled")
            }
            Event::Withdraw(ids) => self.withdraw(ids),
            Event::Shutdown { kill } => self.begin_shutdown(kill),
            Event::Connected {
                serial,
                pid,
                writer,
            } => {
                if let Some(w) = self.worker_mut(serial) {
                    w.pid = Some(pid);
                    w.writer = Some(writer);
                    w.ready = true;
                }
            }
            Event::FromWorkerBatch { serial, msgs } => {
                // One clock reading for the group: its answers were
                // written together, and the time since the first of them
                // began is shared out among them.
                let now = Instant::now();
                let mut at = self.locate(serial);
                let answers = msgs.iter().filter(|m| m.is_answer()).count() as u32;
                let share = match at {
                    Some((kind, i)) if answers > 1 => self.pools[&kind].workers[i]
                        .head_since
                        .map(|t| now.saturating_duration_since(t) / answers),
                    _ => None,
                };
                let clock = GroupClock { now, share };
                for msg in msgs {
                    let Some((kind, i)) = at else { return };
                    at = self.on_worker_message(serial, kind, i, msg, clock);
                }
            }
            Event::WorkerEof { serial } => {
                if let Some(w) = self.worker_mut(serial) {
                    w.channel_closed = true;
                    w.writer = None;
                    if w.exit.is_some() {
                        w.gone_by = Some(Instant::now());
                    } else if w.gone_by.is_none() {
                        w.gone_by = Some(Instant::now() + Duration::from_millis(500));
                    }
                }
                self.reap_workers();
            }
            Event::WorkerExited { serial, exit } => {
                self.worker_exited(serial, exit);
                self.reap_workers();
            }
            Event::FromServer { pool, msg } => self.on_server_message(pool, msg),
            Event::ServerEof { pool, exit } => self.server_gone(pool, exit),
            Event::CmdStarted { slot, id, pid } => {
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
            Event::CmdFinished { slot, id, done } => self.command_finished(slot, id, done),
            Event::Diagnosis {
                id,
                pid,
                stalled,
                cause,
                detail,
            } => self.diagnosed(id, pid, stalled, cause, detail),
        }
    }

    /// Take pending tasks into the ledger and the queues: until enough
    /// are queued, or (`all`) every one, as a cancel, halt or kill needs.
    fn admit(&mut self, all: bool) {
        let mut queued: usize = self.queues.values().map(VecDeque::len).sum();
        let ahead = ADMIT_AHEAD.max(self.settings.workers * 1024);
        while all || queued < ahead {
            let Some((next, tasks)) = self.pending.front_mut() else {
                return;
            };
            let Some(task) = tasks.next() else {
                self.pending.pop_front();
                continue;
            };
            let id = *next;
            *next += 1;
            self.admit_one(id, task);
            queued += 1;
        }
    }

    fn admit_one(&mut self, id: TaskId, task: Task) {
        let pool = task.pool();
        self.ledger.add(id, task);
        if self.halted.is_some() || self.shutdown == Some(true) {
            let reason = self
                .halted
                .clone()
                .unwrap_or_else(|| "the cluster is shutting down".into());
            self.cancel_queued(id, &reason);
        } else {
            self.queues.entry(pool).or_default().push_back(id);
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

    /// Handle one message of worker `serial` (at `kind`, `i`), answered at
    /// `now`; returns where the worker is afterwards.
    fn on_worker_message(
        &mut self,
        serial: u64,
        kind: PoolKind,
        i: usize,
        msg: ToParent,
        clock: GroupClock,
    ) -> Option<(PoolKind, usize)> {
        self.answered(kind, i, msg, clock);
        self.relocate(serial, kind, i)
    }

    fn answered(&mut self, kind: PoolKind, i: usize, msg: ToParent, clock: GroupClock) {
        let (id, result, payload) = match msg {
            ToParent::Hello { hello } => {
                let pool = self.pools.get_mut(&kind).expect("located pool");
                let w = &mut pool.workers[i];
                w.pid = Some(hello.pid);
                w.ready = true;
                pool.start_failures = 0;
                return;
            }
            ToParent::Ok { id, ok } => (id, Ok(ok), None),
            ToParent::Err { id, err } => (id, Err(err), None),
            ToParent::Bytes { id, bytes } => (id, Ok(serde_json::Value::Null), Some(bytes)),
            _ => return,
        };
        let now = clock.now;
        let pool = self.pools.get_mut(&kind).expect("located pool");
        let w = &mut pool.workers[i];
        let Some(head) = w.in_flight.pop_front() else {
            return;
        };
        if head.id != id {
            let pid = w.pid.unwrap_or(0);
            let _ = self.notices.send(Notice {
                task: Some(id),
                message: format!(
                    "worker {pid} answered task {id} while task {} was expected; stopping it",
                    head.id
                ),
            });
            w.in_flight.push_front(head);
            self.stop_worker(kind, i, StopCause::Cancelled("protocol error".into()));
            return;
        }
        let runtime = match (clock.share, w.head_since) {
            (Some(share), _) => share,
            (None, Some(t)) => now.saturating_duration_since(t),
            (None, None) => Duration::ZERO,
        };
        let started = w.head_started_wall;
        let pid = w.pid;
        let slot = w.slot;
        w.served += 1;
        w.watch = Watch::default();
        if w.in_flight.is_empty() {
            w.head_since = None;
            w.head_started_wall = None;
        } else {
            // The next one began as this one ended.
            w.head_since = Some(w.head_since.map_or(now, |t| t + runtime).min(now));
            w.head_started_wall = Some(started.map_or_else(SystemTime::now, |t| t + runtime));
        }
        pool.mean_task = if pool.mean_task == 0.0 {
            runtime.as_secs_f64()
        } else {
            0.8 * pool.mean_task + 0.2 * runtime.as_secs_f64()
        };
        if let Some(limit) = self.settings.recycle_after {
            if w.served >= limit && !w.retiring {
                w.retiring = true;
            }
        }
        if head.dropped {
            return;
        }
        let details = Details {
            started,
            runtime,
            exit: None,
            pid,
            slot: Some(slot),
            stdout: Output::Empty,
            stderr: Output::Empty,
            payload,
        };
        match result {
            Ok(value) => {
                if let Some(e) = self.ledger.succeed(id) {
                    self.finish(id, e, Outcome::Succeeded { value }, details);
                }
            }
            Err(err) => {
                let failure = if kind == PoolKind::Python {
                    Failure::Exception {
                        type_name: err.type_name,
                        message: err.message,
                        traceback: err.traceback,
                    }
                } else if err.type_name == "panic" {
                    Failure::Error {
                        message: format!("panicked: {}", err.message),
                    }
                } else {
                    Failure::Error {
                        message: err.message,
                    }
                };
                self.fail_attempt(id, failure, details);
            }
        }
    }

    fn worker_exited(&mut self, serial: u64, exit: Option<ExitInfo>) {
        if let Some(w) = self.worker_mut(serial) {
            w.exit = Some(exit);
            w.writer = None;
            // Answers still in the channel arrive before its EOF; a task's
            // child holding the channel open must not keep us waiting.
            let by = Instant::now() + Duration::from_millis(300);
            w.gone_by = Some(if w.channel_closed { Instant::now() } else { by });
        }
    }

    /// Finish with workers whose process ended and whose channel closed (or
    /// that ran out of time for either).
    fn reap_workers(&mut self) {
        let now = Instant::now();
        let mut done = Vec::new();
        let mut nudge = Vec::new();
        for p in self.pools.values_mut() {
            for w in &mut p.workers {
                let Some(by) = w.gone_by else { continue };
                if w.exit.is_some() && (w.channel_closed || now >= by) {
                    done.push(w.serial);
                } else if now >= by {
                    if !w.nudged {
                        // The channel closed but the process lives on.
                        w.nudged = true;
                        w.gone_by = Some(now + Duration::from_secs(1));
                        if let Some(pid) = w.pid {
                            nudge.push(pid);
                        }
                    } else {
                        done.push(w.serial);
                    }
                }
            }
        }
        for pid in nudge {
            self.kill_now(pid);
        }
        for serial in done {
            self.worker_gone(serial);
        }
    }

    fn worker_gone(&mut self, serial: u64) {
        let Some((kind, i)) = self.locate(serial) else {
            return;
        };
        let pool = self.pools.get_mut(&kind).expect("located pool");
        let w = pool.workers.remove(i);
        let exit = w.exit.flatten();
        let pid = w.pid.unwrap_or(0);
        if !w.ready && w.stopping.is_none() && self.shutdown.is_none() {
            pool.start_failures += 1;
            if pool.start_failures >= self.settings.max_start_failures {
                let what = match kind {
                    PoolKind::Python => {
                        format!("Python workers ({})", self.settings.python.display())
                    }
                    _ => "Rust workers".to_string(),
                };
                pool.broken = Some(format!(
                    "{what} exit before they are ready ({} in a row; last: {}); see the workers' stderr",
                    pool.start_failures,
                    exit.map_or("exit status unknown".into(), |e| e.to_string()),
                ));
            }
        }
        if let Some(pid) = w.pid {
            // Leftovers of the worker's tree (a task's children).
            self.kill_now(pid);
        }
        let mut in_flight = w.in_flight;
        // Answers travel in groups (see worker::FLUSH_AFTER): a worker that
        // dies with several tasks handed out may have finished some of
        // them, and which one crashed it is not known. None is blamed; each
        // runs again alone, where a crash is its own.
        let live: Vec<TaskId> = in_flight
            .iter()
            .filter(|f| !f.dropped)
            .map(|f| f.id)
            .collect();
        if w.stopping.is_none() && live.len() > 1 {
            let _ = self.notices.send(Notice {
                task: None,
                message: format!(
                    "worker {pid} died ({}) with {} tasks handed out; they run again one at a time, to find the one that crashed it",
                    exit.map_or("exit status unknown".into(), |e| e.to_string()),
                    live.len()
                ),
            });
            for &id in live.iter().rev() {
                self.ledger.unstart(id);
                if self.ledger.get(id).is_some() {
                    self.isolated.insert(id);
                    self.queues.entry(kind).or_default().push_front(id);
                }
            }
            in_flight.clear();
        }
        if let Some(head) = in_flight.pop_front() {
            let details = Details {
                started: w.head_started_wall,
                runtime: w.head_since.map_or(Duration::ZERO, |t| t.elapsed()),
                exit,
                pid: w.pid,
                slot: Some(w.slot),
                stdout: Output::Empty,
                stderr: Output::Empty,
                payload: None,
            };
            let after_ms = details.runtime.as_millis() as u64;
            let failure = match &w.stopping {
                Some(StopCause::Timeout) => Ok(Failure::TimedOut { after_ms }),
                Some(StopCause::Hung(cause)) => Ok(Failure::Hung {
                    after_ms,
                    cause: cause.clone(),
                }),
                Some(StopCause::Cancelled(reason)) => Err(reason.clone()),
                None => Ok(Failure::WorkerDied { exit, pid }),
            };
            match failure {
                Err(reason) => {
                    if let Some(e) = self.ledger.cancel(head.id) {
                        self.finish(head.id, e, Outcome::Cancelled { reason }, details);
                    }
                }
                Ok(_) if head.dropped => self.ledger.unstart(head.id),
                Ok(failure) => {
                    if matches!(failure, Failure::WorkerDied { .. }) {
                        let again = self.ledger.get(head.id).is_some_and(|e| e.free == 0);
                        let _ = self.notices.send(Notice {
                            task: Some(head.id),
                            message: format!(
                                "worker {pid} died ({}) while running task {}{}",
                                exit.map_or("exit status unknown".into(), |e| e.to_string()),
                                head.id,
                                if again { "; it runs once more on a new worker, in case the crash was not its own" } else { "" }
                            ),
                        });
                    }
                    self.fail_attempt(head.id, failure, details)
                }
            }
        } else if w.stopping.is_none() && !w.retiring && self.shutdown.is_none() && w.ready {
            let _ = self.notices.send(Notice {
                task: None,
                message: format!(
                    "worker {pid} exited between tasks ({}); a new one replaces it",
                    exit.map_or("exit status unknown".into(), |e| e.to_string())
                ),
            });
        }
        // Handed out but never begun: back to the front of the queue.
        for f in in_flight.into_iter().rev() {
            if f.dropped {
                continue;
            }
            self.ledger.unstart(f.id);
            if self.ledger.get(f.id).is_some() {
                self.queues.entry(kind).or_default().push_front(f.id);
            }
        }
    }

    fn on_server_message(&mut self, kind: PoolKind, msg: ToParent) {
        let Some(pool) = self.pools.get_mut(&kind) else {
            return;
        };
        match msg {
            ToParent::Hello { .. } => {
                if let Some(s) = pool.server.as_mut() {
                    s.ready = true;
                    let backlog = std::mem::take(&mut s.backlog);
                    for serial in backlog {
                        send_fork(s, serial);
                    }
                }
            }
            ToParent::Forked { forked, pid } => {
                if let Some(w) = pool.workers.iter_mut().find(|w| w.serial == forked) {
                    w.pid.get_or_insert(pid);
                }
            }
            ToParent::ForkError {
                fork_error,
                message,
            } => {
                if let Some(i) = pool.workers.iter().position(|w| w.serial == fork_error) {
                    pool.workers.remove(i);
                    pool.start_failures += 1;
                    if pool.start_failures >= self.settings.max_start_failures {
                        pool.broken = Some(format!("the fork server cannot fork: {message}"));
                    }
                }
            }
            ToParent::ExitedCode { exited, code } => {
                let serial = pool
                    .workers
                    .iter()
                    .find(|w| w.pid == Some(exited))
                    .map(|w| w.serial);
                if let Some(serial) = serial {
                    self.worker_exited(serial, Some(ExitInfo::Code(code)));
                }
            }
            ToParent::ExitedSignal { exited, signal } => {
                let serial = pool
                    .workers
                    .iter()
                    .find(|w| w.pid == Some(exited))
                    .map(|w| w.serial);
                if let Some(serial) = serial {
                    self.worker_exited(serial, Some(ExitInfo::Signal(signal)));
                }
            }
            _ => {}
        }
    }

    fn server_gone(&mut self, kind: PoolKind, exit: Option<ExitInfo>) {
        let Some(pool) = self.pools.get_mut(&kind) else {
            return;
        };
        pool.server = None;
        // Workers it had not forked yet will never come.
        let unborn: Vec<u64> = pool
            .workers
            .iter()
            .filter(|w| w.pid.is_none())
            .map(|w| w.serial)
            .collect();
        pool.workers.retain(|w| w.pid.is_some());
        if self.shutdown.is_none() {
            pool.start_failures += 1;
            let _ = self.notices.send(Notice {
                task: None,
                message: format!(
                    "the fork server exited ({}); {}",
                    exit.map_or("exit status unknown".into(), |e| e.to_string()),
                    if pool.start_failures >= self.settings.max_start_failures {
                        "giving up"
                    } else {
                        "starting a new one"
                    }
                ),
            });
            if pool.start_failures >= self.settings.max_start_failures {
                pool.broken = Some(format!(
                    "the fork server keeps exiting ({})",
                    exit.map_or("exit status unknown".into(), |e| e.to_string())
                ));
            }
        }
        let _ = unborn;
    }

    fn command_finished(&mut self, slot: usize, id: TaskId, done: CmdDone) {
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

    fn diagnosed(
        &mut self,
        id: TaskId,
        pid: u32,
        stalled: Duration,
        cause: Option<String>,
        detail: String,
    ) {
        let message = match &cause {
            Some(c) => format!(
                "task {id}: no progress for {:.1} s in process {pid}; likely cause: {c} ({detail}); stopping it",
                stalled.as_secs_f64()
            ),
            None => format!(
                "task {id}: no progress for {:.1} s in process {pid} ({detail}); the probe found no known hazard, letting it run",
                stalled.as_secs_f64()
            ),
        };
        let _ = self.notices.send(Notice {
            task: Some(id),
            message,
        });
        let Some(cause) = cause else {
            return;
        };
        // Stop it if it is still that attempt.
        for (kind, p) in &self.pools {
            if let Some(i) = p
                .workers
                .iter()
                .position(|w| w.pid == Some(pid) && w.in_flight.front().map(|f| f.id) == Some(id))
            {
                let kind = *kind;
                self.stop_worker(kind, i, StopCause::Hung(cause));
                return;
            }
        }
        let mut to_stop = None;
        for s in &mut self.slots {
            if let Some(r) = s.running.as_mut() {
                if r.id == id && r.pid == Some(pid) && r.stopping.is_none() {
                    r.stopping = Some(StopCause::Hung(cause.clone()));
                    to_stop = Some(pid);
                }
            }
        }
        if let Some(pid) = to_stop {
            self.stop_tree(pid);
        }
    }

    // ---------------------------------------------------------------
    // Outcomes

    fn fail_attempt(&mut self, id: TaskId, failure: Failure, details: Details) {
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

    fn finish(&mut self, id: TaskId, entry: Closed, outcome: Outcome, details: Details) {
        if !self.isolated.is_empty() {
            self.isolated.remove(&id);
        }
        match &outcome {
            Outcome::Succeeded { .. } => self.succeeded += 1,
            Outcome::Failed { .. } => self.failed += 1,
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
        self.outbox.push(result);
        self.check_halt();
    }

    fn check_halt(&mut self) {
        if self.halted.is_some() {
            return;
        }
        let policy = self.settings.halt;
        if !policy.triggered(self.succeeded, self.failed, self.submitted) {
            return;
        }
        let reason = format!(
            "halted ({} succeeded, {} failed of {} submitted)",
            self.succeeded, self.failed, self.submitted
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

    fn cancel_queued(&mut self, id: TaskId, reason: &str) {
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

    fn cancel(&mut self, id: TaskId, reason: &str) {
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
    }

    /// Cancel the tasks of `ids` that have not begun: queued ones, and
    /// ones handed to a worker behind the task it is running (as far as
    /// the parent knows: answers come back in groups). They end as
    /// cancelled with no attempt made.
    fn withdraw(&mut self, ids: Vec<TaskId>) {
        const REASON: &str = "withdrawn before it started";
        self.admit(true);
        let ids: std::collections::HashSet<TaskId> = ids.into_iter().collect();
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

    fn stop_all_running(&mut self, reason: &str) {
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

    fn begin_shutdown(&mut self, kill: bool) {
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

    // ---------------------------------------------------------------
    // Starting and stopping processes

    fn stop_worker(&mut self, kind: PoolKind, i: usize, cause: StopCause) {
        let Some(pool) = self.pools.get_mut(&kind) else {
            return;
        };
        let w = &mut pool.workers[i];
        if w.stopping.is_some() {
            return;
        }
        w.stopping = Some(cause);
        w.writer = None;
        if let Some(pid) = w.pid {
            self.stop_tree(pid);
        }
    }

    /// TERM now, KILL after the grace period.
    fn stop_tree(&mut self, pid: u32) {
        let pids = tree::signal_tree(pid, StopSignal::Term);
        self.kills
            .push((Instant::now() + self.settings.grace, pids));
    }

    fn kill_now(&mut self, pid: u32) {
        tree::signal_tree(pid, StopSignal::Kill);
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let due: Vec<Vec<u32>> = {
            let (due, keep): (Vec<_>, Vec<_>) =
                self.kills.drain(..).partition(|(at, _)| *at <= now);
            self.kills = keep;
            due.into_iter().map(|(_, p)| p).collect()
        };
        for pids in due {
            for pid in pids {
                if tree::alive(pid) {
                    tree::signal_tree(pid, StopSignal::Kill);
                }
            }
        }
        self.reap_workers();
        self.check_timeouts(now);
        if let Some(stall) = self.settings.stall_after {
            self.watch(now, stall);
        }
    }

    fn timeout_of(&self, id: TaskId) -> Option<Duration> {
        self.ledger
            .get(id)
            .and_then(|e| e.task.timeout)
            .or(self.settings.timeout)
    }

    fn check_timeouts(&mut self, now: Instant) {
        let mut stop_workers = Vec::new();
        for (kind, p) in &self.pools {
            for (i, w) in p.workers.iter().enumerate() {
                let (Some(head), Some(since)) = (w.in_flight.front(), w.head_since) else {
                    continue;
                };
                if w.stopping.is_some() {
                    continue;
                }
                if let Some(t) = self.timeout_of(head.id) {
                    if now.duration_since(since) >= t {
                        stop_workers.push((*kind, i));
                    }
                }
            }
        }
        for (kind, i) in stop_workers {
            self.stop_worker(kind, i, StopCause::Timeout);
        }
        let mut stop_pids = Vec::new();
        let timeouts: Vec<Option<Duration>> = self
            .slots
            .iter()
            .map(|s| s.running.as_ref().and_then(|r| self.timeout_of(r.id)))
            .collect();
        for (s, t) in self.slots.iter_mut().zip(timeouts) {
            if let (Some(r), Some(t)) = (s.running.as_mut(), t) {
                if r.stopping.is_none() && now.duration_since(r.since) >= t {
                    r.stopping = Some(StopCause::Timeout);
                    if let Some(pid) = r.pid {
                        stop_pids.push(pid);
                    }
                }
            }
        }
        for pid in stop_pids {
            self.stop_tree(pid);
        }
    }

    /// The hang watchdog: a running attempt whose process tree used no CPU
    /// and had no running thread for `stall` is inspected with the probe.
    fn watch(&mut self, now: Instant, stall: Duration) {
        let period = (stall / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let method = self.settings.start_method;
        let mut diagnose = Vec::new();
        let mut visit = |id: TaskId, pid: u32, since: Instant, watch: &mut Watch| {
            if watch.diagnosing || now.duration_since(since) < stall / 2 {
                return;
            }
            if watch
                .last
                .as_ref()
                .is_some_and(|(t, _)| now.duration_since(*t) < period)
            {
                return;
            }
            let Some(sample) = tree::sample_tree(pid) else {
                return;
            };
            if let Some((t, prev)) = &watch.last {
                // Stalled: either asleep (no CPU, no running thread), or
                // spinning in the kernel (sched_yield loops of a runtime
                // waiting for threads that do not exist): nearly all of its
                // CPU time is system time.
                // Asleep allows a trickle (under 2% of one CPU): helper
                // threads that poll, like Python's Pool handlers.
                let kind = crate::hang::stall_kind(
                    sample.cpu_ticks.saturating_sub(prev.cpu_ticks),
                    sample.sys_ticks.saturating_sub(prev.sys_ticks),
                    now.duration_since(*t),
                );
                let asleep = kind == Some(crate::hang::HangKind::Blocked);
                let spinning = kind == Some(crate::hang::HangKind::Spinning);
                if asleep || spinning {
                    let idle = *watch.idle_since.get_or_insert(*t);
                    if now.duration_since(idle) >= stall {
                        watch.diagnosing = true;
                        diagnose.push((
                            id,
                            pid,
                            now.duration_since(idle),
                            sample.clone(),
                            spinning,
                        ));
                    }
                } else {
                    watch.idle_since = None;
                }
            }
            watch.last = Some((now, sample));
        };
        for p in self.pools.values_mut() {
            for w in &mut p.workers {
                if let (Some(head), Some(since), Some(pid), None) =
                    (w.in_flight.front(), w.head_since, w.pid, &w.stopping)
                {
                    visit(head.id, pid, since, &mut w.watch);
                }
            }
        }
        for s in &mut self.slots {
            if let Some(r) = s.running.as_mut() {
                if let (Some(pid), None) = (r.pid, &r.stopping) {
                    visit(r.id, pid, r.since, &mut r.watch);
                }
            }
        }
        for (id, pid, stalled, sample, spinning) in diagnose {
            let events = self.events_tx.clone();
            let workers = self.settings.workers;
            std::thread::spawn(move || {
                let (cause, detail) = watchdog::diagnose(pid, method, workers, &sample, spinning);
                let _ = events.send(Event::Diagnosis {
                    id,
                    pid,
                    stalled,
                    cause,
                    detail,
                });
            });
        }
    }

    /// Start workers and hand out tasks.
    fn pump(&mut self) {
        if self.halted.is_some() {
            return;
        }
        self.admit(false);
        self.pump_commands();
        for kind in [PoolKind::Python, PoolKind::Rust] {
            self.pump_pool(kind);
        }
    }

    fn pump_commands(&mut self) {
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
                        .spawn(move || slot_thread(slot, rx, events));
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

    fn pump_pool(&mut self, kind: PoolKind) {
        let queued = self.queues.get(&kind).map_or(0, |q| q.len());
        if queued == 0 {
            // Retire workers that served their quota and are idle.
            self.retire_idle(kind);
            return;
        }
        let workers_wanted = self.settings.workers;
        let pool = self.pools.entry(kind).or_insert_with(|| CallPool {
            workers: Vec::new(),
            server: None,
            start_failures: 0,
            broken: None,
            mean_task: 0.0,
        });
        if let Some(reason) = pool.broken.clone() {
            let ids: Vec<TaskId> = self
                .queues
                .get_mut(&kind)
                .map(|q| q.drain(..).collect())
                .unwrap_or_default();
            for id in ids {
                if self.ledger.start(id).is_some() {
                    if let Some(AfterFailure::Final(e, f)) = self.ledger.fail(
                        id,
                        Failure::Start {
                            message: reason.clone(),
                            cause: StartCause::Other,
                        },
                        Retry::Never,
                    ) {
                        self.finish(id, e, Outcome::Failed { failure: f }, Details::none());
                    }
                }
            }
            return;
        }
        // Start workers up to the limit.
        let live = pool
            .workers
            .iter()
            .filter(|w| w.stopping.is_none() && !w.retiring)
            .count();
        let busy: usize = pool.workers.iter().map(|w| w.in_flight.len()).sum();
        let want = workers_wanted.min(queued + busy).max(1);
        if live < want {
            for _ in live..want {
                if let Err(message) = self.start_worker(kind) {
                    let pool = self.pools.get_mut(&kind).expect("pool exists");
                    pool.broken = Some(message);
                    return;
                }
            }
        }
        self.retire_idle(kind);
        // Hand out tasks.
        let pool = self.pools.get_mut(&kind).expect("pool exists");
        let ready: Vec<usize> = (0..pool.workers.len())
            .filter(|&i| {
                let w = &pool.workers[i];
                w.ready && w.writer.is_some() && w.stopping.is_none() && !w.retiring
            })
            .collect();
        if ready.is_empty() {
            return;
        }
        let per_worker_share = queued.div_ceil(ready.len()).max(1);
        let window = if pool.mean_task > 0.0 {
            ((0.002 / pool.mean_task) as usize).clamp(1, 512)
        } else {
            1
        }
        .min(per_worker_share);
        let window = match self.settings.recycle_after {
            Some(n) => window.min(n as usize),
            None => window,
        };
        // Tiny tasks: a second batch waits in the worker's pipe while it
        // runs the first, so it never idles waiting for the parent.
        let depth = if window > 1 { 2 * window } else { window };
        let queue = self.queues.entry(kind).or_default();
        let isolated = &self.isolated;
        let mut line = Vec::new();
        let mut ids = Vec::new();
        for i in ready {
            let w = &mut pool.workers[i];
            loop {
                // A worker running a suspect gets nothing else until it
                // answers.
                if !isolated.is_empty() && w.in_flight.iter().any(|f| isolated.contains(&f.id)) {
                    break;
                }
                let room = depth.saturating_sub(w.in_flight.len()).min(window);
                let room = match self.settings.recycle_after {
                    Some(n) => {
                        room.min((n.saturating_sub(w.served + w.in_flight.len() as u64)) as usize)
                    }
                    None => room,
                };
                if room == 0 || queue.is_empty() || w.writer.is_none() {
                    break;
                }
                let mut batch = Vec::with_capacity(room);
                while batch.len() < room {
                    let Some(&next) = queue.front() else { break };
                    let alone = !isolated.is_empty() && isolated.contains(&next);
                    if alone && !(batch.is_empty() && w.in_flight.is_empty()) {
                        break;
                    }
                    let Some(id) = queue.pop_front() else { break };
                    let is_call = self.ledger.get(id).is_some_and(|e| {
                        matches!(e.task.kind, TaskKind::Python(_) | TaskKind::Rust(_))
                    });
                    if is_call && self.ledger.start(id).is_some() {
                        batch.push(id);
                    }
                    if alone {
                        break;
                    }
                }
                if batch.is_empty() {
                    break;
                }
                let was_idle = w.in_flight.is_empty();
                w.in_flight
                    .extend(batch.iter().map(|&id| InFlight { id, dropped: false }));
                if was_idle {
                    w.head_since = Some(Instant::now());
                    w.head_started_wall = Some(SystemTime::now());
                }
                // The tasks as borrowed from the ledger, sent in one frame.
                let ledger = &self.ledger;
                let calls: Vec<protocol::CallRef> = batch
                    .iter()
                    .filter_map(|&id| match &ledger.get(id)?.task.kind {
                        TaskKind::Python(c) | TaskKind::Rust(c) => {
                            Some((id, c.function.as_str(), &c.args, c.payload.as_deref()))
                        }
                        TaskKind::Command(_) => None,
                    })
                    .collect();
                let sent = w.writer.as_mut().is_some_and(|wr| {
                    frame::send_batch(wr.as_mut(), &mut line, &calls, &mut ids).is_ok()
                });
                if !sent {
                    // The worker is going away; its EOF hands the tasks
                    // back.
                    w.writer = None;
                }
            }
        }
    }

    fn retire_idle(&mut self, kind: PoolKind) {
        if let Some(pool) = self.pools.get_mut(&kind) {
            for w in &mut pool.workers {
                if w.retiring && w.in_flight.is_empty() && w.writer.is_some() {
                    // Closing its input ends the worker's loop.
                    w.writer = None;
                }
            }
        }
    }

    fn start_worker(&mut self, kind: PoolKind) -> Result<(), String> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let pool = self.pools.get(&kind).expect("pool exists");
        let used: Vec<usize> = pool.workers.iter().map(|w| w.slot).collect();
        let slot = (1..).find(|s| !used.contains(s)).unwrap_or(1);
        let method = self.settings.start_method;
        let mut worker = Worker {
            serial,
            slot,
            pid: None,
            writer: None,
            ready: false,
            in_flight: VecDeque::new(),
            head_since: None,
            head_started_wall: None,
            served: 0,
            retiring: false,
            stopping: None,
            watch: Watch::default(),
            exit: None,
            channel_closed: false,
            gone_by: None,
            nudged: false,
        };
        match method {
            StartMethod::Spawn => {
                let mut cmd = self.worker_command(kind, None)?;
                cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
                let mut child = cmd.spawn().map_err(|e| self.start_error(kind, &e))?;
                let stdin = child.stdin.take().ok_or("no worker stdin")?;
                let stdout = child.stdout.take().ok_or("no worker stdout")?;
                worker.pid = Some(child.id());
                worker.writer = Some(Box::new(stdin));
                let events = self.events_tx.clone();
                spawn_reader(serial, Box::new(stdout), Some(child), events);
            }
            StartMethod::Forkserver | StartMethod::Fork => {
                self.ensure_server(kind)?;
                let pool = self.pools.get_mut(&kind).expect("pool exists");
                let server = pool.server.as_mut().ok_or("no fork server")?;
                if server.ready {
                    send_fork(server, serial);
                } else {
                    server.backlog.push(serial);
                }
            }
        }
        let pool = self.pools.get_mut(&kind).expect("pool exists");
        pool.workers.push(worker);
        Ok(())
    }

    fn start_error(&self, kind: PoolKind, e: &std::io::Error) -> String {
        match kind {
            PoolKind::Python => format!(
                "cannot start the Python interpreter {}: {e}",
                self.settings.python.display()
            ),
            _ => format!("cannot start a Rust worker: {e}"),
        }
    }

    fn rust_worker_exe(&self) -> Result<PathBuf, String> {
        match &self.settings.rust_worker {
            Some(p) => Ok(p.clone()),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find this program to start Rust workers: {e}")),
        }
    }

    /// The command line of a spawned worker, or of a fork server.
    fn worker_command(
        &self,
        kind: PoolKind,
        server_socket: Option<&PathBuf>,
    ) -> Result<Command, String> {
        let mut cmd = match kind {
            PoolKind::Python => {
                let mut c = Command::new(&self.settings.python);
                c.arg("-c").arg(PYTHON_WORKER);
                match server_socket {
                    None => {
                        c.arg("worker");
                    }
                    Some(sock) => {
                        c.arg("server").arg(sock);
                        if self.settings.start_method == StartMethod::Fork {
                            c.args(&self.settings.preload);
                        }
                    }
                }
                c
            }
            _ => {
                let mut c = Command::new(self.rust_worker_exe()?);
                match server_socket {
                    None => {
                        c.env(WORKER_ENV, "rust");
                    }
                    Some(sock) => {
                        c.env(WORKER_ENV, "rust-server")
                            .env(WORKER_SOCKET_ENV, sock);
                    }
                }
                c
            }
        };
        cmd.envs(self.env.iter());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; the closure allocates
            // nothing. Workers and fork servers die with the thread that
            // started them (the scheduler), so a parent killed outright
            // (SIGKILL) leaves no pool behind.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    Ok(())
                });
            }
        }
        Ok(cmd)
    }

    #[cfg(unix)]
    fn ensure_server(&mut self, kind: PoolKind) -> Result<(), String> {
        if self.pools.get(&kind).is_some_and(|p| p.server.is_some()) {
            return Ok(());
        }
        let sock = self.ensure_listener()?;
        let events = self.events_tx.clone();
        if kind == PoolKind::Rust && self.settings.start_method == StartMethod::Fork {
            // The template is this very process, forked: its workers see
            // everything the program set up before.
            let registry = self
                .settings
                .registry
                .clone()
                .ok_or("the fork start method for Rust tasks needs the functions: give the cluster builder the Registry (ClusterBuilder::registry)")?;
            let template =
                crate::worker::fork::fork_template(&registry, &sock, &self.settings.env)?;
            let pid = template.pid;
            let output = template.output;
            std::thread::spawn(move || {
                read_server(kind, Box::new(output), &events);
                let exit = crate::worker::fork::wait_for(pid);
                let _ = events.send(Event::ServerEof { pool: kind, exit });
            });
            let pool = self.pools.get_mut(&kind).expect("pool exists");
            pool.server = Some(Server {
                pid,
                writer: Some(Box::new(template.input)),
                ready: false,
                backlog: Vec::new(),
            });
            return Ok(());
        }
        let mut cmd = self.worker_command(kind, Some(&sock))?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| self.start_error(kind, &e))?;
        let stdin = child.stdin.take().ok_or("no server stdin")?;
        let stdout = child.stdout.take().ok_or("no server stdout")?;
        let pid = child.id();
        std::thread::spawn(move || {
            read_server(kind, Box::new(stdout), &events);
            let exit = child.wait().ok().map(ExitInfo::from_status);
            let _ = events.send(Event::ServerEof { pool: kind, exit });
        });
        let pool = self.pools.get_mut(&kind).expect("pool exists");
        pool.server = Some(Server {
            pid,
            writer: Some(Box::new(stdin)),
            ready: false,
            backlog: Vec::new(),
        });
        Ok(())
    }

    #[cfg(not(unix))]
    fn ensure_server(&mut self, _kind: PoolKind) -> Result<(), String> {
        Err("forkserver and fork need a Unix system; use spawn".into())
    }

    /// The Unix socket forked workers connect to, and its accept thread.
    #[cfg(unix)]
    fn ensure_listener(&mut self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.socket_dir {
            return Ok(dir.path().join("w.sock"));
        }
        let dir = tempfile::Builder::new()
            .prefix("caiclust-")
            .tempdir()
            .map_err(|e| format!("cannot create a folder for the worker socket: {e}"))?;
        let path = dir.path().join("w.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        let events = self.events_tx.clone();
        std::thread::spawn(move || accept_loop(listener, events));
        self.socket_dir = Some(dir);
        Ok(path)
    }

    /// Close every worker's input, wait a little for them to exit, then
    /// stop whatever is left.
    fn stop_everything(&mut self) {
        let mut pids = Vec::new();
        for p in self.pools.values_mut() {
            for w in &mut p.workers {
                w.writer = None;
                if let Some(pid) = w.pid {
                    pids.push(pid);
                }
            }
            if let Some(s) = p.server.as_mut() {
                s.writer = None;
                pids.push(s.pid);
            }
        }
        self.slots.clear();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && pids.iter().any(|&p| tree::alive(p)) {
            // Keep reaping readers' events so spawned children are waited.
            match self.events.recv_timeout(Duration::from_millis(10)) {
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for pid in pids {
            if tree::alive(pid) {
                tree::signal_tree(pid, StopSignal::Kill);
            }
        }
        for (_, pids) in self.kills.drain(..) {
            for pid in pids {
                if tree::alive(pid) {
                    tree::signal_tree(pid, StopSignal::Kill);
                }
            }
        }
    }
}

fn send_fork(server: &mut Server, serial: u64) {
    if let Some(w) = server.writer.as_mut() {
        let line = format!("{{\"fork\": {serial}}}\n");
        if w.write_all(line.as_bytes())
            .and_then(|_| w.flush())
            .is_err()
        {
            server.writer = None;
        }
    }
}

/// Read a fork server's reports until EOF.
#[cfg(unix)]
fn read_server(kind: PoolKind, out: Box<dyn std::io::Read + Send>, events: &Sender<Event>) {
    read_messages(BufReader::new(out), |msgs| {
        msgs.into_iter()
            .all(|msg| events.send(Event::FromServer { pool: kind, msg }).is_ok())
    });
}

/// Read a worker's answers until EOF; a second thread waits for the
/// process (when it is our child) and reports how it ended.
fn spawn_reader(
    serial: u64,
    out: Box<dyn std::io::Read + Send>,
    child: Option<Child>,
    events: Sender<Event>,
) {
    if let Some(mut child) = child {
        let events = events.clone();
        std::thread::spawn(move || {
            let exit = child.wait().ok().map(ExitInfo::from_status);
            let _ = events.send(Event::WorkerExited { serial, exit });
        });
    }
    std::thread::spawn(move || {
        read_answers(serial, FrameReader::new(out), &events);
        let _ = events.send(Event::WorkerEof { serial });
    });
}

/// Read a worker's answers until EOF, each group in one event.
fn read_answers<R: std::io::Read>(serial: u64, reader: FrameReader<R>, events: &Sender<Event>) {
    reader.read_groups(|msgs| events.send(Event::FromWorkerBatch { serial, msgs }).is_ok());
}

/// Read protocol lines until EOF, handing `deliver` every complete line
/// already read in as one group (answers to tiny tasks come in groups);
/// stop early when it returns false. Unreadable lines are reported.
fn read_messages<R: std::io::Read>(
    mut reader: BufReader<R>,
    mut deliver: impl FnMut(Vec<ToParent>) -> bool,
) {
    let mut line = Vec::new();
    loop {
        let mut batch = Vec::new();
        let mut eof = false;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
            }
            let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
            match protocol::parse_from_worker(trimmed) {
                Ok(msg) => batch.push(msg),
                Err(e) => eprintln!("caiclust: unreadable message from a worker: {e}"),
            }
            // Stop when no complete line is left in the buffer: reading
            // further would wait.
            if !reader.buffer().contains(&b'\n') {
                break;
            }
        }
        if (!batch.is_empty() && !deliver(batch)) || eof {
            return;
        }
    }
}

#[cfg(unix)]
fn accept_loop(listener: std::os::unix::net::UnixListener, events: Sender<Event>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let events = events.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let Ok(read_half) = stream.try_clone() else {
                return;
            };
            let mut reader = FrameReader::new(read_half);
            let Ok(Some(mut first)) = reader.next_frame() else {
                return;
            };
            let Some(ToParent::Hello { hello }) = first.pop() else {
                return;
            };
            let Some(serial) = hello.worker else { return };
            let _ = reader.get_ref().set_read_timeout(None);
            if events
                .send(Event::Connected {
                    serial,
                    pid: hello.pid,
                    writer: Box::new(SocketWriter(stream)),
                })
                .is_err()
            {
                return;
            }
            // The rest of the conversation, as for a spawned worker.
            read_answers(serial, reader, &events);
            let _ = events.send(Event::WorkerEof { serial });
        });
    }
}

/// The parent's end of a forked worker's socket: dropping it shuts the
/// socket for writing, which the worker reads as "no more tasks" (the
/// reading half lives on in the reader thread).
#[cfg(unix)]
struct SocketWriter(std::os::unix::net::UnixStream);

#[cfg(unix)]
impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(unix)]
impl Drop for SocketWriter {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

/// What to put in a result besides the outcome.
struct Details {
    started: Option<SystemTime>,
    runtime: Duration,
    exit: Option<ExitInfo>,
    pid: Option<u32>,
    slot: Option<usize>,
    stdout: Output,
    stderr: Output,
    payload: Option<Vec<u8>>,
}

impl Details {
    fn none() -> Details {
        Details {
            started: None,
            runtime: Duration::ZERO,
            exit: None,
            pid: None,
            slot: None,
            stdout: Output::Empty,
            stderr: Output::Empty,
            payload: None,
        }
    }
}
