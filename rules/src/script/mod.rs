//! Rules over Python source: the hazards a script or a Jupyter notebook
//! causes by how it is written (a pool created without the `__main__`
//! guard, thread variables set after `import numpy`, fork forced, CaImAn's
//! `single_thread`, task functions the workers cannot import, waits with no
//! deadline, a pool still alive when CaImAn sets up the next, CaImAn left
//! to count the machine's CPUs rather than the usable ones, thread counts
//! set in code before a fork, which no environment variable undoes).
//!
//! Scripts are read as Python reads them (UTF-8 unless a PEP 263 coding
//! line says otherwise) and parsed with the real Python grammar
//! (`rustpython-parser`); notebooks (`.ipynb`, nbformat 4) are read as
//! their code cells, in order, as one module (the kernel's `__main__`),
//! IPython's own syntax (`%magic`, `!cmd`, `obj?`, cell magics) set aside.
//! The rules look at calls with their
//! callees resolved through imports and simple assignments, so `import
//! multiprocessing as mp; mp.Pool()`, `from multiprocessing import Pool`
//! and `ctx = mp.get_context("spawn"); ctx.Pool()` are one and the same.
//! Nothing is executed.
//!
//! The rules are registered like every other (`caiclust explain CC201`),
//! but their [`Rule::check`] over facts finds nothing: [`lint_script`],
//! [`lint_notebook`] and [`lint_scripts`] run them. Facts or a planned
//! start method, when given, only set how serious a finding is (a pool
//! without the guard is an error where the start method is spawn or
//! forkserver, a warning where it is fork).
//!
//! The same reading gives a script's process plan ([`read_script_plan`]):
//! its pools and their worker counts, the start method it forces, and
//! whether it starts processes when imported.
//!
//! Every finding carries its place twice: as `location` (`path:line:column`,
//! or `path:cell N:line:column` in a notebook) and as evidence of kind
//! [`EvidenceSource::SourceCode`] with a [`caiclust_probe::SourceSpan`],
//! which also holds the line and column in the `.ipynb` file's own JSON
//! text.

use std::path::{Path, PathBuf};

use caiclust_probe::{Evidence, EvidenceSource, Facts, OsFamily};

use crate::config::Config;
use crate::context::{Context, Plan};
use crate::finding::{Finding, Level, RuleInfo};
use crate::registry::Rule;

mod cc201_pool_without_main_guard;
mod cc202_thread_variable_after_import;
mod cc203_fork_forced;
mod cc204_setup_cluster_single_thread_pool;
mod cc205_main_function_to_spawned_pool;
mod cc206_engine_wait_without_deadline;
mod cc207_pool_alive_at_setup_cluster;
mod cc208_setup_cluster_counts_machine_cpus;
mod cc209_explicit_threads_before_fork;
mod constants;
mod encoding;
mod json;
mod model;
mod notebook;
mod plan;
mod pools;
mod source;
mod thread_counts;
mod usage;

pub(crate) use cc201_pool_without_main_guard::PoolWithoutMainGuard;
pub(crate) use cc202_thread_variable_after_import::ThreadVariableAfterImport;
pub(crate) use cc203_fork_forced::ForkForced;
pub(crate) use cc204_setup_cluster_single_thread_pool::SetupClusterSingleThreadPool;
pub(crate) use cc205_main_function_to_spawned_pool::MainFunctionToSpawnedPool;
pub(crate) use cc206_engine_wait_without_deadline::EngineWaitWithoutDeadline;
pub(crate) use cc207_pool_alive_at_setup_cluster::PoolAliveAtSetupCluster;
pub(crate) use cc208_setup_cluster_counts_machine_cpus::SetupClusterCountsMachineCpus;
pub(crate) use cc209_explicit_threads_before_fork::ExplicitThreadsBeforeFork;

pub use plan::{
    read_script_plan, script_plan, ScriptPlan, ScriptPool, ScriptPoolKind, ScriptThreadCount,
    WorkerCount,
};
pub use usage::ScriptUsage;

use constants::Constants;
use model::Model;
use notebook::Notebook;
use source::Source;

/// The ids of the rules that read scripts, not facts.
pub const SCRIPT_RULES: &[&str] = &[
    "CC201", "CC202", "CC203", "CC204", "CC205", "CC206", "CC207", "CC208", "CC209",
];

/// The script rules, in id order.
static SCRIPT: &[&dyn ScriptRule] = &[
    &PoolWithoutMainGuard,
    &ThreadVariableAfterImport,
    &ForkForced,
    &SetupClusterSingleThreadPool,
    &MainFunctionToSpawnedPool,
    &EngineWaitWithoutDeadline,
    &PoolAliveAtSetupCluster,
    &SetupClusterCountsMachineCpus,
    &ExplicitThreadsBeforeFork,
];

/// A rule over one parsed script.
trait ScriptRule: Rule {
    fn lint(&self, script: &Script<'_>, setting: &Setting<'_>) -> Vec<Finding>;
}

/// What is known about where the script will run: the facts (with the
/// plan), or only a plan (`caiclust-check --start-method spawn x.py`), or
/// nothing (the portable worst case counts).
#[derive(Clone, Copy, Default)]
pub(crate) struct Setting<'a> {
    cx: Option<&'a Context<'a>>,
    plan: Option<&'a Plan>,
}

impl<'a> Setting<'a> {
    /// The start method workers get unless the script chooses one, and
    /// where that comes from.
    pub fn start_method(&self) -> Option<(&'a str, &'static str)> {
        if let Some(m) = self.plan.and_then(|p| p.start_method.as_deref()) {
            return Some((m, "planned or configured"));
        }
        let cx = self.cx?;
        let m = cx.start_method()?;
        let why = cx.start_method_source();
        Some((m, why))
    }

    /// The OS the facts describe, if any.
    pub fn target_os(&self) -> Option<OsFamily> {
        self.cx.map(|cx| cx.facts.target_os)
    }
}

/// A parsed script and its model, as the script rules see it.
struct Script<'a> {
    source: &'a Source<'a>,
    model: Model<'a>,
    /// The names bound to one literal (`N = 4`), by scope.
    constants: Constants<'a>,
}

impl<'a> Script<'a> {
    /// The model of a parsed script.
    fn new(source: &'a Source<'a>, suite: &'a [rustpython_parser::ast::Stmt]) -> Self {
        Self {
            source,
            model: Model::build(suite),
            constants: Constants::build(suite),
        }
    }

    /// Is this a notebook (its `__main__` is the kernel's)?
    fn is_notebook(&self) -> bool {
        self.source.notebook.is_some()
    }

    /// Evidence: the source line at `offset`.
    fn evidence(&self, offset: usize) -> Evidence {
        Evidence::in_source(
            self.source.span(offset),
            format!(
                "{}: {}",
                self.source.line_location(offset),
                self.source.snippet(offset)
            ),
        )
    }

    /// A finding at `offset`, with the line there as evidence.
    fn finding(
        &self,
        info: &RuleInfo,
        level: Level,
        offset: usize,
        message: String,
        fix: &str,
    ) -> Finding {
        Finding {
            rule_id: info.id.to_string(),
            rule_name: info.name.to_string(),
            level,
            message,
            evidence: vec![self.evidence(offset)],
            fix: Some(format!("{fix} (see `caiclust explain {}`)", info.id)),
            location: Some(self.source.location(offset)),
            env_fix: Vec::new(),
            presumed: false,
        }
    }

    /// The start method the script itself sets, if any:
    /// `multiprocessing.set_start_method(M)` anywhere.
    fn start_method_set(&self) -> Option<&str> {
        self.model.calls.iter().find_map(|c| {
            (c.callee == "multiprocessing.set_start_method")
                .then(|| model::arg(c.node, 0, "method").and_then(model::str_const))
                .flatten()
        })
    }
}

/// Why a script or notebook could not be linted. Findings are never
/// errors.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{}: cannot read the script: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Bytes that are not text in the file's encoding.
    #[error("{}:{line}:{column}: {}", path.display(), decode_message(encoding.as_deref()))]
    Decode {
        path: PathBuf,
        line: usize,
        column: usize,
        /// The declared encoding; `None`: UTF-8, the default.
        encoding: Option<String>,
    },
    /// A PEP 263 coding line Python would refuse.
    #[error("{}:{line}: bad coding declaration: {message}", path.display())]
    Coding {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A `.ipynb` file that is not a Python notebook in nbformat 4.
    #[error("{}: not a usable notebook: {message}", at(path, *position))]
    Notebook {
        path: PathBuf,
        /// Line and column in the file, when the problem has one.
        position: Option<(usize, usize)>,
        message: String,
    },
    #[error("{}: syntax error: {message}", syntax_at(path, *cell, *line, *column))]
    Syntax {
        path: PathBuf,
        /// The notebook cell (1-based), for a notebook.
        cell: Option<usize>,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ScriptError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Decode { path, .. }
            | Self::Coding { path, .. }
            | Self::Notebook { path, .. }
            | Self::Syntax { path, .. } => path,
        }
    }
}

fn decode_message(encoding: Option<&str>) -> String {
    match encoding {
        None => "not valid UTF-8 text (Python reads source as UTF-8 unless a `# -*- coding: NAME -*-` comment on line 1 or 2 says otherwise)".into(),
        Some(e) => format!("not valid {e} text, the encoding the file declares"),
    }
}

fn at(path: &Path, position: Option<(usize, usize)>) -> String {
    match position {
        Some((l, c)) => format!("{}:{l}:{c}", path.display()),
        None => path.display().to_string(),
    }
}

fn syntax_at(path: &Path, cell: Option<usize>, line: usize, column: usize) -> String {
    match cell {
        Some(cell) => format!("{}:cell {cell}:{line}:{column}", path.display()),
        None => format!("{}:{line}:{column}", path.display()),
    }
}

fn run_rules(source: &Source<'_>, setting: &Setting<'_>) -> Result<Vec<Finding>, ScriptError> {
    let suite = source.parse()?;
    let script = Script::new(source, &suite);
    Ok(SCRIPT
        .iter()
        .flat_map(|rule| rule.lint(&script, setting))
        .collect())
}

fn setting<'a>(cx: Option<&'a Context<'a>>) -> Setting<'a> {
    Setting {
        cx,
        plan: cx.map(|cx| cx.plan),
    }
}

/// Lint one script's source (Python text). Findings come at the levels
/// the rules choose from `cx` (the facts and plan; `None`: the platform is
/// unknown, so the portable worst case counts); no configuration is
/// applied.
pub fn lint_script(
    path: &Path,
    source: &str,
    cx: Option<&Context<'_>>,
) -> Result<Vec<Finding>, ScriptError> {
    run_rules(&Text::script(source).source(path), &setting(cx))
}

/// Lint one notebook from its JSON text (nbformat 4, a Python kernel).
pub fn lint_notebook(
    path: &Path,
    json: &str,
    cx: Option<&Context<'_>>,
) -> Result<Vec<Finding>, ScriptError> {
    let text = Text::notebook(path, json.to_string())?;
    run_rules(&text.source(path), &setting(cx))
}

/// Read and lint one file: a notebook when it ends in `.ipynb`, else a
/// Python script (UTF-8, or the encoding its coding line declares).
pub fn lint_script_file(
    path: &Path,
    cx: Option<&Context<'_>>,
) -> Result<Vec<Finding>, ScriptError> {
    lint_file_with(path, &setting(cx))
}

fn lint_file_with(path: &Path, setting: &Setting<'_>) -> Result<Vec<Finding>, ScriptError> {
    run_rules(&Text::read(path)?.source(path), setting)
}

/// A file's Python text: a script's source, or a notebook's code cells.
enum Text {
    Script(String),
    Notebook(Notebook),
}

impl Text {
    /// Read a file as Python would: a notebook when it ends in `.ipynb`,
    /// else a script (UTF-8, or the encoding its coding line declares).
    fn read(path: &Path) -> Result<Self, ScriptError> {
        let bytes = std::fs::read(path).map_err(|error| ScriptError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        if !notebook::is_notebook(path) {
            return Ok(Self::Script(encoding::decode(path, bytes)?));
        }
        let json = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            let line = prefix.matches('\n').count() + 1;
            let column = prefix.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            ScriptError::Notebook {
                path: path.to_path_buf(),
                position: Some((line, column)),
                message: "not valid UTF-8 (a notebook is JSON, which is UTF-8)".into(),
            }
        })?;
        Self::notebook(path, json)
    }

    /// A script's source text (a byte order mark dropped).
    fn script(source: &str) -> Self {
        Self::Script(
            source
                .strip_prefix('\u{feff}')
                .unwrap_or(source)
                .to_string(),
        )
    }

    /// A notebook's JSON text (a byte order mark dropped).
    fn notebook(path: &Path, json: String) -> Result<Self, ScriptError> {
        let json = json
            .strip_prefix('\u{feff}')
            .map(str::to_string)
            .unwrap_or(json);
        Ok(Self::Notebook(Notebook::read(path, json)?))
    }

    /// The text to parse, with its places.
    fn source<'a>(&'a self, path: &'a Path) -> Source<'a> {
        match self {
            Self::Script(text) => Source::new(path, text),
            Self::Notebook(nb) => Source::notebook(path, nb),
        }
    }
}

/// The outcome of linting several files: the findings of those that could
/// be read, and an error for each that could not.
#[derive(Debug, Default)]
pub struct ScriptLint {
    /// Most severe first, then by rule id; each rule's findings in file
    /// and source order.
    pub findings: Vec<Finding>,
    /// One per file that could not be read, decoded or parsed, in the
    /// order given.
    pub errors: Vec<ScriptError>,
}

impl ScriptLint {
    /// Did any file fail to lint?
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// Lint scripts and notebooks the way [`crate::evaluate`] runs the other
/// rules: levels configured by id or name replace the rules' own, rules
/// set to `allow` report nothing. `facts` (with the plan) decide how
/// serious platform-dependent findings are; without facts, the plan's
/// start method (`--start-method`) still counts; without either, the
/// portable worst case. A file that cannot be linted is reported in
/// [`ScriptLint::errors`] and the others are still linted.
pub fn lint_scripts<P: AsRef<Path>>(
    paths: &[P],
    facts: Option<&Facts>,
    plan: &Plan,
    config: &Config,
) -> ScriptLint {
    let plan = config.apply_to_plan(plan);
    let advisories = config.advisory_db();
    let cx = facts.map(|facts| Context {
        facts,
        plan: &plan,
        advisories: &advisories,
    });
    let setting = Setting {
        cx: cx.as_ref(),
        plan: Some(&plan),
    };
    let mut out = ScriptLint::default();
    for path in paths {
        match lint_file_with(path.as_ref(), &setting) {
            Ok(found) => {
                for mut f in found {
                    match config.level_for(&f.rule_id, &f.rule_name) {
                        Some(Level::Allow) => continue,
                        Some(level) => f.level = level,
                        None => {}
                    }
                    out.findings.push(f);
                }
            }
            Err(e) => out.errors.push(e),
        }
    }
    out.findings.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| a.rule_id.cmp(&b.rule_id))
    });
    out
}

/// Will the pool's workers be started by spawn or forkserver (re-importing
/// `__main__`)? `method` is what the script itself chose, if anything.
/// Returns the level and a phrase saying why.
fn reimport_level(method: Option<&str>, setting: &Setting<'_>) -> (Level, String) {
    match method.filter(|m| !m.is_empty()) {
        Some("fork") => (
            Level::Warning,
            "the script asks for fork, which works here but not on Windows".into(),
        ),
        Some(m) => (Level::Error, format!("the script asks for {m}")),
        None => match setting.start_method() {
            Some(("fork", _)) => (
                Level::Warning,
                "the start method here is fork, but it is spawn on Windows and macOS and forkserver on Linux from Python 3.14".into(),
            ),
            Some((m, why)) => (Level::Error, format!("the start method here is {m} ({why})")),
            None => (
                Level::Error,
                "the start method is spawn on Windows and macOS and forkserver on Linux from Python 3.14".into(),
            ),
        },
    }
}

/// Evidence naming where the start method comes from, for findings whose
/// level depends on it.
fn start_method_evidence(method: &str, why: &str) -> Evidence {
    Evidence::new(
        EvidenceSource::Environment,
        format!("start method {method} ({why})"),
    )
}
