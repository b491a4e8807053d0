//! CC004: fork on macOS.

use caiclust_probe::OsFamily;

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{env_evidence, finding, start_method_evidence};

const EXPLANATION: &str = r#"## What it detects
Workers started with `fork` on macOS.

## Why it is bad
macOS system frameworks (Objective-C runtime, libdispatch, CoreFoundation)
are not fork-safe: a child that initialises the Objective-C runtime after
fork while other threads existed aborts with
`objc[...]: ... fork() was called ... Crashing instead`. That is why Python
3.8 made spawn the macOS default.

## Example
`multiprocessing.set_start_method("fork")` in a program that uses
matplotlib or any framework-backed library.

## Fix
Use `spawn`. `OBJC_DISABLE_INITIALIZE_FORK_SAFETY=YES` only hides the check.

## References
bpo-33725; HAZARDS H03."#;

/// fork on macOS.
pub struct MacosFork;

static INFO: RuleInfo = RuleInfo {
    id: "CC004",
    name: "macos-fork",
    category: Category::Note,
    summary: "workers are forked on macOS, where system frameworks are not fork-safe",
    explanation: EXPLANATION,
    hazards: &["H03"],
    depends_on_start_method: true,
};

impl Rule for MacosFork {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        if cx.facts.target_os != OsFamily::Macos || !cx.forks() {
            return Vec::new();
        }
        let ev = vec![
            start_method_evidence(cx),
            env_evidence(cx.facts, "OBJC_DISABLE_INITIALIZE_FORK_SAFETY"),
        ];
        vec![finding(
            &INFO,
            "the fork start method on macOS: a worker that touches the Objective-C runtime crashes"
                .into(),
            ev,
            "use the spawn start method",
            "start_method",
        )]
    }
}
