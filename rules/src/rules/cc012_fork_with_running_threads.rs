//! CC012: fork from a process that already runs other threads.

use caiclust_probe::{Evidence, EvidenceSource};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{finding, start_method_evidence};

const EXPLANATION: &str = r#"## What it detects
A probed running process (`--pid`, `--import`) that already runs more than
one thread (native threads from `/proc/PID/status`, or Python threads from
`threading.active_count()`), whose workers would be started with `fork`.

## Why it is bad
Only the forking thread survives fork. Locks held by the other threads
(allocator, logging, a runtime's queue) stay locked forever in the child:
sporadic deadlocks. Python 3.12+ warns (`DeprecationWarning`). Pool's
replacement workers (`maxtasksperchild`) are forked from a parent that by
then always has threads. A pthreads BLAS pool that is idle was measured to
survive, so this is a note, not an error.

## Example
`--import numpy,sklearn` shows 4 threads (OpenBLAS's pool) before the
`Pool` is created.

## Fix
Use the spawn or forkserver start method.

## References
gh-100228; HAZARDS H12."#;

/// fork with threads running.
pub struct ForkWithRunningThreads;

static INFO: RuleInfo = RuleInfo {
    id: "CC012",
    name: "fork-with-running-threads",
    category: Category::Note,
    summary: "the process already runs other threads and its workers would be forked",
    explanation: EXPLANATION,
    hazards: &["H12"],
    depends_on_start_method: true,
};

impl Rule for ForkWithRunningThreads {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let Some(p) = &cx.facts.process else {
            return Vec::new();
        };
        if !cx.forks() {
            return Vec::new();
        }
        let native = p.threads.unwrap_or(1);
        let python = p
            .python_runtime
            .as_ref()
            .and_then(|r| r.active_threads)
            .unwrap_or(1);
        if native <= 1 && python <= 1 {
            return Vec::new();
        }
        let mut ev = Vec::new();
        if let Some(n) = p.threads {
            ev.push(Evidence::new(
                EvidenceSource::System,
                format!("/proc/{}/status: Threads: {n}", p.pid),
            ));
        }
        if let Some(n) = p.python_runtime.as_ref().and_then(|r| r.active_threads) {
            ev.push(Evidence::new(
                EvidenceSource::Runtime,
                format!("threading.active_count() = {n}"),
            ));
        }
        ev.push(start_method_evidence(cx));
        vec![finding(
            &INFO,
            format!(
                "process {} runs {native} native thread(s) ({python} Python thread(s)) and its workers would be forked: locks held by other threads stay locked in the workers",
                p.pid
            ),
            ev,
            "use the spawn or forkserver start method",
            format!("pid {}", p.pid),
        )]
    }
}
