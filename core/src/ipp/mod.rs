//! The ipyparallel backend: tasks on ipyparallel engines, for when one
//! machine is not enough (HAZARDS H16, H17).
//!
//! ipyparallel's controller, engines, launchers (local, MPI, SSH, Slurm,
//! PBS, ...), heartbeats and load-balancing scheduler do the work; caiclust
//! drives them through a small Python program, `driver.py` (embedded here),
//! which it starts with the chosen interpreter and talks to over stdio in
//! JSON lines. Nothing of ipyparallel's protocols is reimplemented.
//!
//! What the backend adds to the usual `ipcluster start` + `Client()` way:
//!
//! * a fresh profile folder and cluster id per run (no stale pid or
//!   connection files, no clash with a cluster already running), the
//!   controller on loopback unless told otherwise;
//! * a startup deadline: [`IppBackend::start`] returns within it, and its
//!   error names each engine that failed and why (exit code, last lines of
//!   its log);
//! * engines with the environment given (the recommended thread limits:
//!   [`IppConfig::recommended`]) and working folder;
//! * per-task timeouts that really stop a running task (its engine is
//!   killed and replaced: ipyparallel's `abort()` only cancels queued
//!   tasks), dead engines detected (nanny, heartbeats, and the process
//!   itself for local engines) with their tasks retried elsewhere up to the
//!   retry limit, cancellation;
//! * a clean stop: engines, nannies and controller stopped and the profile
//!   folder removed, on [`IppBackend::shutdown`], on drop (so also when the
//!   caller panics), and when the caller dies (Ctrl-C): the driver stops the
//!   cluster when its standard input closes.
//!
//! Results come back as [`crate::task::TaskResult`]s, one per task, inside
//! [`IppEvent`]s.
//!
//! ```no_run
//! use caiclust_core::ipp::{IppBackend, IppConfig, IppEvent};
//! use caiclust_core::Task;
//! let config = IppConfig::new("/opt/venv/bin/python", 4).recommended()?;
//! let backend = IppBackend::start(config)?;
//! backend.submit(1, &Task::python("math:sqrt", serde_json::json!([2.0])))?;
//! backend.submit(2, &Task::command(["hostname"]))?;
//! let mut left = 2;
//! while left > 0 {
//!     match backend.recv() {
//!         Some(IppEvent::Result(r)) => { println!("{} {:?}", r.id, r.outcome); left -= 1; }
//!         Some(other) => eprintln!("{other:?}"),
//!         None => break,
//!     }
//! }
//! backend.shutdown();
//! # Ok::<(), caiclust_core::ipp::IppError>(())
//! ```
//!
//! # Platform-specific behaviour
//! Builds everywhere. The driver runs in a process group of its own on
//! Unix. Leftover processes are recognised by their `IPP_CLUSTER_ID`
//! environment variable on Linux before they are killed; elsewhere the pids
//! the driver reported are killed when the driver could not stop them
//! itself.

mod wire;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::task::{Failure, Outcome, Task, TaskId, TaskKind, TaskResult};
use crate::tree::{self, StopSignal};

/// The driver program.
pub const DRIVER: &str = include_str!("driver.py");

/// What `python -c` runs: it reads the driver's source (a JSON string) from
/// the first line of its input and runs it as `__main__`; the driver reads
/// its configuration from the second. (The driver itself is too long for
/// a Windows command line.)
const BOOTSTRAP: &str = "import sys, json; \
    exec(compile(json.loads(sys.stdin.readline()), 'caiclust-ipp-driver.py', 'exec'))";

/// How long the Rust side waits, past the startup deadline, for the driver
/// to report (importing ipyparallel, cleaning up after a failure).
const STARTUP_SLACK: Duration = Duration::from_secs(30);
/// How long a stop waits for the driver to stop the cluster itself.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// Lines of the driver's standard error kept for error messages.
const LOG_LINES: usize = 200;

/// An ipyparallel launcher, by the name ipyparallel registers it under
/// (`ipcluster start --engines=NAME`), or a launcher class by its dotted
/// path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Launcher {
    /// Processes on this machine.
    #[default]
    Local,
    /// `mpiexec -n N`.
    Mpi,
    /// One engine set per host over SSH.
    Ssh,
    /// A Slurm job (`sbatch`).
    Slurm,
    /// A PBS/Torque job (`qsub`).
    Pbs,
    /// A Sun Grid Engine job.
    Sge,
    /// An LSF job (`bsub`).
    Lsf,
    /// A launcher class, `package.module.ClassName`.
    Class(String),
}

impl Launcher {
    pub fn as_str(&self) -> &str {
        match self {
            Launcher::Local => "local",
            Launcher::Mpi => "mpi",
            Launcher::Ssh => "ssh",
            Launcher::Slurm => "slurm",
            Launcher::Pbs => "pbs",
            Launcher::Sge => "sge",
            Launcher::Lsf => "lsf",
            Launcher::Class(c) => c,
        }
    }
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Launcher {
    type Err = IppError;
    fn from_str(s: &str) -> Result<Self, IppError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "local" => Launcher::Local,
            "mpi" | "mpiexec" => Launcher::Mpi,
            "ssh" => Launcher::Ssh,
            "slurm" => Launcher::Slurm,
            "pbs" => Launcher::Pbs,
            "sge" => Launcher::Sge,
            "lsf" => Launcher::Lsf,
            _ if is_class_path(s.trim()) => Launcher::Class(s.trim().to_string()),
            _ => {
                return Err(IppError::Config(format!(
                    "unknown ipyparallel launcher '{s}' (expected local, mpi, ssh, slurm, pbs, \
                     sge, lsf, or a launcher class as package.module.ClassName)"
                )))
            }
        })
    }
}

fn is_class_path(s: &str) -> bool {
    s.contains('.')
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !part.starts_with(|c: char| c.is_ascii_digit())
        })
}

/// A running cluster to use instead of starting one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// The controller's client connection file
    /// (`<profile>/security/ipcontroller-<cluster id>-client.json`).
    ConnectionFile(PathBuf),
    /// A profile by name (in `$IPYTHONDIR`), and the cluster id it was
    /// started with (`ipcluster start --cluster-id`; none: the default).
    Profile {
        profile: String,
        cluster_id: Option<String>,
    },
    /// A profile folder, and the cluster id.
    ProfileDir {
        dir: PathBuf,
        cluster_id: Option<String>,
    },
}

/// How to start (or reach) the cluster and run tasks on it.
#[derive(Debug, Clone)]
pub struct IppConfig {
    /// The interpreter of the environment with ipyparallel; local engines
    /// and the controller run with it too.
    pub python: PathBuf,
    /// Engines to start (when attaching: engines to wait for).
    pub engines: usize,
    pub engine_launcher: Launcher,
    pub controller_launcher: Launcher,
    /// More launcher configuration, as ipyparallel's traitlets config:
    /// section (class name) → option → value, e.g.
    /// `SlurmEngineSetLauncher` → `account` → `"lab"`.
    pub launcher_config: BTreeMap<String, BTreeMap<String, Value>>,
    /// Where the controller listens (default `127.0.0.1`: loopback only;
    /// `*` or an interface's address for engines on other hosts).
    pub controller_ip: Option<String>,
    /// The address engines and clients use to reach the controller, when
    /// it listens on every interface.
    pub controller_location: Option<String>,
    /// More `ipcontroller` arguments.
    pub controller_args: Vec<String>,
    /// More `ipengine` arguments.
    pub engine_args: Vec<String>,
    /// Use this cluster instead of starting one: it is not stopped at the
    /// end, and tasks past their timeout are stopped only on engines of
    /// this host.
    pub attach: Option<Attach>,
    /// The engines' environment (on top of this process's, for local
    /// engines): the recommended thread limits and anything else.
    pub env: BTreeMap<String, String>,
    /// The engines' working folder (default: this process's).
    pub work_dir: Option<PathBuf>,
    /// Where the run's profile folder is made (default: the temporary
    /// folder). Batch launchers (Slurm, PBS) need a folder every node
    /// sees.
    pub profile_parent: Option<PathBuf>,
    /// The engines must have registered by then.
    pub startup_timeout: Duration,
    /// Per-task timeout (a task's own overrides it).
    pub timeout: Option<Duration>,
    /// How many times a task whose engine died is tried again on another
    /// engine (0: never).
    pub retries: u32,
    /// Between interrupting a cancelled task and killing its engine; also
    /// between TERM and KILL for commands past their timeout.
    pub grace: Duration,
    /// The controller's heartbeat period; an engine that misses three is
    /// taken for dead.
    pub heartbeat: Duration,
    /// Start a new engine in place of one stopped for a timeout or a
    /// cancellation (clusters this backend started).
    pub replace_engines: bool,
}

impl IppConfig {
    /// `engines` local engines with `python`, controller on loopback, 60 s
    /// startup deadline, no task timeout, 1 retry, 2 s grace, 1 s
    /// heartbeat.
    pub fn new(python: impl Into<PathBuf>, engines: usize) -> IppConfig {
        IppConfig {
            python: python.into(),
            engines,
            engine_launcher: Launcher::Local,
            controller_launcher: Launcher::Local,
            launcher_config: BTreeMap::new(),
            controller_ip: None,
            controller_location: None,
            controller_args: Vec::new(),
            engine_args: Vec::new(),
            attach: None,
            env: BTreeMap::new(),
            work_dir: None,
            profile_parent: None,
            startup_timeout: Duration::from_secs(60),
            timeout: None,
            retries: 1,
            grace: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
            replace_engines: true,
        }
    }

    /// Probe `python`'s environment, ask the rules for a plan with
    /// `engines` workers and add the recommended environment (thread
    /// limits of every runtime present) to the engines' (explicit entries
    /// stay).
    pub fn recommended(mut self) -> Result<IppConfig, IppError> {
        let options = caiclust_probe::ProbeOptions {
            python: Some(self.python.clone()),
            ..caiclust_probe::ProbeOptions::default()
        };
        let facts = caiclust_probe::probe_python(&options).map_err(|e| IppError::Probe {
            python: self.python.clone(),
            message: e.to_string(),
        })?;
        let config = caiclust_rules::Config {
            workers: Some(self.engines.max(1)),
            ..caiclust_rules::Config::default()
        };
        let rec = caiclust_rules::recommend(&facts, &config);
        self.apply_recommendation(&rec);
        Ok(self)
    }

    /// Add a recommendation's environment to the engines' (explicit
    /// entries stay).
    pub fn apply_recommendation(&mut self, rec: &caiclust_rules::Recommendation) {
        for e in &rec.env {
            self.env
                .entry(e.name.clone())
                .or_insert_with(|| e.value.clone());
        }
    }

    fn validate(&self) -> Result<(), IppError> {
        if self.attach.is_none() && self.engines == 0 {
            return Err(IppError::Config(
                "an ipyparallel cluster needs at least one engine (engines = 0)".into(),
            ));
        }
        if self.startup_timeout.is_zero() {
            return Err(IppError::Config(
                "the startup deadline must be longer than zero".into(),
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(IppError::Config(
                "the task timeout must be longer than zero".into(),
            ));
        }
        if self.heartbeat < Duration::from_millis(100) {
            return Err(IppError::Config(format!(
                "the heartbeat period {} ms is too short (at least 100 ms)",
                self.heartbeat.as_millis()
            )));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(IppError::Config(format!(
                    "bad engine environment variable {k:?}={v:?}"
                )));
            }
        }
        if let Some(dir) = &self.work_dir {
            if self.engine_launcher == Launcher::Local && !dir.is_dir() {
                return Err(IppError::Config(format!(
                    "the engines' working folder {} does not exist",
                    dir.display()
                )));
            }
        }
        if let Some(Attach::ConnectionFile(f)) = &self.attach {
            if !f.is_file() {
                return Err(IppError::Config(format!(
                    "the ipyparallel connection file {} does not exist",
                    f.display()
                )));
            }
        }
        for section in self.launcher_config.keys() {
            if section.is_empty()
                || !section
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(IppError::Config(format!(
                    "bad launcher configuration section '{section}' (expected a class name such \
                     as SlurmEngineSetLauncher)"
                )));
            }
        }
        Ok(())
    }
}

/// Why the backend could not start or stopped working.
#[derive(Debug, thiserror::Error)]
pub enum IppError {
    #[error("bad ipyparallel backend configuration: {0}")]
    Config(String),
    #[error("cannot start the ipyparallel driver with {}: {source}", .python.display())]
    Spawn {
        python: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("probing {} for the recommended environment failed: {message}", .python.display())]
    Probe { python: PathBuf, message: String },
    #[error("{}", startup_text(.message, .engines, .log))]
    Startup {
        message: String,
        /// The engines that did not register, and what became of them.
        engines: Vec<EngineFailure>,
        /// The last lines the driver wrote to its standard error.
        log: String,
    },
    #[error("cannot create the run folder in {}: {source}", .dir.display())]
    RunDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the ipyparallel driver is gone: {0}")]
    Driver(String),
}

fn startup_text(message: &str, engines: &[EngineFailure], log: &str) -> String {
    let mut s = format!("the ipyparallel cluster did not start: {message}");
    for e in engines {
        s.push_str(&format!("\n  {e}"));
    }
    if engines.iter().all(|e| e.output.trim().is_empty()) && !log.trim().is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        s.push_str("\n  driver log:");
        for line in tail.iter().rev() {
            s.push_str(&format!("\n    {line}"));
        }
    }
    s
}

/// An engine that did not register.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineFailure {
    /// The launcher's name for it (`0`, `1`, ... for local engine sets).
    pub engine: String,
    pub pid: Option<u32>,
    /// `exited`, or `running, not registered`.
    pub state: String,
    pub exit_code: Option<i64>,
    /// The last lines of its log.
    pub output: String,
}

impl fmt::Display for EngineFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "engine {}", self.engine)?;
        if let Some(pid) = self.pid {
            write!(f, " (pid {pid})")?;
        }
        write!(f, ": {}", self.state)?;
        if let Some(c) = self.exit_code {
            write!(f, " (exit code {c})")?;
        }
        let out = self.output.trim();
        if !out.is_empty() {
            let lines: Vec<&str> = out.lines().rev().take(12).collect();
            write!(f, "; its output ends:")?;
            for line in lines.iter().rev() {
                write!(f, "\n      {line}")?;
            }
        }
        Ok(())
    }
}

/// A registered engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// ipyparallel's engine id.
    pub id: u32,
    pub pid: u32,
    pub host: String,
}

/// What the backend reports.
#[derive(Debug)]
pub enum IppEvent {
    /// The one result of a task.
    Result(TaskResult),
    /// An engine registered (at startup, or a replacement).
    EngineStarted(EngineInfo),
    /// A task began running on an engine (as soon as the driver saw it;
    /// a task that ends quickly may have no such event).
    Started {
        id: TaskId,
        engine: Option<u32>,
        pid: Option<u32>,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// An engine went away; `tasks` were running on it (they are retried
    /// or reported). `expected`: caiclust stopped it (timeout, cancel).
    EngineDied {
        engine: u32,
        pid: Option<u32>,
        host: Option<String>,
        tasks: Vec<TaskId>,
        reason: String,
        expected: bool,
    },
    /// Something worth telling: a retry, an engine stopped for a timeout.
    Notice {
        task: Option<TaskId>,
        message: String,
    },
    /// The driver ended while the backend was in use; every task still
    /// outstanding got a failed result just before.
    DriverExited { message: String },
}

/// What a stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// The driver stopped the cluster itself and confirmed it.
    pub clean: bool,
    /// Processes caiclust had to kill itself.
    pub killed: Vec<u32>,
}

/// State the reader thread shares with the backend.
#[derive(Default)]
struct Shared {
    /// Processes of the cluster (controller, engines, nannies) the driver
    /// started, as it reported them.
    pids: BTreeSet<u32>,
    engines: BTreeMap<u32, EngineInfo>,
    /// Submitted, no result from the driver yet.
    pending: BTreeSet<TaskId>,
    /// Submitted, result not received by the caller yet.
    outstanding: BTreeSet<TaskId>,
    stopped: Option<Vec<u32>>,
    log: VecDeque<String>,
    ready: Option<Value>,
    failed: Option<Value>,
    eof: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cluster of ipyparallel engines running tasks. Dropping it stops
/// everything it started.
pub struct IppBackend {
    config: IppConfig,
    child: Option<Child>,
    driver_pid: u32,
    stdin: Mutex<Option<ChildStdin>>,
    events: Receiver<IppEvent>,
    events_tx: Sender<IppEvent>,
    /// Startup events held back until the first `recv`.
    early: Mutex<VecDeque<IppEvent>>,
    shared: Arc<Mutex<Shared>>,
    readers: Vec<JoinHandle<()>>,
    run_dir: Option<tempfile::TempDir>,
    cluster_id: String,
    connection_file: Option<PathBuf>,
    owned: bool,
    versions: (String, String),
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
    /// Start a cluster (or attach to one) and wait for its engines, at
    /// most `config.startup_timeout` (plus a little for the interpreter to
    /// start and clean up). The error names every engine that failed and
    /// why; nothing is left running after an error.
    pub fn start(config: IppConfig) -> Result<IppBackend, IppError> {
        config.validate()?;
        let owned = config.attach.is_none();
        let parent = config
            .profile_parent
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let run_dir = tempfile::Builder::new()
            .prefix("caiclust-ipp-")
            .tempdir_in(&parent)
            .map_err(|source| IppError::RunDir {
                dir: parent.clone(),
                source,
            })?;
        let cluster_id = fresh_cluster_id();
        let profile_dir = run_dir.path().join("profile");
        let ipython_dir = run_dir.path().join("ipython");
        let mut driver_config = driver_config(&config, &profile_dir, &cluster_id);
        driver_config["run_dir"] = json!(run_dir.path());

        let mut cmd = Command::new(&config.python);
        cmd.arg("-c")
            .arg(BOOTSTRAP)
            .env("IPYTHONDIR", &ipython_dir)
            .envs(config.env.iter())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &config.work_dir {
            if config.engine_launcher == Launcher::Local {
                cmd.current_dir(dir);
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own group: a Ctrl-C meant for the caller does not reach
            // it; it notices the caller's end by its input closing.
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|source| IppError::Spawn {
            python: config.python.clone(),
            source,
        })?;
        let driver_pid = child.id();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let shared = Arc::clone(&shared);
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                read_driver(BufReader::new(out), &shared, &tx, driver_pid)
            }));
        }
        if let Some(err) = child.stderr.take() {
            let shared = Arc::clone(&shared);
            readers.push(std::thread::spawn(move || {
                read_log(BufReader::new(err), &shared)
            }));
        }
        let mut stdin = child.stdin.take();
        if let Some(input) = stdin.as_mut() {
            // Both lines at once; a driver that died at start shows in the
            // startup wait (its log says why).
            let mut head = serde_json::to_string(DRIVER).unwrap_or_default();
            head.push('\n');
            head.push_str(&driver_config.to_string());
            head.push('\n');
            let _ = input.write_all(head.as_bytes()).and_then(|_| input.flush());
        }
        let mut backend = IppBackend {
            config,
            child: Some(child),
            driver_pid,
            stdin: Mutex::new(stdin),
            events: rx,
            events_tx: tx,
            early: Mutex::new(VecDeque::new()),
            shared,
            readers,
            run_dir: Some(run_dir),
            cluster_id,
            connection_file: None,
            owned,
            versions: (String::new(), String::new()),
        };
        match backend.wait_ready() {
            Ok(()) => Ok(backend),
            Err(e) => {
                backend.stop();
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), IppError> {
        let deadline = Instant::now() + self.config.startup_timeout + STARTUP_SLACK;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IppError::Startup {
                    message: format!(
                        "the driver did not report within {} s (the startup deadline plus {} s)",
                        (self.config.startup_timeout + STARTUP_SLACK).as_secs_f64(),
                        STARTUP_SLACK.as_secs_f64()
                    ),
                    engines: Vec::new(),
                    log: self.log_text(),
                });
            }
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(ev) => self.early_lock().push_back(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {}
            }
            let (ready, failed, eof) = {
                let s = lock(&self.shared);
                (s.ready.clone(), s.failed.clone(), s.eof)
            };
            if let Some(r) = ready {
                self.versions = (
                    r["python"].as_str().unwrap_or_default().to_string(),
                    r["ipyparallel"].as_str().unwrap_or_default().to_string(),
                );
                if let Some(id) = r["cluster_id"].as_str() {
                    self.cluster_id = id.to_string();
                }
                self.connection_file = r["connection_file"].as_str().map(PathBuf::from);
                return Ok(());
            }
            if let Some(f) = failed {
                // Let the driver finish its cleanup and the log reader
                // catch up before the message is built.
                self.wait_driver_exit(Duration::from_secs(10));
                return Err(IppError::Startup {
                    message: f["message"]
                        .as_str()
                        .unwrap_or("unknown failure")
                        .trim_end()
                        .to_string(),
                    engines: wire::engine_failures(&f["engines"]),
                    log: self.log_text(),
                });
            }
            if eof {
                let status = self.wait_driver_exit(Duration::from_secs(2));
                return Err(IppError::Startup {
                    message: format!(
                        "the driver ({}) exited during startup{}",
                        self.config.python.display(),
                        status.map(|s| format!(" ({s})")).unwrap_or_default()
                    ),
                    engines: Vec::new(),
                    log: self.log_text(),
                });
            }
        }
    }

    fn early_lock(&self) -> MutexGuard<'_, VecDeque<IppEvent>> {
        self.early
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn log_text(&self) -> String {
        // The log reader may still be draining the pipe.
        std::thread::sleep(Duration::from_millis(50));
        let s = lock(&self.shared);
        s.log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn wait_driver_exit(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Some(crate::task::ExitInfo::from_status(st).to_string()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// Queue a task under the id the caller chose; its result comes back
    /// as an [`IppEvent::Result`] with that id. Rust tasks cannot run on
    /// engines: they get a failed result at once.
    pub fn submit(&self, id: TaskId, task: &Task) -> Result<(), IppError> {
        let timeout = task
            .timeout
            .or(self.config.timeout)
            .map(|t| t.as_secs_f64());
        let msg = match &task.kind {
            TaskKind::Python(c) if c.payload.is_some() => {
                self.fail_now(
                    id,
                    format!(
                        "Python task '{}' carries pickled arguments (Task::python_pickled), \
                         which the ipyparallel backend does not send yet: run it on a local \
                         cluster",
                        c.function
                    ),
                );
                return Ok(());
            }
            TaskKind::Python(c) => json!({
                "op": "run", "id": id, "kind": "python", "f": c.function, "a": c.args,
                "timeout": timeout,
            }),
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
            s.pending.insert(id);
            s.outstanding.insert(id);
        }
        if let Err(e) = self.send(&msg) {
            let mut s = lock(&self.shared);
            s.pending.remove(&id);
            s.outstanding.remove(&id);
            return Err(e);
        }
        Ok(())
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
    /// Its result says cancelled.
    pub fn cancel(&self, id: TaskId) -> Result<(), IppError> {
        self.send(&json!({"op": "cancel", "id": id}))
    }

    /// Cancel a task that has not begun (its result says cancelled, with
    /// no attempt made); a running one goes on.
    pub fn withdraw(&self, id: TaskId) -> Result<(), IppError> {
        self.send(&json!({"op": "withdraw", "id": id}))
    }

    fn send(&self, msg: &Value) -> Result<(), IppError> {
        if lock(&self.shared).eof {
            return Err(IppError::Driver(format!(
                "the ipyparallel driver (pid {}) has exited",
                self.driver_pid
            )));
        }
        let mut guard = self
            .stdin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(stdin) = guard.as_mut() else {
            return Err(IppError::Driver("the backend is stopping".into()));
        };
        let mut line = msg.to_string();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| IppError::Driver(format!("cannot write to the driver: {e}")))
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
    /// it to [`Attach::ConnectionFile`] to share the cluster.
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

    /// Stop: outstanding tasks are reported cancelled, engines and
    /// controller stopped (when this backend started them), the run folder
    /// removed.
    pub fn shutdown(mut self) -> StopReport {
        self.stop()
    }

    fn stop(&mut self) -> StopReport {
        let mut report = StopReport::default();
        let Some(mut child) = self.child.take() else {
            return report;
        };
        let _ = self.send(&json!({"op": "shutdown"}));
        // Closing its input is the other way to say stop.
        drop(
            self.stdin
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        let deadline = Instant::now() + STOP_WAIT;
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            report
                .killed
                .extend(tree::signal_tree(self.driver_pid, StopSignal::Kill));
            let _ = child.wait();
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        let (pids, stopped) = {
            let s = lock(&self.shared);
            (s.pids.clone(), s.stopped.clone())
        };
        report.clean = exited && stopped.as_ref().is_some_and(|left| left.is_empty());
        if self.owned {
            for pid in pids {
                if tree::alive(pid) && belongs_to(pid, &self.cluster_id) {
                    report
                        .killed
                        .extend(tree::signal_tree(pid, StopSignal::Kill));
                }
            }
        }
        report.killed.sort_unstable();
        report.killed.dedup();
        if let Some(dir) = self.run_dir.take() {
            let _ = dir.close();
        }
        report
    }
}

impl Drop for IppBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Is `pid` one of this cluster's processes? On Linux its environment must
/// carry the cluster id (ipyparallel's launchers set `IPP_CLUSTER_ID`), so
/// a recycled pid is never killed; elsewhere the pid is trusted.
fn belongs_to(pid: u32, cluster_id: &str) -> bool {
    #[cfg(target_os = "linux")]
    {
        let needle = format!("IPP_CLUSTER_ID={cluster_id}");
        match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(env) => env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()),
            Err(_) => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, cluster_id);
        true
    }
}

/// `caiclust-<unix seconds>-<pid>-<n>`: unique per run on this host.
fn fresh_cluster_id() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "caiclust-{secs}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

fn driver_config(config: &IppConfig, profile_dir: &Path, cluster_id: &str) -> Value {
    let attach = config.attach.as_ref().map(|a| match a {
        Attach::ConnectionFile(f) => json!({"url_file": f}),
        Attach::Profile {
            profile,
            cluster_id,
        } => json!({"profile": profile, "cluster_id": cluster_id}),
        Attach::ProfileDir { dir, cluster_id } => {
            json!({"profile_dir": dir, "cluster_id": cluster_id})
        }
    });
    json!({
        "mode": if attach.is_some() { "attach" } else { "start" },
        "attach": attach,
        "engines": config.engines,
        "min_engines": config.engines.max(1),
        "profile_dir": profile_dir,
        "cluster_id": cluster_id,
        "engine_launcher": config.engine_launcher.as_str(),
        "controller_launcher": config.controller_launcher.as_str(),
        "launcher_config": config.launcher_config,
        "controller_ip": config.controller_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
        "controller_location": config.controller_location,
        "controller_args": config.controller_args,
        "engine_args": config.engine_args,
        "engine_env": config.env,
        "work_dir": config.work_dir,
        "startup_timeout": config.startup_timeout.as_secs_f64(),
        "heartbeat_ms": config.heartbeat.as_millis() as u64,
        "retries": config.retries,
        "grace": config.grace.as_secs_f64(),
        "replace_engines": config.replace_engines,
    })
}

/// The driver's standard output: events and results.
fn read_driver<R: BufRead>(
    mut reader: R,
    shared: &Mutex<Shared>,
    tx: &Sender<IppEvent>,
    driver_pid: u32,
) {
    let mut line = String::new();
    let mut stopped = false;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let msg: Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(e) => {
                let mut s = lock(shared);
                s.log
                    .push_back(format!("(not a driver message: {e}: {})", line.trim()));
                continue;
            }
        };
        let ev = {
            let mut s = lock(shared);
            let s = &mut *s;
            let ev = wire::apply(&msg, &mut s.pids, &mut s.engines);
            if let Some(IppEvent::Result(r)) = &ev {
                s.pending.remove(&r.id);
            }
            ev
        };
        match msg["event"].as_str() {
            Some("ready") => lock(shared).ready = Some(msg.clone()),
            Some("failed") => lock(shared).failed = Some(msg.clone()),
            Some("stopped") => {
                stopped = true;
                let left = msg["left"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_u64())
                            .map(|p| p as u32)
                            .collect()
                    })
                    .unwrap_or_default();
                lock(shared).stopped = Some(left);
            }
            _ => {}
        }
        if let Some(ev) = ev {
            let _ = tx.send(ev);
        }
    }
    // The driver is gone: every task still outstanding gets its one result.
    let (outstanding, ready) = {
        let mut s = lock(shared);
        s.eof = true;
        (std::mem::take(&mut s.pending), s.ready.is_some())
    };
    if ready && !stopped {
        for id in &outstanding {
            let _ = tx.send(IppEvent::Result(TaskResult::bare(
                *id,
                Outcome::Failed {
                    failure: Failure::WorkerDied {
                        exit: None,
                        pid: driver_pid,
                    },
                },
            )));
        }
        let _ = tx.send(IppEvent::DriverExited {
            message: format!(
                "the ipyparallel driver (pid {driver_pid}) ended unexpectedly; {} task(s) lost",
                outstanding.len()
            ),
        });
    } else {
        // A stop: the driver reported the outstanding tasks cancelled; any
        // it could not report are reported here.
        for id in outstanding {
            let _ = tx.send(IppEvent::Result(TaskResult::bare(
                id,
                Outcome::Cancelled {
                    reason: "the backend stopped".into(),
                },
            )));
        }
    }
}

/// The driver's standard error: kept (the last lines) for error messages,
/// and echoed when `CAICLUST_IPP_DEBUG` is set.
fn read_log<R: BufRead>(reader: R, shared: &Mutex<Shared>) {
    let echo = std::env::var_os("CAICLUST_IPP_DEBUG").is_some();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if echo {
            eprintln!("[ipp driver] {line}");
        }
        let mut s = lock(shared);
        if s.log.len() >= LOG_LINES {
            s.log.pop_front();
        }
        s.log.push_back(line);
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

    #[test]
    fn launchers_parse_by_ipyparallel_name_or_class() {
        for l in [
            Launcher::Local,
            Launcher::Mpi,
            Launcher::Ssh,
            Launcher::Slurm,
            Launcher::Pbs,
            Launcher::Sge,
            Launcher::Lsf,
            Launcher::Class("my_pkg.launch.Engines".into()),
        ] {
            assert_eq!(l.as_str().parse::<Launcher>().unwrap(), l);
        }
        assert_eq!("MPIEXEC".parse::<Launcher>().unwrap(), Launcher::Mpi);
        for bad in ["", "torque", "a..b", "1pkg.X", "pkg.", "has space.X"] {
            let e = bad.parse::<Launcher>().unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn bad_configurations_are_refused_with_their_reason() {
        let ok = IppConfig::new("python3", 2);
        assert!(ok.validate().is_ok());
        let mut cases: Vec<(IppConfig, &str)> = Vec::new();
        let mut c = ok.clone();
        c.engines = 0;
        cases.push((c, "at least one engine"));
        let mut c = ok.clone();
        c.startup_timeout = Duration::ZERO;
        cases.push((c, "startup deadline"));
        let mut c = ok.clone();
        c.timeout = Some(Duration::ZERO);
        cases.push((c, "task timeout"));
        let mut c = ok.clone();
        c.heartbeat = Duration::from_millis(10);
        cases.push((c, "heartbeat"));
        let mut c = ok.clone();
        c.env.insert("A=B".into(), "x".into());
        cases.push((c, "\"A=B\""));
        let mut c = ok.clone();
        c.launcher_config
            .insert("Slurm Engines".into(), BTreeMap::new());
        cases.push((c, "'Slurm Engines'"));
        let mut c = ok.clone();
        c.work_dir = Some(PathBuf::from("/no/such/work/dir"));
        cases.push((c, "/no/such/work/dir"));
        for (c, want) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
        // Attaching needs no engine count.
        let mut c = ok.clone();
        c.engines = 0;
        c.attach = Some(Attach::Profile {
            profile: "default".into(),
            cluster_id: None,
        });
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_driver_configuration_carries_every_choice() {
        let mut c = IppConfig::new("python3", 3);
        c.engine_launcher = Launcher::Slurm;
        c.env.insert("OMP_NUM_THREADS".into(), "1".into());
        c.timeout = Some(Duration::from_secs(5));
        c.launcher_config.insert(
            "SlurmEngineSetLauncher".into(),
            BTreeMap::from([("account".to_string(), json!("lab"))]),
        );
        let v = driver_config(&c, Path::new("/tmp/p"), "cid");
        assert_eq!(v["mode"], "start");
        assert_eq!(v["engines"], 3);
        assert_eq!(v["engine_launcher"], "slurm");
        assert_eq!(v["controller_ip"], "127.0.0.1", "loopback by default");
        assert_eq!(v["engine_env"]["OMP_NUM_THREADS"], "1");
        assert_eq!(
            v["launcher_config"]["SlurmEngineSetLauncher"]["account"],
            "lab"
        );
        assert_eq!(v["cluster_id"], "cid");
        assert_eq!(v["heartbeat_ms"], 1000);
        c.attach = Some(Attach::ConnectionFile("/x/client.json".into()));
        let v = driver_config(&c, Path::new("/tmp/p"), "cid");
        assert_eq!(v["mode"], "attach");
        assert_eq!(v["attach"]["url_file"], "/x/client.json");
        assert_ne!(fresh_cluster_id(), fresh_cluster_id());
    }
}
