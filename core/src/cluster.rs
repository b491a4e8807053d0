//! The public face: a [`Cluster`] of workers, built from the rules'
//! recommendation ([`Cluster::auto`]) or explicit choices
//! ([`Cluster::builder`]), that takes tasks and gives back one result each.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};

use std::thread::JoinHandle;
use std::time::Duration;

use caiclust_probe::{probe_pid, probe_python, Facts, LiveOptions, ProbeError, ProbeOptions};
use caiclust_rules::{
    assess, evaluate, recommend, Backend, Config, ConfigError, Finding, Plan, Recommendation,
    Report, Verdict,
};

use crate::ipp::{IppBackend, IppConfig, IppError, IppEvent};

use crate::plan::{host_only_facts, HaltPolicy, Settings, StartMethod};
use crate::scheduler::{Event, Notice, Scheduler, Spare};
use crate::task::{Task, TaskId, TaskResult};
use crate::worker::Registry;

/// Why a cluster could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("probing the environment failed: {0}")]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the fork start method is refused here, because the rules see a fork hazard:\n  {}\nuse spawn or forkserver, or force fork if you know better", .findings.join("\n  "))]
    ForkRefused { findings: Vec<String> },
    #[error("the {method} start method needs a Unix system; use spawn")]
    Unsupported { method: StartMethod },
    #[error("cannot start the scheduler: {0}")]
    Io(#[from] std::io::Error),
    #[error("the ipyparallel backend could not start: {0}")]
    Ipyparallel(#[from] IppError),
}

/// What the probe and the rules said, when the cluster asked them.
#[derive(Debug, Clone)]
pub struct Advice {
    pub facts: Facts,
    pub recommendation: Recommendation,
    /// The rules evaluated with the plan the cluster runs.
    pub report: Report,
    /// The hazard policy's verdict on that plan.
    pub verdict: Verdict,
}

/// Choices for a cluster; anything left unset comes from the
/// recommendation (with [`ClusterBuilder::auto`]) or from defaults.
#[derive(Debug, Clone, Default)]
pub struct ClusterBuilder {
    auto: bool,
    workers: Option<usize>,
    start_method: Option<StartMethod>,
    python: Option<PathBuf>,
    rust_worker: Option<PathBuf>,
    env: BTreeMap<String, String>,
    preload: Vec<String>,
    timeout: Option<Duration>,
    grace: Option<Duration>,
    max_attempts: Option<u32>,
    halt: Option<HaltPolicy>,
    recycle_after: Option<u64>,
    stall_after: Option<Duration>,
    output_memory_limit: Option<usize>,
    force_fork: bool,
    registry: Option<Registry>,
    backend: Option<Backend>,
    ipp: Option<IppConfig>,
    config: Option<Config>,
    config_dir: Option<PathBuf>,
    facts: Option<Facts>,
}

impl ClusterBuilder {
    /// Probe the environment, run the rules and take their recommendation
    /// for everything not set explicitly: workers, start method and the
    /// thread environment.
    pub fn auto(mut self, yes: bool) -> Self {
        self.auto = yes;
        self
    }
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.start_method = Some(m);
        self
    }
    /// The interpreter for Python callables (default: the one the probe
    /// discovers, `python3` on `PATH`).
    pub fn python(mut self, p: impl Into<PathBuf>) -> Self {
        self.python = Some(p.into());
        self
    }
    /// The program that serves Rust tasks (default: this program).
    pub fn rust_worker(mut self, p: impl Into<PathBuf>) -> Self {
        self.rust_worker = Some(p.into());
        self
    }
    /// One more variable for every worker (over the recommended ones).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }
    /// Python modules a fork template imports before forking workers.
    pub fn preload(mut self, module: impl Into<String>) -> Self {
        self.preload.push(module.into());
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Between TERM and KILL when stopping a task (default 2 s).
    pub fn grace(mut self, t: Duration) -> Self {
        self.grace = Some(t);
        self
    }
    /// Attempts per task, as GNU parallel's `--retries` (1 = no retry).
    pub fn attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n.max(1));
        self
    }
    pub fn halt(mut self, h: HaltPolicy) -> Self {
        self.halt = Some(h);
        self
    }
    /// Replace each worker after it served `n` tasks.
    pub fn recycle_after(mut self, n: u64) -> Self {
        self.recycle_after = Some(n.max(1));
        self
    }
    /// Run the hang watchdog on tasks stalled this long.
    pub fn stall_after(mut self, t: Duration) -> Self {
        self.stall_after = Some(t);
        self
    }
    pub fn output_memory_limit(mut self, bytes: usize) -> Self {
        self.output_memory_limit = Some(bytes);
        self
    }
    /// The Rust task functions, needed by the fork start method (its
    /// workers are forks of this process and run them from here).
    pub fn registry(mut self, r: Registry) -> Self {
        self.registry = Some(r);
        self
    }
    /// Where the work runs: local worker pools (multiprocessing), one
    /// worker (single), or ipyparallel engines. Default: the
    /// recommendation's with `auto`, else local pools.
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = Some(b);
        self
    }
    /// The ipyparallel cluster to start or attach to (launcher, engines,
    /// controller address, ...); implies the ipyparallel backend. The
    /// cluster's environment, timeout and attempts are added to it.
    pub fn ipp(mut self, config: IppConfig) -> Self {
        self.ipp = Some(config);
        self.backend = Some(Backend::Ipyparallel);
        self
    }
    /// Use fork even when the rules see a hazard.
    pub fn force_fork(mut self, yes: bool) -> Self {
        self.force_fork = yes;
        self
    }
    /// Use this configuration instead of discovering `caiclust.toml`.
    pub fn config(mut self, c: Config) -> Self {
        self.config = Some(c);
        self
    }
    /// Plan with these facts (a saved snapshot, say) instead of probing.
    pub fn facts(mut self, facts: Facts) -> Self {
        self.facts = Some(facts);
        self
    }
    /// Discover the configuration from this folder (default: the working
    /// folder).
    pub fn config_dir(mut self, d: impl Into<PathBuf>) -> Self {
        self.config_dir = Some(d.into());
        self
    }

    fn load_config(&self) -> Result<Config, CoreError> {
        if let Some(c) = &self.config {
            return Ok(c.clone());
        }
        let dir = match &self.config_dir {
            Some(d) => d.clone(),
            None => std::env::current_dir()?,
        };
        Ok(Config::discover(&dir)?)
    }

    fn probe(&self) -> Result<Facts, CoreError> {
        if let Some(f) = &self.facts {
            return Ok(f.clone());
        }
        let options = ProbeOptions {
            python: self.python.clone(),
            ..ProbeOptions::default()
        };
        match probe_python(&options) {
            Ok(f) => Ok(f),
            // No Python at all: commands and Rust tasks still get a plan
            // from the host's facts.
            Err(ProbeError::PythonNotFound(_)) if self.python.is_none() => Ok(host_only_facts()),
            Err(e) => Err(e.into()),
        }
    }

    /// Start the cluster (workers start lazily, with the first tasks).
    pub fn build(self) -> Result<Cluster, CoreError> {
        let (settings, advice, backend) = self.clone().prepare()?;
        match backend {
            Backend::Ipyparallel => {
                let mut ipp = self
                    .ipp
                    .clone()
                    .unwrap_or_else(|| IppConfig::new(&settings.python, settings.workers));
                if ipp.engines == 0 {
                    ipp.engines = settings.workers;
                }
                for (k, v) in &settings.env {
                    ipp.env.entry(k.clone()).or_insert_with(|| v.clone());
                }
                if ipp.timeout.is_none() {
                    ipp.timeout = settings.timeout;
                }
                if let Some(n) = self.max_attempts {
                    ipp.retries = n.saturating_sub(1);
                }
                let backend = IppBackend::start(ipp)?;
                Cluster::start_ipp(settings, backend, Some(advice))
            }
            Backend::Single | Backend::Multiprocessing => Cluster::start(settings, Some(advice)),
        }
    }

    /// What [`ClusterBuilder::build`] would run, without starting
    /// anything: the settings (workers, start method, environment) and
    /// the advice with the policy's verdict. Refuses what `build` refuses.
    pub fn plan(self) -> Result<(Settings, Advice), CoreError> {
        self.prepare().map(|(s, a, _)| (s, a))
    }

    fn prepare(self) -> Result<(Settings, Advice, Backend), CoreError> {
        let mut config = self.load_config()?;
        // Explicit choices are part of what the recommendation works from
        // (threads per worker follow from the worker count).
        if let Some(n) = self.workers {
            config.workers = Some(n);
        }
        if let Some(m) = self.start_method {
            config.start_method = Some(m.as_str().to_string());
        }
        let needs_probe = self.facts.is_some()
            || self.auto
            || (self.start_method == Some(StartMethod::Fork) && !self.force_fork);
        let facts = if needs_probe {
            self.probe()?
        } else {
            host_only_facts()
        };
        let rec = recommend(&facts, &config);
        let mut settings = Settings {
            workers: self.workers.unwrap_or(rec.workers.value),
            ..Settings::default()
        };
        if self.auto {
            let m: StartMethod = rec.start_method.value.parse().unwrap_or(StartMethod::Spawn);
            settings.start_method = if m.supported() { m } else { StartMethod::Spawn };
            for e in &rec.env {
                settings.env.insert(e.name.clone(), e.value.clone());
            }
        }
        if let Some(m) = self.start_method {
            settings.start_method = m;
        }
        if !settings.start_method.supported() {
            return Err(CoreError::Unsupported {
                method: settings.start_method,
            });
        }
        settings.env.extend(self.env.clone());
        if let Some(p) = &self.python {
            settings.python = p.clone();
        } else if let Some(py) = &facts.python {
            settings.python = py.executable.clone();
        }
        settings.rust_worker = self.rust_worker.clone();
        settings.preload = self.preload.clone();
        settings.timeout = self.timeout;
        if let Some(g) = self.grace {
            settings.grace = g;
        }
        if let Some(n) = self.max_attempts {
            settings.max_attempts = n;
        }
        if let Some(h) = self.halt {
            settings.halt = h;
        }
        settings.recycle_after = self.recycle_after;
        settings.stall_after = self.stall_after;
        if let Some(l) = self.output_memory_limit {
            settings.output_memory_limit = l;
        }

        // The hazard policy, with the plan as it will run: the environment
        // the workers get is the one it judges.
        let plan = Plan {
            start_method: Some(settings.start_method.as_str().to_string()),
            workers: Some(settings.workers),
            env: settings.env.clone(),
        };
        let report = evaluate(&facts, &plan, &config);
        let verdict = assess(&facts, &plan, &config);
        if !self.force_fork {
            let mut hazards = start_method_hazards(&verdict);
            if self.registry.is_some() && settings.start_method == StartMethod::Fork {
                // Rust tasks fork this very process: judge what it has
                // loaded and how many threads it runs (variables set now
                // reach none of its runtimes).
                let live = LiveOptions {
                    query_helper: None,
                    ..LiveOptions::default()
                };
                if let Ok(me) = probe_pid(std::process::id(), &live) {
                    hazards.extend(start_method_hazards(&assess(&me, &plan, &config)));
                }
            }
            if !hazards.is_empty() {
                hazards.dedup();
                return Err(CoreError::ForkRefused { findings: hazards });
            }
        }
        settings.registry = self.registry.clone();
        let backend = match self.backend {
            Some(b) => b,
            None if self.auto => rec.backend.value,
            None => Backend::Multiprocessing,
        };
        let advice = Advice {
            facts,
            recommendation: rec,
            report,
            verdict,
        };
        if backend == Backend::Single {
            settings.workers = 1;
        }
        Ok((settings, advice, backend))
    }
}

/// The ipyparallel side of a cluster: submissions and cancels go to the
/// backend, its results and reports come back, until shutdown.
fn run_ipp(
    backend: IppBackend,
    events: mpsc::Receiver<Event>,
    results: Sender<Vec<TaskResult>>,
    notices: Sender<crate::scheduler::Notice>,
) {
    use crate::task::{Failure, Outcome};
    let mut shutdown: Option<bool> = None;
    let mut submitted: Vec<TaskId> = Vec::new();
    // Hand a task to the backend; if it cannot, the result saying why.
    let refused = |id: TaskId, task: &crate::task::Task| {
        backend.submit(id, task).err().map(|e| {
            TaskResult::bare(
                id,
                Outcome::Failed {
                    failure: Failure::Start {
                        message: e.to_string(),
                        cause: crate::task::StartCause::Other,
                    },
                },
            )
        })
    };
    loop {
        loop {
            match events.try_recv() {
                Ok(Event::Submit(id, task)) => match refused(id, &task) {
                    None => submitted.push(id),
                    Some(r) => {
                        let _ = results.send(vec![r]);
                    }
                },
                Ok(Event::SubmitMany { first, tasks }) => {
                    let mut failed = Vec::new();
                    for (id, task) in (first..).zip(&tasks) {
                        match refused(id, task) {
                            None => submitted.push(id),
                            Some(r) => failed.push(r),
                        }
                    }
                    if !failed.is_empty() {
                        let _ = results.send(failed);
                    }
                }
                Ok(Event::Cancel(id)) => {
                    let _ = backend.cancel(id);
                }
                Ok(Event::Withdraw(ids)) => {
                    for id in ids {
                        let _ = backend.withdraw(id);
                    }
                }
                Ok(Event::Shutdown { kill }) => {
                    shutdown = Some(kill || shutdown == Some(true));
                }
                // Local pools' events: never sent to this loop (listed, so
                // that a new kind of request cannot be dropped unnoticed).
                Ok(
                    Event::Connected { .. }
                    | Event::FromWorkerBatch { .. }
                    | Event::WorkerEof { .. }
                    | Event::WorkerExited { .. }
                    | Event::FromServer { .. }
                    | Event::ServerEof { .. }
                    | Event::CmdStarted { .. }
                    | Event::CmdFinished { .. }
                    | Event::Diagnosis { .. },
                ) => {}
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    shutdown = Some(true);
                    break;
                }
            }
        }
        match shutdown {
            Some(true) => {
                if backend.outstanding() > 0 {
                    for id in submitted.drain(..) {
                        let _ = backend.cancel(id);
                    }
                    // Results of the cancelled tasks, briefly.
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    while backend.outstanding() > 0 && std::time::Instant::now() < deadline {
                        if let Some(IppEvent::Result(r)) =
                            backend.recv_timeout(Duration::from_millis(50))
                        {
                            let _ = results.send(vec![r]);
                        }
                    }
                }
                break;
            }
            Some(false) if backend.outstanding() == 0 => break,
            _ => {}
        }
        match backend.recv_timeout(Duration::from_millis(5)) {
            Some(IppEvent::Result(r)) => {
                let _ = results.send(vec![r]);
            }
            Some(IppEvent::Notice { task, message }) => {
                let _ = notices.send(crate::scheduler::Notice { task, message });
            }
            Some(IppEvent::EngineDied {
                engine,
                pid,
                host,
                tasks,
                reason,
                expected: false,
            }) => {
                let _ = notices.send(crate::scheduler::Notice {
                    task: tasks.first().copied(),
                    message: format!(
                        "engine {engine}{}{} died ({reason}){}",
                        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                        host.map(|h| format!(" on {h}")).unwrap_or_default(),
                        if tasks.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " while running task{} {}",
                                if tasks.len() == 1 { "" } else { "s" },
                                tasks
                                    .iter()
                                    .map(|t| t.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    ),
                });
            }
            Some(IppEvent::DriverExited { message }) => {
                let _ = notices.send(crate::scheduler::Notice {
                    task: None,
                    message: format!("the ipyparallel driver exited: {message}"),
                });
            }
            Some(_) | None => {}
        }
    }
    backend.shutdown();
}

/// The findings that make a plan's start method unsafe (the policy's
/// start-method hazards), as `ID name: message`: what refuses fork.
fn start_method_hazards(verdict: &Verdict) -> Vec<String> {
    verdict
        .start_method_findings()
        .map(describe_hazard)
        .collect()
}

/// A hazard as one line: `ID name: message`.
pub(crate) fn describe_hazard(f: &Finding) -> String {
    format!("{} {}: {}", f.rule_id, f.rule_name, f.message)
}

/// How many tasks [`Cluster::submit_many`] sends in one event.
const SUBMIT_SLICE: usize = 512;

/// How many of its tasks [`Cluster::map`] keeps in play at once (at
/// least; more with many workers).
const MAP_AHEAD: usize = 16384;

/// Worker processes running tasks. Dropping it stops everything it
/// started.
pub struct Cluster {
    events: Sender<Event>,
    /// Results arrive in groups (one per turn of the scheduler's loop).
    results: Receiver<Vec<TaskResult>>,
    /// Received and not yet handed out.
    arrived: RefCell<VecDeque<TaskResult>>,
    /// Emptied groups, for the scheduler to fill again.
    spare: Spare,
    notices: Receiver<Notice>,
    next_id: AtomicU64,
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
            move |events, _, (results, _), notices| run_ipp(backend, events, results, notices),
        )
    }

    /// The channels between a cluster and the thread that runs its tasks
    /// (`serve`, started under `name`): events in, results (with emptied
    /// groups handed back) and notices out.
    fn launch(
        name: &str,
        settings: Settings,
        advice: Option<Advice>,
        serve: impl FnOnce(Receiver<Event>, Sender<Event>, (Sender<Vec<TaskResult>>, Spare), Sender<Notice>)
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
            events: events_tx,
            results: results_rx,
            arrived: RefCell::default(),
            spare,
            notices: notices_rx,
            next_id: AtomicU64::new(1),
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
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let _ = self.events.send(Event::Submit(id, Box::new(task)));
        id
    }

    /// Queue many tasks at once, much cheaper than one [`Cluster::submit`]
    /// each; their ids, in the order given (consecutive unless the
    /// iterator itself submits to this cluster).
    pub fn submit_many(&self, tasks: impl IntoIterator<Item = Task>) -> Vec<TaskId> {
        let mut ids = Vec::new();
        self.submit_slices(tasks, |range| ids.extend(range));
        ids
    }

    /// Send `tasks` in slices of consecutive ids, reading the iterator as
    /// it goes (workers start on the first slices while the rest are
    /// made); `each` sees every slice's ids.
    fn submit_slices(
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
    fn send_slice(&self, tasks: Vec<Task>) -> std::ops::Range<TaskId> {
        let n = tasks.len() as u64;
        let first = self.next_id.fetch_add(n, Ordering::SeqCst);
        let _ = self.events.send(Event::SubmitMany { first, tasks });
        first..first + n
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
        self.next_id.load(Ordering::SeqCst) - 1 - self.received.load(Ordering::SeqCst)
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
                let ids = self.send_slice(slice);
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
        let _ = self.events.send(Event::Cancel(id));
    }

    /// Cancel those of `ids` that have not begun (queued, or waiting in a
    /// worker behind its current task); running ones go on. How a run
    /// stops "starting no more jobs" with many tasks submitted ahead.
    /// Withdrawn tasks end as cancelled with `attempts == 0`.
    pub fn withdraw(&self, ids: impl IntoIterator<Item = TaskId>) {
        let ids: Vec<TaskId> = ids.into_iter().collect();
        if !ids.is_empty() {
            let _ = self.events.send(Event::Withdraw(ids));
        }
    }

    /// Wait for every task to finish, then stop the workers.
    pub fn shutdown(mut self) {
        let _ = self.events.send(Event::Shutdown { kill: false });
        self.join();
    }

    /// Cancel queued tasks, stop running ones, stop the workers.
    pub fn kill(mut self) {
        let _ = self.events.send(Event::Shutdown { kill: true });
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
        let _ = self.events.send(Event::Shutdown { kill: true });
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
