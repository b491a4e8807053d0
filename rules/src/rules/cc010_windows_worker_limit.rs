//! CC010: 61 or more workers on Windows.

use caiclust_probe::{Evidence, EvidenceSource, OsFamily};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{finding, planned_workers, WINDOWS_MAX_WORKERS};

const EXPLANATION: &str = r#"## What it detects
On Windows, a pool of more than 60 workers (planned, or the default of
usable CPUs − 1 on a large machine).

## Why it is bad
multiprocessing waits on its workers with `WaitForMultipleObjects`, limited
to 63 handles: `ValueError: need at most 63 handles`, and the pool hangs.

## Example
`Pool()` on a 64-core Windows workstation.

## Fix
Cap workers at 60.

## References
cpython #94243; HAZARDS H10."#;

/// 61 or more workers on Windows.
pub struct WindowsWorkerLimit;

static INFO: RuleInfo = RuleInfo {
    id: "CC010",
    name: "windows-worker-limit",
    category: Category::HangOrCrash,
    summary: "more than 60 workers on Windows: the pool fails or hangs",
    explanation: EXPLANATION,
    hazards: &["H10"],
    depends_on_start_method: false,
};

impl Rule for WindowsWorkerLimit {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let (workers, why) = planned_workers(cx);
        if cx.facts.target_os != OsFamily::Windows || workers <= WINDOWS_MAX_WORKERS {
            return Vec::new();
        }
        vec![finding(
            &INFO,
            format!("{workers} workers on Windows: multiprocessing handles at most {WINDOWS_MAX_WORKERS}"),
            vec![
                Evidence::new(EvidenceSource::Environment, why),
                Evidence::new(EvidenceSource::Static, "target OS windows".to_string()),
            ],
            format!("use at most {WINDOWS_MAX_WORKERS} workers"),
            "workers",
        )]
    }
}
