//! CC202: a thread variable set in `os.environ` after the libraries that
//! read it were imported.

use rustpython_parser::ast::Ranged;

use super::cc209_explicit_threads_before_fork::counts_before_fork;
use super::model::Call;
use super::{Script, ScriptRule, Setting};
use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::registry::Rule;

const EXPLANATION: &str = r#"## What it detects
A thread-count or threading-layer variable (`OMP_NUM_THREADS`,
`OPENBLAS_NUM_THREADS`, `MKL_NUM_THREADS`, `BLIS_NUM_THREADS`,
`VECLIB_MAXIMUM_THREADS`, `NUMEXPR_NUM_THREADS`, `NUMBA_NUM_THREADS`,
`OPENCV_FOR_THREADS_NUM`, `MKL_THREADING_LAYER`, `OMP_*`, `KMP_*`, ...)
set with `os.environ[...] = ...`, `os.environ.update(...)`,
`os.environ.setdefault(...)` or `os.putenv(...)`, below a module-level
import of numpy, scipy, OpenCV (`cv2`), scikit-learn, CaImAn, numba or
another package that loads them (pandas, scikit-image, torch, ...). In a
notebook, the import may be in an earlier cell.

This rule reads Python source: `caiclust-check script.py` (or a notebook).

## Why it is bad
BLAS, OpenMP and OpenCV read these variables once, when the library is
loaded: by the import above. Setting them afterwards changes nothing in
this process, nor in workers forked from it: the thread pools keep their
default size (all CPUs), and the protection the line promises is absent.
Spawn workers do see the new value (they start fresh); forkserver workers
see the environment the server started with.

## Example
```python
import numpy as np
import os
os.environ["OMP_NUM_THREADS"] = "1"   # CC202: numpy's BLAS is loaded already
```

## Fix
Set the variables before the interpreter starts (the shell, the job
script, the conda environment's activation), or at least above the first
import of numpy and friends.

Where the script also sets a thread count in code before workers are
forked (`threadpool_limits(4)`, `nthread=4`, ...; CC209), the fix says
that the variable, even set in time, would not stop that hang: it does
not override a count set in code.

## References
HAZARDS H09; threadpoolctl documentation; conda-forge caiman feedstock
`activate.sh`."#;

/// A thread variable set after the libraries that read it were loaded.
pub struct ThreadVariableAfterImport;

static INFO: RuleInfo = RuleInfo {
    id: "CC202",
    name: "thread-variable-after-import",
    category: Category::Ineffective,
    summary: "a script sets a thread variable in os.environ after importing numpy and friends, where it does nothing",
    explanation: EXPLANATION,
    hazards: &["H09"],
    depends_on_start_method: false,
};

impl Rule for ThreadVariableAfterImport {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    /// Reads scripts, not facts: see [`crate::lint_script`].
    fn check(&self, _cx: &Context<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// Packages whose import loads a native thread pool (directly or through
/// numpy).
const LOADERS: &[&str] = &[
    "numpy",
    "scipy",
    "cv2",
    "sklearn",
    "caiman",
    "numba",
    "pandas",
    "skimage",
    "numexpr",
    "torch",
    "tensorflow",
];

/// Variables read once when a runtime loads.
const THREAD_VARIABLES: &[&str] = &[
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_THREADING_LAYER",
    "MKL_DYNAMIC",
    "MKL_DOMAIN_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "OPENCV_FOR_THREADS_NUM",
];

/// Prefixes of runtime families read at load (`OMP_PROC_BIND`, `KMP_AFFINITY`).
const THREAD_PREFIXES: &[&str] = &["OMP_", "KMP_"];

pub(crate) fn is_thread_variable(name: &str) -> bool {
    THREAD_VARIABLES.contains(&name) || THREAD_PREFIXES.iter().any(|p| name.starts_with(p))
}

impl ScriptRule for ThreadVariableAfterImport {
    fn lint(&self, script: &Script<'_>, setting: &Setting<'_>) -> Vec<Finding> {
        let Some(first) = script.model.imports.iter().find(|i| {
            !i.in_function && LOADERS.contains(&i.module.split('.').next().unwrap_or_default())
        }) else {
            return Vec::new();
        };
        let import_line = script.source.line_label(first.offset);
        // Counts set in code before a fork, which the variable would not
        // undo even if set in time.
        let defeated = counts_before_fork(script, setting);
        script
            .model
            .env_writes
            .iter()
            .filter(|w| w.offset > first.offset && is_thread_variable(&w.name))
            .map(|w| {
                let mut fix = format!(
                    "set {} before the interpreter starts (shell, job script, environment \
                     activation), or above the first import of {}",
                    w.name, first.module
                );
                if let Some(h) = defeated
                    .iter()
                    .find(|h| h.count.overrides.contains(&w.name.as_str()))
                {
                    let at =
                        |c: &Call<'_>| script.source.line_label(c.node.range().start().to_usize());
                    fix.push_str(&format!(
                        "; but even then it would not stop the hang that `{}` at {} sets up \
                         before the workers are forked at {}: {} does not override a thread \
                         count set in code (start the workers with spawn or forkserver, see \
                         CC209)",
                        h.count.what,
                        at(h.count.call),
                        at(h.fork),
                        w.name
                    ));
                }
                script.finding(
                    &INFO,
                    Level::Warning,
                    w.offset,
                    format!(
                        "{} is set after `import {}` at {import_line}: the runtimes read it \
                         when they were loaded, so the setting does nothing for this process or \
                         fork children",
                        w.name, first.module
                    ),
                    &fix,
                )
            })
            .collect()
    }
}
