//! What `caiclust-check` and `caiclust env` look at: the facts (probed now,
//! or replayed from a saved snapshot), the plan, and the configuration.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use caiclust_core::probe::{
    probe_pid, probe_python, probe_tree, Facts, OsFamily, ProbeOptions, Subject,
};
use caiclust_rules::{Config, Plan};

use crate::self_program::SelfProgram;

/// Where the facts come from. At most one of `--python`, `--pid`,
/// `--facts` and `--tree`; none means the current environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InputArgs {
    /// The interpreter (or venv/conda folder). Default: the active
    /// VIRTUAL_ENV or CONDA_PREFIX, else python3 on PATH.
    #[arg(long, conflicts_with_all = ["pid", "facts", "tree"])]
    pub python: Option<PathBuf>,
    /// A running process: what it has loaded and the environment it
    /// started with.
    #[arg(long, conflicts_with_all = ["facts", "tree"])]
    pub pid: Option<u32>,
    /// Replay saved facts (`caiclust probe --json`, e.g. from another
    /// machine or OS); `-` reads standard input.
    #[arg(long, conflicts_with = "tree")]
    pub facts: Option<PathBuf>,
    /// A folder of unpacked wheels or libraries, from any OS.
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// The OS the tree's binaries are for (default: inferred).
    #[arg(long, requires = "tree")]
    pub target_os: Option<OsFamily>,
    /// Don't ask the libraries themselves (no child processes; `--pid`).
    #[arg(long)]
    pub no_runtime_queries: bool,
    /// The configuration file (`caiclust.toml` or `pyproject.toml`).
    /// Default: the nearest one above the working folder.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The facts and where they came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub facts: Facts,
    /// The snapshot file, for `--facts`.
    pub facts_path: Option<PathBuf>,
}

impl InputArgs {
    /// Probe (or read) the facts. `helper` is the program that answers
    /// runtime queries for `--pid` (normally
    /// [`SelfProgram::current`]).
    pub fn load_facts(&self, helper: Option<SelfProgram>) -> anyhow::Result<Loaded> {
        let options = ProbeOptions {
            python: self.python.clone(),
            target_os: self.target_os,
            env: None,
        };
        if let Some(path) = &self.facts {
            let text = if path == Path::new("-") {
                std::io::read_to_string(std::io::stdin())
                    .context("reading facts from standard input")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading facts from {}", path.display()))?
            };
            let facts = Facts::from_json(&text)
                .with_context(|| format!("reading facts from {}", path.display()))?;
            return Ok(Loaded {
                facts,
                facts_path: Some(path.clone()),
            });
        }
        let facts = if let Some(pid) = self.pid {
            let live = SelfProgram::live_options(helper.filter(|_| !self.no_runtime_queries));
            probe_pid(pid, &live).with_context(|| format!("probing process {pid}"))?
        } else if let Some(dir) = &self.tree {
            probe_tree(dir, &options).with_context(|| format!("probing {}", dir.display()))?
        } else {
            probe_python(&options).context("probing the Python environment")?
        };
        Ok(Loaded {
            facts,
            facts_path: None,
        })
    }

    /// Was an environment named (`--python`, `--pid`, `--facts`, `--tree`)?
    /// `caiclust-check script.py` alone checks only the scripts.
    pub fn names_environment(&self) -> bool {
        self.python.is_some() || self.pid.is_some() || self.facts.is_some() || self.tree.is_some()
    }

    /// The configuration: `--config FILE`, else the nearest one above the
    /// working folder, else the defaults.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        match &self.config {
            Some(file) => load_config_file(file),
            None => {
                let cwd = std::env::current_dir().context("finding the working folder")?;
                Ok(Config::discover(&cwd)?)
            }
        }
    }
}

/// Read one named configuration file: a `pyproject.toml` (its
/// `[tool.caiclust]` table) or any other name read as `caiclust.toml`.
fn load_config_file(file: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(file)?)
}

/// The plan from `--start-method` and `--workers`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlanArgs {
    /// How the workers will be started.
    #[arg(long, value_parser = ["fork", "spawn", "forkserver"])]
    pub start_method: Option<String>,
    /// How many worker processes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub workers: Option<u64>,
}

impl PlanArgs {
    pub fn plan(&self) -> Plan {
        Plan {
            start_method: self.start_method.clone(),
            workers: self.workers.map(|w| w as usize),
            ..Plan::default()
        }
    }
}

/// One line naming what was probed.
pub fn describe_subject(facts: &Facts) -> String {
    match &facts.subject {
        Subject::Python { executable } => format!("Python {}", executable.display()),
        Subject::Tree { root } => format!("tree {}", root.display()),
        Subject::Process { pid, executable } => format!("process {pid} ({})", executable.display()),
    }
}
