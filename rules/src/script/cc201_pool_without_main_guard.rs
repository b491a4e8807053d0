//! CC201: a pool created when the script is imported, outside the
//! `if __name__ == "__main__":` guard.

use rustpython_parser::ast::Ranged;

use super::model::{self, Call};
use super::{pools, reimport_level, Script, ScriptRule, Setting};
use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;

const EXPLANATION: &str = r#"## What it detects
A process pool or worker process created at module level: outside every
function and outside `if __name__ == "__main__":` (module-level `with`,
`for`, `if` and `try` blocks count as module level). Recognised, through
any import alias (`import multiprocessing as mp`, `from multiprocessing
import Pool`, `import caiman as cm`):

* `multiprocessing.Pool(...)`, `multiprocessing.get_context(...).Pool(...)`,
  `multiprocessing.Manager()`;
* `multiprocessing.Process(...).start()` (also through a variable);
* `concurrent.futures.ProcessPoolExecutor(...)`;
* `caiman.cluster.setup_cluster(...)` with the multiprocessing backend
  (the default, `'multiprocessing'` or `'local'`, or a backend computed at
  run time);
* a call, at module level, of one of the script's own functions that
  does any of these.

Not reported: ipyparallel. `ipyparallel.Cluster(...)` starts nothing when
it is created, and its engines are separate programs (`python -m
ipyparallel.engine`, started with `subprocess.Popen` by its launchers) that
never import the script; CaImAn's `backend='ipyparallel'` starts them with
`ipcluster start` the same way. Notebooks are not reported either: a
kernel's `__main__` is not a file a worker could re-import (CC205 covers
what goes wrong there instead).

This rule reads Python source: `caiclust-check script.py`.

## Why it is bad
With the spawn and forkserver start methods every worker starts a fresh
interpreter that imports the script as `__mp_main__`. Unguarded top-level
code runs again in each worker: it creates another pool, and Python stops
it with `RuntimeError: An attempt has been made to start a new process
before the current process has finished its bootstrapping phase`, or the
script respawns workers in a loop. Spawn is the default on Windows and on
macOS since Python 3.8, forkserver on Linux since Python 3.14, so a script
that works on Linux today breaks there. The finding is an error where the
start method is (or the script makes it) spawn or forkserver, and a warning
where it is fork.

## Example
```python
import multiprocessing as mp

def square(x):
    return x * x

with mp.Pool(4) as pool:          # CC201
    print(pool.map(square, range(10)))
```

## Fix
Put the code that starts work under the guard:

```python
if __name__ == "__main__":
    with mp.Pool(4) as pool:
        print(pool.map(square, range(10)))
```

## References
CPython `multiprocessing` docs, "Safe importing of main module"; CaImAn
#257, PR #1565; gh-84559; ipyparallel `ipyparallel/cluster/launcher.py`
(`LocalProcessLauncher.start`); HAZARDS H07, H13."#;

/// A pool created at import time, outside the `__main__` guard.
pub struct PoolWithoutMainGuard;

static INFO: RuleInfo = RuleInfo {
    id: "CC201",
    name: "pool-without-main-guard",
    category: Category::HangOrCrash,
    summary:
        "a script creates worker processes at module level, outside `if __name__ == \"__main__\":`",
    explanation: EXPLANATION,
    hazards: &["H07"],
    depends_on_start_method: true,
};

impl Rule for PoolWithoutMainGuard {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    /// Reads scripts, not facts: see [`crate::lint_script`].
    fn check(&self, _cx: &Context<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// What a call starts, if it starts worker processes, and the start method
/// it asks for (`get_context(M)`, `mp_context=get_context(M)`).
fn starts_workers<'a>(call: &'a Call<'_>) -> Option<(&'static str, Option<&'a str>)> {
    let (callee, mut method) = model::strip_context(&call.callee);
    let what = match callee.as_str() {
        "multiprocessing.Pool" | "multiprocessing.pool.Pool" => "multiprocessing.Pool",
        "multiprocessing.Manager" => "multiprocessing.Manager",
        "multiprocessing.Process().start" | "multiprocessing.process.Process().start" => {
            "multiprocessing.Process(...).start"
        }
        "concurrent.futures.ProcessPoolExecutor"
        | "concurrent.futures.process.ProcessPoolExecutor" => {
            if let Some(ctx) = model::arg(call.node, 1, "mp_context") {
                // `mp_context=mp.get_context("spawn")` was seen as a call too.
                method = method.or_else(|| context_method(ctx));
            }
            "concurrent.futures.ProcessPoolExecutor"
        }
        // ipyparallel engines and CaImAn's ipyparallel backend are separate
        // programs that never import the script.
        "caiman.cluster.setup_cluster"
            if !matches!(
                pools::caiman_backend(call),
                Some("ipyparallel" | "single" | "SLURM")
            ) =>
        {
            "caiman.cluster.setup_cluster"
        }
        _ => return None,
    };
    Some((what, method))
}

/// The method literal of a `multiprocessing.get_context("M")` expression.
fn context_method(e: &rustpython_parser::ast::Expr) -> Option<&str> {
    let rustpython_parser::ast::Expr::Call(c) = e else {
        return None;
    };
    let name = match c.func.as_ref() {
        rustpython_parser::ast::Expr::Attribute(a) => a.attr.as_str(),
        rustpython_parser::ast::Expr::Name(n) => n.id.as_str(),
        _ => return None,
    };
    (name == "get_context")
        .then(|| model::arg(c, 0, "method").and_then(model::str_const))
        .flatten()
}

/// A call, run when the script is imported, that starts worker processes.
pub(super) struct UnguardedStart<'c, 'a> {
    pub call: &'c Call<'a>,
    pub how: Starts<'c>,
}

/// How an [`UnguardedStart`] starts workers.
pub(super) enum Starts<'c> {
    /// Itself: what it starts and the start method it asks for.
    Directly {
        what: &'static str,
        method: Option<&'c str>,
    },
    /// Through one of the script's own functions (its name).
    Through(&'c str),
}

/// The calls that start worker processes when the script is imported
/// (module level, outside the `__main__` guard), directly or through the
/// script's own functions, in source order. None for a notebook: a
/// kernel's `__main__` is not a file a worker could re-import.
pub(super) fn unguarded_starts<'c, 'a>(script: &'c Script<'a>) -> Vec<UnguardedStart<'c, 'a>> {
    if script.is_notebook() {
        return Vec::new();
    }
    // The script's own functions that start workers.
    let starters = script
        .model
        .functions_calling(|c| starts_workers(c).is_some());
    script
        .model
        .calls
        .iter()
        .filter(|c| c.import_time)
        .filter_map(|call| {
            let how = match starts_workers(call) {
                Some((what, method)) => Starts::Directly { what, method },
                None => {
                    let f = call.callee.strip_prefix("__main__.")?;
                    Starts::Through(starters.get(f)?)
                }
            };
            Some(UnguardedStart { call, how })
        })
        .collect()
}

impl ScriptRule for PoolWithoutMainGuard {
    fn lint(&self, script: &Script<'_>, setting: &Setting<'_>) -> Vec<Finding> {
        const FIX: &str = "move the code that starts workers into a function or under `if __name__ == \"__main__\":`";
        let global = script.start_method_set();
        unguarded_starts(script)
            .into_iter()
            .map(|start| {
                let offset = start.call.node.range().start().to_usize();
                let (level, message) = match start.how {
                    Starts::Directly { what, method } => {
                        let (level, why) = reimport_level(method.or(global), setting);
                        (
                            level,
                            format!(
                                "`{what}` runs at module level, outside `if __name__ == \"__main__\":`: \
                                 {why}, so every worker re-imports the script and runs it again \
                                 (RuntimeError \"bootstrapping phase\", or workers respawning)"
                            ),
                        )
                    }
                    Starts::Through(f) => {
                        let (level, why) = reimport_level(global, setting);
                        (
                            level,
                            format!(
                                "`{f}()` starts worker processes and is called at module level, outside \
                                 `if __name__ == \"__main__\":`: {why}, so every worker re-imports the \
                                 script and calls it again"
                            ),
                        )
                    }
                };
                script.finding(&INFO, level, offset, message, FIX)
            })
            .collect()
    }
}
