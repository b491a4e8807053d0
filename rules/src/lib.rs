//! # caiclust-rules
//!
//! The linter over [`caiclust_probe::Facts`]: rules with stable ids
//! ([`all_rules`]), each documented where it is defined, evaluated into
//! [`Finding`]s that name their evidence; an advisory database of
//! version-specific runtime bugs; configuration from `caiclust.toml` or
//! `[tool.caiclust]` in `pyproject.toml`; and the [`Recommendation`]: the
//! backend, start method, worker count, per-worker thread limit and
//! environment to run parallel work safely, each with its reason. The
//! script rules (CC2xx) read Python scripts and Jupyter notebooks instead
//! of facts: [`lint_scripts`], [`lint_script`], [`lint_notebook`].
//!
//! ```no_run
//! use caiclust_rules::{evaluate, recommend, Config, Plan};
//! let facts = caiclust_probe::probe_python(&Default::default()).expect("probe");
//! let config = Config::default();
//! let report = evaluate(&facts, &Plan::default(), &config);
//! for f in &report.findings {
//!     println!("{} {}: {}", f.level.as_str(), f.rule_id, f.message);
//! }
//! let advice = recommend(&facts, &config);
//! println!("start method {}: {}", advice.start_method.value, advice.start_method.reason);
//! ```

mod advisory;
mod config;
mod context;
mod finding;
mod policy;
mod recommend;
mod registry;
mod report;
mod rules;
mod script;
pub mod threads;
mod uses;

pub use advisory::{Advisory, AdvisoryDb, AdvisoryError};
pub use config::{Config, ConfigError, ConfigSource};
pub use context::{runtime_env, Context, Plan};
pub use finding::{Category, Finding, Level, RuleInfo};
pub use policy::{assess, hang_causes, start_methods_of, Verdict};
pub use recommend::{recommend, Backend, Choice, EnvSetting, Recommendation};
pub use registry::{all_rules, find_rule, Rule};
pub use report::{evaluate, Report};
pub use script::{
    lint_notebook, lint_script, lint_script_file, lint_scripts, read_script_plan, script_plan,
    ScriptError, ScriptLint, ScriptPlan, ScriptPool, ScriptPoolKind, ScriptThreadCount,
    ScriptUsage, WorkerCount, SCRIPT_RULES,
};
