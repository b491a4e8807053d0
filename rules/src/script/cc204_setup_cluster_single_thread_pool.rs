//! CC204: CaImAn's `setup_cluster(single_thread=True)` without
//! `backend='single'`.

use rustpython_parser::ast::Ranged;

use super::model;
use super::{Script, ScriptRule, Setting};
use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::registry::Rule;

const EXPLANATION: &str = r#"## What it detects
`caiman.cluster.setup_cluster(..., single_thread=True)` (through any alias,
e.g. `cm.cluster.setup_cluster`) without `backend='single'`.

This rule reads Python source: `caiclust-check script.py` (or a notebook).

## Why it is bad
CaImAn decides on the backend before it looks at `single_thread`: with the
default `backend='multiprocessing'` it still creates a process pool (and
everything that comes with one: workers, a start method, the
`__main__` guard), while the author believes the run is single-threaded.

## Example
```python
import caiman as cm
c, dview, n = cm.cluster.setup_cluster(single_thread=True)   # CC204
```

## Fix
Ask for the single backend: `setup_cluster(backend='single')`.

## References
CaImAn `caiman/cluster.py` (`setup_cluster`, branch order); HAZARDS H18."#;

/// `single_thread=True` that still creates a pool.
pub struct SetupClusterSingleThreadPool;

static INFO: RuleInfo = RuleInfo {
    id: "CC204",
    name: "setup-cluster-single-thread-pool",
    category: Category::Ineffective,
    summary:
        "CaImAn's setup_cluster(single_thread=True) still creates a pool unless backend='single'",
    explanation: EXPLANATION,
    hazards: &["H18"],
    depends_on_start_method: false,
};

impl Rule for SetupClusterSingleThreadPool {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    /// Reads scripts, not facts: see [`crate::lint_script`].
    fn check(&self, _cx: &Context<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

impl ScriptRule for SetupClusterSingleThreadPool {
    fn lint(&self, script: &Script<'_>, _setting: &Setting<'_>) -> Vec<Finding> {
        // setup_cluster(backend='multiprocessing', n_processes=None, single_thread=False, ...)
        script
            .model
            .calls
            .iter()
            .filter(|c| c.callee == "caiman.cluster.setup_cluster")
            .filter(|c| {
                model::arg(c.node, 2, "single_thread").and_then(model::truthy) == Some(true)
            })
            .filter(|c| {
                model::arg(c.node, 0, "backend").and_then(model::str_const) != Some("single")
            })
            .map(|c| {
                let backend = model::arg(c.node, 0, "backend")
                    .and_then(model::str_const)
                    .unwrap_or("multiprocessing");
                script.finding(
                    &INFO,
                    Level::Warning,
                    c.node.range().start().to_usize(),
                    format!(
                        "`setup_cluster(single_thread=True)` with backend '{backend}': CaImAn \
                         still creates a process pool"
                    ),
                    "pass backend='single' instead of single_thread=True",
                )
            })
            .collect()
    }
}
