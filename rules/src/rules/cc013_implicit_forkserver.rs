//! CC013: Python ≥ 3.14 on Linux with no explicit start method.

use caiclust_probe::{Evidence, EvidenceSource, OsFamily};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::finding;

const EXPLANATION: &str = r#"## What it detects
Python 3.14 or newer on Linux, and no start method set in the plan or the
configuration.

## Why it is bad
Python 3.14 changed the Linux default from fork to forkserver: scripts
without an `if __name__ == "__main__":` guard now re-run their top level in
workers, task functions must be importable, and workers inherit the
forkserver's environment from when it started, not later `os.environ`
changes.

## Example
A CaImAn script written for fork, run with Python 3.14.

## Fix
Set the start method explicitly (`multiprocessing.get_context(...)`, or
`start_method` in `[tool.caiclust]`), and guard scripts.

## References
gh-84559; HAZARDS H13, H07."#;

/// Implicit forkserver on Python 3.14+.
pub struct ImplicitForkserver;

static INFO: RuleInfo = RuleInfo {
    id: "CC013",
    name: "implicit-forkserver",
    category: Category::Note,
    summary: "Python 3.14+ on Linux silently uses forkserver when no start method is set",
    explanation: EXPLANATION,
    hazards: &["H13"],
    depends_on_start_method: true,
};

impl Rule for ImplicitForkserver {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let Some(py) = &cx.facts.python else {
            return Vec::new();
        };
        let [major, minor, _] = py.version_info;
        if cx.facts.target_os != OsFamily::Linux
            || (major, minor) < (3, 14)
            || cx.plan.start_method.is_some()
        {
            return Vec::new();
        }
        let default = py.default_start_method.as_deref().unwrap_or("forkserver");
        vec![finding(
            &INFO,
            format!(
                "Python {} on Linux with no start method set: multiprocessing uses {default}, not fork",
                py.version
            ),
            vec![
                Evidence::new(EvidenceSource::Runtime, format!("Python {} at {}", py.version, py.executable.display())),
                Evidence::new(EvidenceSource::Runtime, format!("default start method {default}")),
            ],
            "set the start method explicitly and guard scripts with if __name__ == \"__main__\":",
            py.executable.display().to_string(),
        )]
    }
}
