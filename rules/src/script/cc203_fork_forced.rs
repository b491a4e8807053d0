//! CC203: a script forces the fork start method.

use caiclust_probe::OsFamily;
use rustpython_parser::ast::Ranged;

use super::model;
use super::{Script, ScriptRule, Setting};
use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::registry::Rule;

const EXPLANATION: &str = r#"## What it detects
`multiprocessing.set_start_method("fork")` or
`multiprocessing.get_context("fork")` (also as
`ProcessPoolExecutor(mp_context=mp.get_context("fork"))`), through any
import alias.

The level is its category's, error, unless facts say the script runs on
Linux, where fork works and the finding is a warning about portability
(with facts for macOS or Windows, or none, it stays an error: the script
is not safe everywhere it may run).

This rule reads Python source: `caiclust-check script.py` (or a notebook).

## Why it is bad
On macOS, fork without exec is unsafe: Apple's Accelerate (vecLib) BLAS and
libdispatch do not survive it, so workers crash or the pool hangs, and the
Objective-C runtime aborts children that initialise it after a fork from a
threaded parent (`objc[...]: ... fork() was called ... Crashing instead`).
That is why Python 3.8 made spawn the default there. Forcing fork brings
the hazards back; on Windows fork does not exist at all (`ValueError`).

## Example
```python
import multiprocessing as mp
mp.set_start_method("fork")           # CC203
```

## Fix
Use spawn (or forkserver on Linux): `mp.get_context("spawn")`, and guard the
script with `if __name__ == "__main__":`. Leave the platform default alone
unless you know the libraries involved are fork-safe.

## References
bpo-33725; CaImAn #206, #130; numpy #5752; HAZARDS H02, H03."#;

/// Fork forced by the script.
pub struct ForkForced;

static INFO: RuleInfo = RuleInfo {
    id: "CC203",
    name: "fork-forced-on-macos",
    category: Category::HangOrCrash,
    summary: "a script forces the fork start method, which crashes or hangs on macOS",
    explanation: EXPLANATION,
    hazards: &["H02", "H03"],
    depends_on_start_method: false,
};

impl Rule for ForkForced {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    /// Reads scripts, not facts: see [`crate::lint_script`].
    fn check(&self, _cx: &Context<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

impl ScriptRule for ForkForced {
    fn lint(&self, script: &Script<'_>, setting: &Setting<'_>) -> Vec<Finding> {
        let (level, here) = match setting.target_os() {
            Some(OsFamily::Linux) => (
                Level::Warning,
                "which works on Linux (the facts' OS) but not on macOS or Windows",
            ),
            Some(OsFamily::Macos) => (Level::Error, "and the facts say this is macOS"),
            Some(OsFamily::Windows) => (
                Level::Error,
                "and the facts say this is Windows, which has no fork (ValueError)",
            ),
            _ => (Level::Error, "which is unsafe on macOS"),
        };
        script
            .model
            .calls
            .iter()
            .filter(|c| {
                matches!(
                    c.callee.as_str(),
                    "multiprocessing.set_start_method" | "multiprocessing.get_context"
                ) && model::arg(c.node, 0, "method").and_then(model::str_const) == Some("fork")
            })
            .map(|c| {
                let call = c.callee.rsplit('.').next().unwrap_or_default();
                script.finding(
                    &INFO,
                    level,
                    c.node.range().start().to_usize(),
                    format!(
                        "`{call}(\"fork\")` forces fork, {here}: Accelerate/vecLib and \
                         libdispatch do not survive fork, and the Objective-C runtime aborts \
                         forked children; on Windows fork does not exist"
                    ),
                    "use spawn (`multiprocessing.get_context(\"spawn\")`) and guard the script with `if __name__ == \"__main__\":`",
                )
            })
            .collect()
    }
}
