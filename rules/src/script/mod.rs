//! Rules over Python source: the hazards a script causes by how it is
//! written (a pool created without the `__main__` guard, thread variables
//! set after `import numpy`, fork forced, CaImAn's `single_thread`).
//!
//! Scripts are parsed with the real Python grammar (`rustpython-parser`);
//! the rules look at calls with their callees resolved through imports and
//! simple assignments, so `import multiprocessing as mp; mp.Pool()`,
//! `from multiprocessing import Pool` and `ctx = mp.get_context("spawn");
//! ctx.Pool()` are one and the same. Nothing is executed.
//!
//! The rules are registered like every other (`caiclust explain CC201`),
//! but their [`Rule::check`] over facts finds nothing: [`lint_script`] and
//! [`lint_scripts`] run them. Facts, when given, only set how serious a
//! finding is (a pool without the guard is an error where the start method
//! is spawn or forkserver, a warning where it is fork).

use std::path::{Path, PathBuf};

use caiclust_probe::{Evidence, EvidenceSource, Facts};

use crate::config::Config;
use crate::context::{Context, Plan};
use crate::finding::{Finding, Level, RuleInfo};
use crate::registry::Rule;

mod cc201_pool_without_main_guard;
mod cc202_thread_variable_after_import;
mod cc203_fork_forced;
mod cc204_setup_cluster_single_thread_pool;
mod model;
mod source;

pub(crate) use cc201_pool_without_main_guard::PoolWithoutMainGuard;
pub(crate) use cc202_thread_variable_after_import::ThreadVariableAfterImport;
pub(crate) use cc203_fork_forced::ForkForced;
pub(crate) use cc204_setup_cluster_single_thread_pool::SetupClusterSingleThreadPool;

use model::Model;
use source::Source;

/// The ids of the rules that read scripts, not facts.
pub const SCRIPT_RULES: &[&str] = &["CC201", "CC202", "CC203", "CC204"];

/// The script rules, in id order.
static SCRIPT: &[&dyn ScriptRule] = &[
    &PoolWithoutMainGuard,
    &ThreadVariableAfterImport,
    &ForkForced,
    &SetupClusterSingleThreadPool,
];

/// A rule over one parsed script. `cx` holds the facts and plan when known.
trait ScriptRule: Rule {
    fn lint(&self, script: &Script<'_>, cx: Option<&Context<'_>>) -> Vec<Finding>;
}

/// A parsed script and its model, as the script rules see it.
struct Script<'a> {
    source: &'a Source<'a>,
    model: Model<'a>,
}

impl Script<'_> {
    /// A finding at `offset`, with the line there as evidence.
    fn finding(
        &self,
        info: &RuleInfo,
        level: Level,
        offset: usize,
        message: String,
        fix: &str,
    ) -> Finding {
        let (line, _) = self.source.position(offset);
        Finding {
            rule_id: info.id.to_string(),
            rule_name: info.name.to_string(),
            level,
            message,
            evidence: vec![Evidence::new(
                EvidenceSource::Static,
                format!(
                    "{}:{line}: {}",
                    source::display_path(self.source.path),
                    self.source.snippet(offset)
                ),
            )],
            fix: Some(format!("{fix} (see `caiclust explain {}`)", info.id)),
            location: Some(self.source.location(offset)),
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

/// Why a script could not be linted. Findings are never errors.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{}: cannot read the script: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}:{column}: not UTF-8 text (Python source must be UTF-8 unless it declares a coding, which caiclust does not read)", path.display())]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{}:{line}:{column}: syntax error: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Lint one script's source. Findings come at the levels the rules choose
/// from `cx` (the facts and plan; `None`: the platform is unknown, so the
/// portable worst case counts); no configuration is applied.
pub fn lint_script(
    path: &Path,
    source: &str,
    cx: Option<&Context<'_>>,
) -> Result<Vec<Finding>, ScriptError> {
    let source = Source::new(path, source.strip_prefix('\u{feff}').unwrap_or(source));
    let suite = source.parse()?;
    let script = Script {
        source: &source,
        model: Model::build(&suite),
    };
    Ok(SCRIPT
        .iter()
        .flat_map(|rule| rule.lint(&script, cx))
        .collect())
}

/// Read and lint one script file (UTF-8).
pub fn lint_script_file(
    path: &Path,
    cx: Option<&Context<'_>>,
) -> Result<Vec<Finding>, ScriptError> {
    let bytes = std::fs::read(path).map_err(|error| ScriptError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let text = source::decode(path, bytes)?;
    lint_script(path, &text, cx)
}

/// Lint scripts the way [`crate::evaluate`] runs the other rules: levels
/// configured by id or name replace the rules' own, rules set to `allow`
/// report nothing; most severe first, then by rule id, each rule's
/// findings in file and source order. `facts` (with the plan) decide how
/// serious platform-dependent findings are; without them the portable
/// worst case counts. Stops at the first script that cannot be read or
/// parsed.
pub fn lint_scripts<P: AsRef<Path>>(
    paths: &[P],
    facts: Option<&Facts>,
    plan: &Plan,
    config: &Config,
) -> Result<Vec<Finding>, ScriptError> {
    let plan = config.apply_to_plan(plan);
    let advisories = config.advisory_db();
    let cx = facts.map(|facts| Context {
        facts,
        plan: &plan,
        advisories: &advisories,
    });
    let mut findings = Vec::new();
    for path in paths {
        for mut f in lint_script_file(path.as_ref(), cx.as_ref())? {
            match config.level_for(&f.rule_id, &f.rule_name) {
                Some(Level::Allow) => continue,
                Some(level) => f.level = level,
                None => {}
            }
            findings.push(f);
        }
    }
    findings.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| a.rule_id.cmp(&b.rule_id))
    });
    Ok(findings)
}

/// Will the pool's workers be started by spawn or forkserver (re-importing
/// `__main__`)? `method` is what the script itself chose, if anything.
/// Returns the level and a phrase saying why.
fn reimport_level(method: Option<&str>, cx: Option<&Context<'_>>) -> (Level, String) {
    match method.filter(|m| !m.is_empty()) {
        Some("fork") => (
            Level::Warning,
            "the script asks for fork, which works here but not on Windows".into(),
        ),
        Some(m) => (Level::Error, format!("the script asks for {m}")),
        None => match cx.and_then(|cx| cx.start_method()) {
            Some("fork") => (
                Level::Warning,
                "the start method here is fork, but it is spawn on Windows and macOS and forkserver on Linux from Python 3.14".into(),
            ),
            Some(m) => (Level::Error, format!("the start method here is {m}")),
            None => (
                Level::Error,
                "the start method is spawn on Windows and macOS and forkserver on Linux from Python 3.14".into(),
            ),
        },
    }
}
