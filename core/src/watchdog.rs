//! The hang watchdog's diagnosis: when a task's process tree has made no
//! progress for the stall period (next to no CPU used, or only kernel
//! time: a wait loop on `sched_yield`), read the
//! process with the probe and run the rules on what it has loaded, with
//! the start method the pool used. A hang-or-crash finding (for example
//! CC001, GNU OpenMP used after fork) is the likely cause.

use caiclust_probe::{probe_pid, LiveOptions};
use caiclust_rules::{Config, Finding};

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
        format!("{threads}, next to no CPU used")
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
    let mut causes = hang_causes(&facts, method.as_str(), workers);
    // A task that forked children of its own (a command running Python's
    // fork Pool, say): judge each forked child as forked, whatever the
    // cluster's own start method.
    let forked = forked_children(pid);
    for child in &forked {
        if let Ok(f) = probe_pid(*child, &live) {
            for c in hang_causes(&f, "fork", workers) {
                let c = format!("in forked child {child}: {c}");
                if !causes.contains(&c) {
                    causes.push(c);
                }
            }
        }
    }
    let libs: Vec<String> = facts
        .libraries
        .iter()
        .filter_map(|l| l.path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if !libs.is_empty() {
        detail.push_str(&format!("; runtimes loaded: {}", libs.join(", ")));
    }
    if !forked.is_empty() {
        detail.push_str(&format!(
            "; forked children: {}",
            forked
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if causes.is_empty() {
        (None, detail)
    } else {
        (Some(causes.join("; ")), detail)
    }
}

/// What the hazard policy names as the causes of a hang of a process
/// with these facts, started with this start method, as `ID name:
/// message`.
fn hang_causes(facts: &caiclust_probe::Facts, method: &str, workers: usize) -> Vec<String> {
    hang_findings(facts, method, Some(workers))
        .iter()
        .map(describe_hazard)
        .collect()
}

/// The findings the hazard policy names as the causes of a hang of a
/// process with these facts, started with this start method (and worker
/// count, when known), causes that depend on the start method first.
pub(crate) fn hang_findings(
    facts: &caiclust_probe::Facts,
    method: &str,
    workers: Option<usize>,
) -> Vec<Finding> {
    caiclust_rules::hang_causes(facts, method, workers.unwrap_or(1), &Config::default())
}

/// Descendants of `pid` that were forked without exec: the same program as
/// their parent.
pub(crate) fn forked_children(pid: u32) -> Vec<u32> {
    let exe = |p: u32| std::fs::read_link(format!("/proc/{p}/exe")).ok();
    crate::tree::descendants_with_parents(pid)
        .into_iter()
        .filter(|&(child, parent)| exe(child).is_some_and(|e| exe(parent) == Some(e)))
        .map(|(child, _)| child)
        .collect()
}

/// A hazard as one line: `ID name: message`.
pub(crate) fn describe_hazard(f: &Finding) -> String {
    format!("{} {}: {}", f.rule_id, f.rule_name, f.message)
}
