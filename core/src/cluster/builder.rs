//! Building a cluster: explicit choices, or the rules' recommendation
//! for the probed environment, checked against the hazard policy before
//! any worker starts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use caiclust_probe::{probe_pid, probe_python, Facts, LiveOptions, ProbeError, ProbeOptions};
use caiclust_rules::{
    assess, evaluate, recommend, Backend, Config, ConfigError, Plan, Recommendation, Report,
    Verdict,
};

use super::Cluster;
use crate::ipp::{IppBackend, IppConfig, IppError};
use crate::plan::{host_only_facts, HaltPolicy, Settings, StartMethod};
use crate::watchdog::describe_hazard;
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
    forkserver_preload: Vec<String>,
    python_workers_now: bool,
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
    /// Start the Python workers with the cluster, not with the first
    /// Python tasks (see [`Settings::python_workers_now`]).
    pub fn python_workers_now(mut self, yes: bool) -> Self {
        self.python_workers_now = yes;
        self
    }
    /// Python modules a fork template imports before forking workers.
    pub fn preload(mut self, module: impl Into<String>) -> Self {
        self.preload.push(module.into());
        self
    }
    /// Python modules the forkserver's server imports before forking
    /// workers (see [`Settings::forkserver_preload`]).
    pub fn forkserver_preload(mut self, module: impl Into<String>) -> Self {
        self.forkserver_preload.push(module.into());
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
        // The environment the workers will have: this process's, with the
        // cluster's own variables on top (LD_LIBRARY_PATH there changes
        // which libraries they load).
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let options = ProbeOptions {
            python: self.python.clone(),
            env: Some(env),
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
        settings.forkserver_preload = self.forkserver_preload.clone();
        settings.python_workers_now = self.python_workers_now;
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
            // A cluster runs tasks it cannot read: the facts alone (a live
            // process's own, for fork workers) are the evidence.
            usage: None,
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

/// The findings that make a plan's start method unsafe (the policy's
/// start-method hazards), as `ID name: message`: what refuses fork.
fn start_method_hazards(verdict: &Verdict) -> Vec<String> {
    verdict
        .start_method_findings()
        .map(describe_hazard)
        .collect()
}
