//! The one hazard policy: is a plan (start method, workers, and the
//! environment the workers will get) safe on these facts, which findings
//! make it unsafe, and what fixes it. Everything that runs or plans work
//! asks here: the recommendation, `Cluster` (its fork refusal), the hang
//! watchdog, `caiclust run`, `caiclust env`, `caiclust map` and
//! `caiclust-check`.
//!
//! * A finding makes a plan **unsafe** when its rule is of the
//!   hang-or-crash category and it is at the error level after
//!   configuration (a user who sets a rule to `warning` accepts the risk),
//!   or when it is a warning only because nothing shows the code that will
//!   run ([`Finding::presumed`]: a GNU OpenMP pool installed, with no
//!   script or live process to show it used). Such a plan is **at risk**:
//!   the report says warning, but what runs code the rules cannot read
//!   avoids it all the same.
//! * Whether **another start method** avoids it is the rule's metadata,
//!   [`RuleInfo::depends_on_start_method`](crate::RuleInfo); no rule id is
//!   written here.
//! * Whether **an environment** avoids it is the finding's own
//!   [`Finding::env_fix`], checked by judging the plan again with those
//!   variables set. A running process cannot be fixed by variables: its
//!   runtimes have read them already.

use std::collections::BTreeMap;

use caiclust_probe::{Facts, OsFamily};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::context::{Context, Plan};
use crate::finding::{Category, Finding, Level};
use crate::recommend::EnvSetting;
use crate::registry::find_rule;
use crate::report::{evaluate, Report};

/// What the policy says of one plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// The start method judged.
    pub start_method: String,
    /// Where it comes from: `planned or configured`, `the interpreter's
    /// default`, `the platform's default`.
    pub start_method_source: String,
    /// The worker count judged.
    pub workers: usize,
    /// The findings that make the plan unsafe, most severe first.
    pub hazards: Vec<Finding>,
    /// The ids of the hazards that another start method avoids.
    pub start_method_hazards: Vec<String>,
    /// The start methods this platform offers under which no start-method
    /// hazard remains, best first (fork first where it is safe: it starts
    /// workers fastest).
    pub safe_start_methods: Vec<String>,
    /// Variables that make the plan safe with its own start method, as
    /// checked by judging it again with them; empty when it is safe
    /// already, `None` when no environment makes it safe.
    pub env_fix: Option<Vec<EnvSetting>>,
}

impl Verdict {
    /// No hazard at all.
    pub fn safe(&self) -> bool {
        self.hazards.is_empty()
    }

    /// Every hazard is only presumed ([`Finding::presumed`]): the plan is
    /// at risk, not shown to fail.
    pub fn only_presumed(&self) -> bool {
        !self.hazards.is_empty() && self.hazards.iter().all(|f| f.presumed)
    }

    /// Is the start method itself the problem (another one avoids every
    /// start-method hazard)?
    pub fn start_method_unsafe(&self) -> bool {
        !self.start_method_hazards.is_empty()
    }

    /// The best start method other than the plan's own under which the
    /// start-method hazards go away.
    pub fn safer_start_method(&self) -> Option<&str> {
        self.safe_start_methods
            .iter()
            .map(String::as_str)
            .find(|m| *m != self.start_method)
    }

    /// The hazards that another start method avoids.
    pub fn start_method_findings(&self) -> impl Iterator<Item = &Finding> {
        self.hazards
            .iter()
            .filter(|f| self.start_method_hazards.contains(&f.rule_id))
    }

    /// Each hazard as `ID name: message`.
    pub fn hazard_lines(&self) -> Vec<String> {
        self.hazards
            .iter()
            .map(|f| format!("{} {}: {}", f.rule_id, f.rule_name, f.message))
            .collect()
    }

    /// One line for people: `fork with 2 workers: unsafe (CC001); safe
    /// with forkserver, spawn, or OMP_NUM_THREADS=1`.
    pub fn summary(&self) -> String {
        let plan = format!(
            "{} ({}) with {} worker{}",
            self.start_method,
            self.start_method_source,
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        );
        if self.safe() {
            return format!("{plan}: safe");
        }
        let mut ids: Vec<&str> = self.hazards.iter().map(|f| f.rule_id.as_str()).collect();
        ids.dedup();
        let mut ways: Vec<String> = Vec::new();
        if self.start_method_unsafe() {
            ways.extend(
                self.safe_start_methods
                    .iter()
                    .filter(|m| **m != self.start_method)
                    .map(|m| format!("start method {m}")),
            );
        }
        if let Some(fix) = self.env_fix.as_ref().filter(|f| !f.is_empty()) {
            ways.push(
                fix.iter()
                    .map(|e| format!("{}={}", e.name, e.value))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        let fixes = if ways.is_empty() {
            "no start method or environment avoids it".to_string()
        } else {
            format!("safe with {}", ways.join(", or "))
        };
        let judged = if self.only_presumed() {
            "at risk if the code runs the pool before the fork and in the workers"
        } else {
            "unsafe"
        };
        format!("{plan}: {judged} ({}); {fixes}", ids.join(", "))
    }
}

/// The start methods a platform offers, in the order the policy prefers
/// them when they are safe.
pub fn start_methods_of(os: OsFamily) -> &'static [&'static str] {
    match os {
        OsFamily::Windows => &["spawn"],
        // spawn is macOS's default since Python 3.8: its system frameworks
        // do not survive fork.
        OsFamily::Macos => &["spawn", "forkserver", "fork"],
        OsFamily::Linux | OsFamily::Other => &["fork", "forkserver", "spawn"],
    }
}

/// Judge a plan: see the module documentation. Empty fields of `plan`
/// come from the configuration, then the facts (the interpreter's default
/// start method; usable CPUs − 1 workers).
pub fn assess(facts: &Facts, plan: &Plan, config: &Config) -> Verdict {
    let plan = config.apply_to_plan(plan);
    let (report, start_method, source, workers) = judge(facts, &plan, config);
    let hazards = hazards_of(&report);
    let start_method_hazards = start_method_ids(&hazards);
    let mut safe_start_methods = Vec::new();
    for m in start_methods_of(facts.target_os) {
        let clear = if *m == start_method {
            start_method_hazards.is_empty()
        } else {
            let other = Plan {
                start_method: Some(m.to_string()),
                ..plan.clone()
            };
            start_method_ids(&hazards_of(&judge(facts, &other, config).0)).is_empty()
        };
        if clear {
            safe_start_methods.push(m.to_string());
        }
    }
    let env_fix = env_fix(facts, &plan, config, &hazards);
    Verdict {
        start_method,
        start_method_source: source,
        workers,
        hazards,
        start_method_hazards,
        safe_start_methods,
        env_fix,
    }
}

/// The findings that make a plan unsafe, causes of a hang first: what the
/// hang watchdog names when a worker started with `method` stalls.
pub fn hang_causes(facts: &Facts, method: &str, workers: usize, config: &Config) -> Vec<Finding> {
    let plan = Plan {
        start_method: Some(method.to_string()),
        workers: Some(workers),
        ..Plan::default()
    };
    let verdict = assess(facts, &plan, config);
    let (mut first, rest): (Vec<Finding>, Vec<Finding>) = verdict
        .hazards
        .into_iter()
        .partition(|f| verdict.start_method_hazards.contains(&f.rule_id));
    first.extend(rest);
    first
}

/// Evaluate the rules on a plan; also the start method, where it comes
/// from, and the worker count that were judged.
fn judge(facts: &Facts, plan: &Plan, config: &Config) -> (Report, String, String, usize) {
    let report = evaluate(facts, plan, config);
    let advisories = config.advisory_db();
    let cx = Context {
        facts,
        plan,
        advisories: &advisories,
    };
    let start_method = cx.start_method().unwrap_or("spawn").to_string();
    let source = cx.start_method_source();
    let workers = plan
        .workers
        .unwrap_or_else(|| cx.usable_cpus().saturating_sub(1).max(1));
    (report, start_method, source.to_string(), workers)
}

/// Hang-or-crash findings at the error level, or presumed to be.
fn hazards_of(report: &Report) -> Vec<Finding> {
    report
        .findings
        .iter()
        .filter(|f| {
            (f.level == Level::Error || (f.presumed && f.level == Level::Warning))
                && find_rule(&f.rule_id).is_some_and(|r| r.info().category == Category::HangOrCrash)
        })
        .cloned()
        .collect()
}

/// The ids of the findings whose rules depend on the start method.
fn start_method_ids(hazards: &[Finding]) -> Vec<String> {
    let mut ids: Vec<String> = hazards
        .iter()
        .filter(|f| find_rule(&f.rule_id).is_some_and(|r| r.info().depends_on_start_method))
        .map(|f| f.rule_id.clone())
        .collect();
    ids.dedup();
    ids
}

/// The variables that make the plan safe, found by applying the hazards'
/// own fixes and judging again (a fix may reveal no new hazard, but it is
/// checked, never assumed).
fn env_fix(
    facts: &Facts,
    plan: &Plan,
    config: &Config,
    hazards: &[Finding],
) -> Option<Vec<EnvSetting>> {
    if hazards.is_empty() {
        return Some(Vec::new());
    }
    if facts.process.is_some() {
        // A running process's runtimes read their variables long ago.
        return None;
    }
    let mut fix: Vec<EnvSetting> = Vec::new();
    let mut pending: Vec<Finding> = hazards.to_vec();
    for _ in 0..3 {
        for f in &pending {
            if f.env_fix.is_empty() {
                return None;
            }
            for e in &f.env_fix {
                if !fix.iter().any(|x| x.name == e.name) {
                    fix.push(e.clone());
                }
            }
        }
        let mut env: BTreeMap<String, String> = plan.env.clone();
        for e in &fix {
            env.insert(e.name.clone(), e.value.clone());
        }
        let fixed = Plan {
            env,
            ..plan.clone()
        };
        pending = hazards_of(&evaluate(facts, &fixed, config));
        if pending.is_empty() {
            fix.sort_by(|a, b| a.name.cmp(&b.name));
            return Some(fix);
        }
    }
    None
}
