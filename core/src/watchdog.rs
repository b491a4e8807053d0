//! The hang watchdog's diagnosis: when a task's process tree has made no
//! progress for the stall period (no CPU used and no thread running, or
//! only kernel time: a wait loop on `sched_yield`), read the
//! process with the probe and run the rules on what it has loaded, with
//! the start method the pool used. A hang-or-crash finding (for example
//! CC001, GNU OpenMP used after fork) is the likely cause.

use caiclust_probe::{probe_pid, LiveOptions};
use caiclust_rules::{evaluate, find_rule, Category, Config, Level, Plan};

use crate::plan::StartMethod;
use crate::tree::TreeSample;

/// The likely cause (when the rules name one) and what was seen.
pub(crate) fn diagnose(
    pid: u32,
    method: StartMethod,
    workers: usize,
    sample: &TreeSample,
    spinning: bool,
) -> (Option<String>, String) {
    let threads = format!(
        "{} thread{}",
        sample.threads,
        if sample.threads == 1 { "" } else { "s" }
    );
    let mut detail = if spinning {
        format!("{threads}, spinning: nearly all CPU time spent in the kernel (a sched_yield wait loop)")
    } else {
        format!("{threads}, none running, no CPU used")
    };
    if !sample.waits.is_empty() {
        detail.push_str(&format!("; waiting in {}", sample.waits.join(", ")));
    }
    let live = LiveOptions {
        query_helper: None,
        ..LiveOptions::default()
    };
    let facts = match probe_pid(pid, &live) {
        Ok(f) => f,
        Err(e) => {
            detail.push_str(&format!("; the probe could not read it: {e}"));
            return (None, detail);
        }
    };
    let plan = Plan {
        start_method: Some(method.as_str().to_string()),
        workers: Some(workers),
    };
    let report = evaluate(&facts, &plan, &Config::default());
    let causes: Vec<String> = report
        .findings
        .iter()
        .filter(|f| {
            f.level == Level::Error
                && find_rule(&f.rule_id).is_some_and(|r| r.info().category == Category::HangOrCrash)
        })
        .map(|f| format!("{} {}: {}", f.rule_id, f.rule_name, f.message))
        .collect();
    let libs: Vec<String> = facts
        .libraries
        .iter()
        .filter_map(|l| l.path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if !libs.is_empty() {
        detail.push_str(&format!("; runtimes loaded: {}", libs.join(", ")));
    }
    if causes.is_empty() {
        (None, detail)
    } else {
        (Some(causes.join("; ")), detail)
    }
}
