//! One program run the safe way (`caiclust run -- python script.py`):
//! the hazard policy applied to a whole program instead of a pool of
//! tasks.
//!
//! [`plan_program`] decides, from the facts, the script's own process plan
//! (read statically: its pools, their worker counts and start methods, its
//! `__main__` guard) and the user's choices:
//!
//! * **threads** sized for the worker count the program really uses
//!   (`Pool(2)` written in the script, else the library's own default), so
//!   that workers × threads stays within the usable CPUs;
//! * **the start method**: when the program would fork with a hazard and
//!   the script neither forces a method nor lacks the `__main__` guard, the
//!   default start method of its pools changes to the policy's safer one,
//!   through a startup hook ([`hook`]); otherwise fork stays and the
//!   environment that makes fork safe is set (`OMP_NUM_THREADS=1`, ...),
//!   overriding a variable of the user's that causes the hazard;
//! * one [`Change`] per thing changed, naming the finding it answers.
//!
//! The program then runs under the hang watchdog of [`crate::hang`]; see
//! `caiclust run`.

pub mod hook;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use caiclust_probe::Facts;
use caiclust_rules::{
    assess, read_script_plan, recommend, Config, EnvSetting, Plan, ScriptError, ScriptPlan, Verdict,
};

use crate::plan::StartMethod;

/// What the user asked of the run.
#[derive(Debug, Clone, Default)]
pub struct ProgramOptions {
    /// Force this start method on every pool of the program, explicit
    /// requests included.
    pub start_method: Option<StartMethod>,
    /// Change nothing (the program still runs watched).
    pub no_fix: bool,
    /// Variables given explicitly (`--env K=V`): they win.
    pub explicit_env: Vec<(String, String)>,
}

/// Where an applied variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The recommendation, with its reason.
    Recommended(String),
    /// Already set in the environment to something else; kept.
    Environment { recommended: String },
    /// Set in the environment to a value that causes a hazard, replaced
    /// by the value that makes the start method safe: the user's value.
    Replaced { was: String },
    /// Given explicitly (`--env`).
    Explicit,
}

/// One variable the program runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub name: String,
    pub value: String,
    pub origin: Origin,
}

/// One change made to how the program runs, and the finding it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changed, e.g. `the default start method fork -> forkserver`.
    pub what: String,
    /// The finding it answers, `CC001 gnu-openmp-fork: ...`.
    pub answers: String,
}

/// The decisions for one program.
#[derive(Debug, Clone)]
pub struct ProgramPlan {
    /// The script of `python script.py`, if any.
    pub script: Option<PathBuf>,
    /// Its process plan, when it could be read.
    pub script_plan: Option<ScriptPlan>,
    /// Why the script could not be read, when it could not.
    pub script_error: Option<String>,
    /// Worker processes planned for, and where the number comes from.
    pub workers: (usize, String),
    /// Threads per process.
    pub threads: usize,
    /// The verdict on the program as it would run unchanged.
    pub before: Verdict,
    /// The verdict on the program as it will run.
    pub after: Verdict,
    /// The start method pools get through the startup hook, and whether
    /// it is forced on explicit requests too.
    pub hook: Option<(StartMethod, bool)>,
    /// The variables the program runs with.
    pub env: Vec<Applied>,
    /// What changed, each with the finding it answers.
    pub changes: Vec<Change>,
}

impl ProgramPlan {
    /// The variables to add to the program's environment (the hook's
    /// need [`hook::Hook`] installed too).
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect()
    }
}

/// Decide how `argv` runs (see the module documentation). `facts` are the
/// probed interpreter's (or the host's); `current` reads the environment
/// caiclust was started with.
pub fn plan_program(
    argv: &[String],
    facts: &Facts,
    config: &Config,
    options: &ProgramOptions,
    current: impl Fn(&str) -> Option<String>,
) -> ProgramPlan {
    let script = script_of(argv);
    let (script_plan, script_error) = match &script {
        Some(s) => match read_script_plan(s) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(script_error_text(&e))),
        },
        None => (None, None),
    };
    let python = argv.first().is_some_and(|p| is_python(p));
    let workers = program_workers(facts, config, script_plan.as_ref(), python);
    let forced_by_script = script_plan
        .as_ref()
        .and_then(|p| p.forced_start_method())
        .map(str::to_string);
    // The start method the program's pools use unless caiclust changes it.
    let natural = match (&options.start_method, &forced_by_script) {
        (Some(m), _) => Some(m.as_str().to_string()),
        (None, Some(m)) => Some(m.clone()),
        (None, None) => config.start_method.clone(),
    };
    // What the script runs on each side of the fork: a runtime it only
    // loads hangs nothing, and fork stays (the same verdict caiclust-check
    // gives the script).
    let usage = script_plan.as_ref().map(|p| p.usage.clone());
    let unchanged_plan = Plan {
        start_method: natural,
        workers: Some(workers.0),
        usage: usage.clone(),
        ..Plan::default()
    };
    let before = assess(facts, &unchanged_plan, config);
    // The same, with the thread limits caiclust sets anyway (sized for the
    // workers, the user's own values kept): where they already make fork
    // safe (one thread per worker), fork stays, as fast as it is; where
    // they do not, the start method changes.
    let with_threads = assess_with_thread_limits(
        facts,
        config,
        &unchanged_plan,
        &before.start_method,
        options,
        &current,
    );

    let mut changes = Vec::new();
    let (method, hook) = if options.no_fix {
        (before.start_method.clone(), None)
    } else if let Some(forced) = options.start_method {
        (forced.as_str().to_string(), Some((forced, true)))
    } else {
        let script = ScriptFacts {
            python,
            plan: script_plan.as_ref(),
            forced: forced_by_script.as_deref(),
        };
        match switch_start_method(facts, config, &with_threads, &script, workers.0) {
            Some((m, change)) => {
                changes.push(change);
                (m.as_str().to_string(), Some((m, false)))
            }
            None => (before.start_method.clone(), None),
        }
    };

    let rec = recommend(
        facts,
        &Config {
            workers: Some(workers.0),
            start_method: Some(method.clone()),
            ..config.clone()
        },
    );
    let env = if options.no_fix {
        explicit_only(&options.explicit_env)
    } else {
        decide_env(&rec.env, &options.explicit_env, &current)
    };
    changes.extend(env_changes(
        facts,
        config,
        &rec,
        &env,
        (&method, workers.0),
        usage.as_ref(),
    ));
    let after_plan = Plan {
        start_method: Some(method),
        workers: Some(workers.0),
        env: env
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect::<BTreeMap<_, _>>(),
        usage,
    };
    let after = assess(facts, &after_plan, config);
    ProgramPlan {
        script,
        script_plan,
        script_error,
        threads: rec.threads_per_worker.value,
        workers,
        before,
        after,
        hook,
        env,
        changes,
    }
}

/// The verdict on `plan` with only the thread limits caiclust sets anyway
/// (sized for its workers; the user's own values kept).
fn assess_with_thread_limits(
    facts: &Facts,
    config: &Config,
    plan: &Plan,
    start_method: &str,
    options: &ProgramOptions,
    current: &impl Fn(&str) -> Option<String>,
) -> Verdict {
    let rec = recommend(
        facts,
        &Config {
            workers: plan.workers,
            start_method: Some(start_method.to_string()),
            ..config.clone()
        },
    );
    // The thread limits alone: a hazard's fix counts only where the
    // limit would set the same value anyway (OMP_NUM_THREADS=1 for one
    // thread per worker), not NUMBA_THREADING_LAYER=workqueue.
    let per_worker = rec.threads_per_worker.value.to_string();
    let limits: Vec<EnvSetting> = rec
        .env
        .into_iter()
        .filter(|e| e.answers.is_empty() || e.value == per_worker)
        // As limits, they give way to the user's own values (which a
        // changed start method can respect).
        .map(|e| EnvSetting {
            answers: Vec::new(),
            ..e
        })
        .collect();
    let env = decide_env(&limits, &options.explicit_env, current);
    assess(
        facts,
        &Plan {
            env: env.into_iter().map(|a| (a.name, a.value)).collect(),
            ..plan.clone()
        },
        config,
    )
}

/// What the script says about how its pools start.
struct ScriptFacts<'a> {
    /// The program is a Python interpreter (its default start method can
    /// be changed by the hook).
    python: bool,
    plan: Option<&'a ScriptPlan>,
    /// The start method the script asks for itself.
    forced: Option<&'a str>,
}

/// The default start method the hook gives the program's pools, and the
/// change to report; `None` to keep the interpreter's.
///
/// * The default would fork with a start-method hazard under the thread
///   limits that will apply (`before`), and the script is guarded and asks
///   for no method: the policy's safer method.
/// * The default is spawn or forkserver (Python 3.14 on Linux) and the
///   script has no `__main__` guard, so every worker would re-run its top
///   level: fork, where an environment makes fork safe.
fn switch_start_method(
    facts: &Facts,
    config: &Config,
    before: &Verdict,
    script: &ScriptFacts<'_>,
    workers: usize,
) -> Option<(StartMethod, Change)> {
    let plan = script.plan?;
    if !script.python || script.forced.is_some() {
        return None;
    }
    if !plan.unguarded && before.start_method_unsafe() {
        let m: StartMethod = before.safer_start_method()?.parse().ok()?;
        return Some((
            m,
            Change {
                what: format!(
                    "the default start method {} -> {m} (pools that ask for none)",
                    before.start_method
                ),
                answers: answers(before.start_method_findings()),
            },
        ));
    }
    let reimports = matches!(before.start_method.as_str(), "spawn" | "forkserver");
    if plan.unguarded && reimports && cfg!(unix) {
        let fork = Plan {
            start_method: Some("fork".into()),
            workers: Some(workers),
            ..Plan::default()
        };
        assess(facts, &fork, config).env_fix?;
        return Some((
            StartMethod::Fork,
            Change {
                what: format!(
                    "the default start method {} -> fork (pools that ask for none)",
                    before.start_method
                ),
                answers: format!(
                    "CC201 pool-without-main-guard: the script starts workers at import time, \
                     which {} re-runs in every worker",
                    before.start_method
                ),
            },
        ));
    }
    None
}

/// One change for each environment fix in `env`, with the hazards of the
/// plan before it that it answers.
fn env_changes(
    facts: &Facts,
    config: &Config,
    rec: &caiclust_rules::Recommendation,
    env: &[Applied],
    (method, workers): (&str, usize),
    usage: Option<&caiclust_rules::ScriptUsage>,
) -> Vec<Change> {
    // Judged by what the script runs, as the plan is: a fix for a hazard
    // the script cannot meet is a thread limit, not a change to report.
    let fixing = assess(
        facts,
        &Plan {
            start_method: Some(method.to_string()),
            workers: Some(workers),
            usage: usage.cloned(),
            ..Plan::default()
        },
        config,
    );
    let answered =
        |ids: &[String]| answers(fixing.hazards.iter().filter(|f| ids.contains(&f.rule_id)));
    let mut changes = Vec::new();
    for a in env {
        let Some(fix) = rec
            .env
            .iter()
            .find(|e| e.name == a.name && !e.answers.is_empty())
        else {
            continue;
        };
        let what = match &a.origin {
            Origin::Replaced { was } => format!(
                "{}={} from your environment replaced by {}={}: your value is the cause",
                a.name, was, a.name, a.value
            ),
            Origin::Recommended(_) => format!("{}={} so that {method} is safe", a.name, a.value),
            Origin::Explicit | Origin::Environment { .. } => format!(
                "none: {}={} is kept as given, although {}={} would make {method} safe",
                a.name, a.value, fix.name, fix.value
            ),
        };
        let answers = answered(&fix.answers);
        if answers.is_empty() {
            continue;
        }
        changes.push(Change { what, answers });
    }
    changes
}

/// The findings as `ID name: message`, joined.
fn answers<'a>(findings: impl Iterator<Item = &'a caiclust_rules::Finding>) -> String {
    findings
        .map(|f| format!("{} {}: {}", f.rule_id, f.rule_name, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Only the explicit variables (`--no-fix`).
fn explicit_only(explicit: &[(String, String)]) -> Vec<Applied> {
    explicit
        .iter()
        .map(|(k, v)| Applied {
            name: k.clone(),
            value: v.clone(),
            origin: Origin::Explicit,
        })
        .collect()
}

/// Decide every variable: `--env` first; then the environment's own
/// (non-empty) value, except for the recommendation's environment fixes
/// (they make the start method safe: a different value of the user's is
/// the hazard's cause and is replaced); then the recommendation.
pub fn decide_env(
    recommended: &[EnvSetting],
    explicit: &[(String, String)],
    current: impl Fn(&str) -> Option<String>,
) -> Vec<Applied> {
    let mut out = explicit_only(explicit);
    for e in recommended {
        if out.iter().any(|a| a.name == e.name) {
            continue;
        }
        let applied = match current(&e.name).filter(|v| !v.is_empty()) {
            Some(v) if v != e.value && !e.answers.is_empty() => Applied {
                name: e.name.clone(),
                value: e.value.clone(),
                origin: Origin::Replaced { was: v },
            },
            Some(v) if v != e.value => Applied {
                name: e.name.clone(),
                value: v,
                origin: Origin::Environment {
                    recommended: e.value.clone(),
                },
            },
            _ => Applied {
                name: e.name.clone(),
                value: e.value.clone(),
                origin: Origin::Recommended(e.reason.clone()),
            },
        };
        out.push(applied);
    }
    out
}

/// The worker count the program will use, and why.
fn program_workers(
    facts: &Facts,
    config: &Config,
    script: Option<&ScriptPlan>,
    python: bool,
) -> (usize, String) {
    if let Some(n) = config.workers {
        return (n.max(1), "set in the configuration".into());
    }
    let affinity = facts.host.affinity.as_ref().map(Vec::len);
    let version = facts
        .python
        .as_ref()
        .map(|p| (p.version_info[0], p.version_info[1]));
    if let Some(plan) = script {
        if let Some((n, why)) = plan.workers(facts.host.logical_cpus, affinity, version) {
            return (n.max(1), why);
        }
        if !plan.may_use_pools && python {
            return (
                1,
                "the script starts no worker processes: one process".into(),
            );
        }
        // Pools may come from a module: Pool()'s own default.
        let n = match (version, affinity) {
            (Some((3, minor)), Some(a)) if minor >= 13 => a,
            _ => facts.host.logical_cpus,
        };
        return (
            n.max(1),
            format!(
                "{n} (multiprocessing.Pool's default: the script's pools are not written in it)"
            ),
        );
    }
    let rec = recommend(facts, config);
    (rec.workers.value, rec.workers.reason)
}

/// A script error in one line.
fn script_error_text(e: &ScriptError) -> String {
    e.to_string()
}

/// Is `program` a Python interpreter (`python`, `python3.12`,
/// `.venv/bin/python`, `python.exe`)?
pub fn is_python(program: &str) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".exe").unwrap_or(&name);
    name.strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// The script of `python [options] script.py args...`; `None` for
/// `python -m mod`, `python -c code`, an interactive interpreter or a
/// command that is not Python.
pub fn script_of(argv: &[String]) -> Option<PathBuf> {
    let (program, args) = argv.split_first()?;
    if !is_python(program) {
        return None;
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-" || a == "--" {
            return it.next().filter(|s| *s != "-").map(PathBuf::from);
        }
        if let Some(opts) = a.strip_prefix('-') {
            if opts.starts_with('-') {
                // --version, --help and the like: nothing runs.
                continue;
            }
            // Options are bundled (-uOO); -c and -m end the interpreter's
            // options; -X and -W take a value (attached or next).
            for (i, c) in opts.char_indices() {
                match c {
                    'c' | 'm' => return None,
                    'X' | 'W' => {
                        if i + 1 == opts.len() {
                            it.next();
                        }
                        break;
                    }
                    _ => {}
                }
            }
            continue;
        }
        return Some(PathBuf::from(a));
    }
    None
}

#[cfg(test)]
mod tests;
