//! What the rules look at: the facts, and how the work is going to run.

use std::collections::BTreeMap;

use caiclust_probe::{Facts, OsFamily};
use serde::{Deserialize, Serialize};

use crate::script::{ScriptPlan, ScriptUsage};

/// How the parallel work is going to be started, as far as known. Empty
/// fields fall back to the facts (the interpreter's default start method)
/// and the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// `fork`, `spawn` or `forkserver`.
    pub start_method: Option<String>,
    /// Worker processes.
    pub workers: Option<usize>,
    /// Variables the workers will get on top of the facts' environment
    /// (what `caiclust run`, `caiclust env` or a cluster will set).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// What the code that will run imports and calls, read from its
    /// scripts (every script's together); `None` when no script is known.
    /// The hazard rules then judge a runtime by its use, not only by its
    /// presence: a GNU OpenMP pool hangs forked workers only when the
    /// parent ran it before the fork and the workers run it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ScriptUsage>,
}

impl Plan {
    /// The plan with the scripts' usage added to what it already knows.
    pub fn with_scripts<'s>(mut self, scripts: impl IntoIterator<Item = &'s ScriptPlan>) -> Self {
        for script in scripts {
            self.usage
                .get_or_insert_with(ScriptUsage::default)
                .merge(&script.usage);
        }
        self
    }
}

/// Everything a rule may look at.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub facts: &'a Facts,
    pub plan: &'a Plan,
    pub advisories: &'a crate::AdvisoryDb,
}

impl<'a> Context<'a> {
    /// The start method the pool will use: the plan's, else the
    /// interpreter's default, else the platform's for Python 3.8–3.13.
    pub fn start_method(&self) -> Option<&'a str> {
        if let Some(m) = self.plan.start_method.as_deref() {
            return Some(m);
        }
        if let Some(m) = self
            .facts
            .python
            .as_ref()
            .and_then(|p| p.default_start_method.as_deref())
        {
            return Some(m);
        }
        match self.facts.target_os {
            OsFamily::Linux => Some("fork"),
            OsFamily::Macos | OsFamily::Windows => Some("spawn"),
            OsFamily::Other => None,
        }
    }

    /// Where [`Context::start_method`] comes from: `planned or
    /// configured`, `the interpreter's default` or `the platform's
    /// default`.
    pub fn start_method_source(&self) -> &'static str {
        if self.plan.start_method.is_some() {
            "planned or configured"
        } else if self
            .facts
            .python
            .as_ref()
            .and_then(|p| p.default_start_method.as_ref())
            .is_some()
        {
            "the interpreter's default"
        } else {
            "the platform's default"
        }
    }

    /// Will workers be forked without exec?
    pub fn forks(&self) -> bool {
        self.start_method() == Some("fork")
    }

    /// An environment variable as the runtimes see it: see [`runtime_env`].
    pub fn env(&self, name: &str) -> Option<&'a str> {
        runtime_env(self.facts).get(name).map(String::as_str)
    }

    /// Usable CPUs (affinity, cgroup, Slurm), else logical CPUs.
    pub fn usable_cpus(&self) -> usize {
        self.facts
            .host
            .usable_cpus
            .as_ref()
            .map(|c| c.value)
            .unwrap_or(self.facts.host.logical_cpus)
            .max(1)
    }
}

/// The environment the runtimes read their variables from.
///
/// For a live process (`--pid`, `--import`) that is the environment it
/// started with (`process.initial_env`, from `/proc/PID/environ`): runtimes
/// read `OMP_NUM_THREADS` and friends once, when they load, so a value that
/// the probe's own environment (`facts.env`) has but the process did not
/// start with never reached them (CC009 reports that difference). A value
/// the process put into `os.environ` itself before importing numpy is not
/// visible from outside; the runtimes' own answers (thread counts asked in a
/// throw-away process) are the better evidence there. For an environment
/// that is not running, it is `facts.env`.
pub fn runtime_env(facts: &Facts) -> &BTreeMap<String, String> {
    match &facts.process {
        Some(p) => &p.initial_env,
        None => &facts.env,
    }
}
