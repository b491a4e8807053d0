//! Evaluating every rule over the facts.

use caiclust_probe::Facts;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::context::{Context, Plan};
use crate::finding::{Finding, Level};
use crate::registry::all_rules;

/// The findings of one evaluation, most severe first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Findings at or above this level fail the check (exit code 1).
    pub deny_level: Level,
}

impl Report {
    /// Does any finding reach the deny level?
    pub fn denied(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.level >= self.deny_level && f.level != Level::Allow)
    }
}

/// Run every rule. Levels come from the configuration (by rule id or
/// name), else the rule's category; rules set to `allow` report nothing.
pub fn evaluate(facts: &Facts, plan: &Plan, config: &Config) -> Report {
    let plan = config.apply_to_plan(plan);
    let overlaid;
    let facts = if plan.env.is_empty() {
        facts
    } else {
        overlaid = with_env(facts, &plan.env);
        &overlaid
    };
    let advisories = config.advisory_db();
    let cx = Context {
        facts,
        plan: &plan,
        advisories: &advisories,
    };
    let mut findings = Vec::new();
    for rule in all_rules() {
        let info = rule.info();
        // A configured level applies to every finding of the rule; else
        // each keeps its own (the category's, or lower where the rule's
        // evidence is weaker: CC001 for a runtime only loaded).
        let configured = config.level_for(info.id, info.name);
        if configured == Some(Level::Allow) {
            continue;
        }
        for mut f in rule.check(&cx) {
            if let Some(level) = configured {
                f.level = level;
                // A level the user sets is the one the policy uses.
                f.presumed = false;
            }
            findings.push(f);
        }
    }
    findings.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| a.rule_id.cmp(&b.rule_id))
    });
    Report {
        findings,
        deny_level: config.deny_level(),
    }
}

/// The facts with `env` set where the runtimes read their variables (see
/// [`crate::runtime_env`]): what the workers of a plan will see. A
/// running process is judged as it runs: its runtimes read their
/// variables when they loaded, so `env` changes nothing there.
pub(crate) fn with_env(facts: &Facts, env: &std::collections::BTreeMap<String, String>) -> Facts {
    let mut f = facts.clone();
    if f.process.is_none() {
        for (k, v) in env {
            f.env.insert(k.clone(), v.clone());
        }
    }
    f
}
