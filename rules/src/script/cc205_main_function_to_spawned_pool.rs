//! CC205: a function that spawn or forkserver workers cannot import,
//! handed to a process pool.

use caiclust_probe::OsFamily;
use rustpython_parser::ast::Ranged;

use super::pools::{self, PoolKind};
use super::{start_method_evidence, Script, ScriptRule, Setting};
use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::registry::Rule;

const EXPLANATION: &str = r#"## What it detects
A function handed to worker processes that a spawn or forkserver worker
cannot import:

* in a Jupyter notebook (`caiclust-check analysis.ipynb`), any function the
  notebook defines: the kernel's `__main__` is not a file;
* in a script, a function defined inside `if __name__ == "__main__":`,
  which workers do not run when they re-import the script.

Handed over means: the function argument of `Pool.map`, `map_async`,
`imap`, `imap_unordered`, `starmap`, `starmap_async`, `apply` and
`apply_async` (on `multiprocessing.Pool`, a pool from
`multiprocessing.get_context(...)`, or CaImAn's `dview` from
`setup_cluster` with the multiprocessing backend);
`ProcessPoolExecutor.submit` and `.map`; `Pool(initializer=...)`,
`ProcessPoolExecutor(initializer=...)` and `Process(target=...)`; also
through `functools.partial(f, ...)`. A function imported from a module
(`from tasks import work`) is fine, and so is any function when the
workers are forked.

The level follows the start method: an error (its category's level) when
the script asks for spawn or forkserver (`set_start_method`,
`get_context`, `mp_context=`), when the facts or `--start-method` say so,
when CaImAn's `setup_cluster` forces forkserver (in a kernel on macOS), and
when nothing says which it will be (the portable worst case, as for CC201:
spawn on Windows and macOS, forkserver on Linux from Python 3.14); nothing
when it is fork (Linux before Python 3.14, or asked for).

Not seen: functions reached through other names (attributes of objects,
entries of containers), and notebooks run with a fork start method on one
machine but spawn on another.

## Why it is bad
Pools send a task to a worker by pickling the function by reference, as
its module and name. A spawn or forkserver worker is a fresh interpreter:
it imports the main script again as `__mp_main__` (without running its
guarded block), and a notebook's functions live only in the kernel. The
worker cannot find the function and fails with `AttributeError: Can't get
attribute 'work' on <module '__main__'>`; a `Pool` then waits forever for
results that never come (its workers are replaced and fail again), a
`ProcessPoolExecutor` raises `BrokenProcessPool`. With fork the worker is a
copy of the parent and has the function already, which is why the same
notebook works on Linux before Python 3.14 and fails on macOS, on Windows
and on Python 3.14.

## Example
A notebook cell:

```python
import multiprocessing as mp

def work(x):                 # defined in the notebook
    return x * x

with mp.get_context("spawn").Pool(4) as pool:
    pool.map(work, range(10))   # CC205
```

## Fix
Move the function into a module beside the notebook (`tasks.py`) and
import it (`from tasks import work`); in a script, define it at module
level, outside the `__main__` guard.

## References
CPython `multiprocessing` docs: "the `__main__` module must be importable
by the children", so the `Pool` examples "will not work in the interactive
interpreter"; jupyter/notebook #5261 (a Pool stuck forever on `Can't get
attribute 'f' on <module '__main__'>`) and #6258 (`Process(target=...)`);
microsoft/vscode-jupyter #12485; HAZARDS H15."#;

/// A function spawn or forkserver workers cannot import.
pub struct MainFunctionToSpawnedPool;

static INFO: RuleInfo = RuleInfo {
    id: "CC205",
    name: "task-function-not-importable",
    category: Category::HangOrCrash,
    summary: "a function defined in a notebook (or under the __main__ guard) is sent to spawn or forkserver workers, which cannot import it",
    explanation: EXPLANATION,
    hazards: &["H15"],
    depends_on_start_method: true,
};

impl Rule for MainFunctionToSpawnedPool {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    /// Reads scripts, not facts: see [`crate::lint_script`].
    fn check(&self, _cx: &Context<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

impl ScriptRule for MainFunctionToSpawnedPool {
    fn lint(&self, script: &Script<'_>, setting: &Setting<'_>) -> Vec<Finding> {
        let notebook = script.is_notebook();
        let global = script.start_method_set();
        let mut out = Vec::new();
        for call in &script.model.calls {
            let call_offset = call.node.range().start().to_usize();
            for task in pools::task_calls(call) {
                let Some(name) = task
                    .task
                    .value
                    .as_deref()
                    .and_then(|v| v.strip_prefix("__main__."))
                else {
                    continue;
                };
                // The definition in force at the call (a later cell may
                // redefine it).
                let defs = || script.model.functions.iter().filter(|d| d.name == name);
                let Some(def) = defs()
                    .rfind(|d| d.offset < call_offset)
                    .or_else(|| defs().next_back())
                else {
                    continue;
                };
                if !(notebook || def.guarded) {
                    continue;
                }
                let mut extra = Vec::new();
                let explicit = task.method.as_deref().filter(|m| !m.is_empty()).or(global);
                let (level, why) = match explicit {
                    Some("fork") => continue,
                    Some(m) => (Level::Error, format!("the script asks for {m}")),
                    None if task.kind == PoolKind::CaimanPool
                        && notebook
                        && setting.target_os() == Some(OsFamily::Macos) =>
                    {
                        (
                            Level::Error,
                            "CaImAn's setup_cluster forces forkserver in a kernel on macOS".into(),
                        )
                    }
                    None => match setting.start_method() {
                        Some(("fork", _)) => continue,
                        Some((m, origin)) => {
                            extra.push(start_method_evidence(m, origin));
                            (
                                Level::Error,
                                format!("the start method here is {m} ({origin})"),
                            )
                        }
                        None => (
                            Level::Error,
                            "the start method is spawn on Windows and macOS and forkserver on \
                             Linux from Python 3.14 (fine only where it is fork)"
                                .into(),
                        ),
                    },
                };
                let (where_, module, fix) = if notebook {
                    (
                        "in this notebook",
                        "__main__",
                        format!(
                            "move `{name}` into a module beside the notebook (e.g. tasks.py) and import it from there"
                        ),
                    )
                } else {
                    (
                        "under `if __name__ == \"__main__\":`",
                        "__mp_main__",
                        format!(
                            "define `{name}` at module level, outside `if __name__ == \"__main__\":`"
                        ),
                    )
                };
                let offset = task.task.expr.range().start().to_usize();
                let mut f = script.finding(
                    &INFO,
                    level,
                    offset,
                    format!(
                        "`{name}` is defined {where_} and sent to `{}`: {why}, so the workers \
                         cannot import it and fail with `AttributeError: Can't get attribute \
                         '{name}' on <module '{module}'>` (a Pool then waits forever, a \
                         ProcessPoolExecutor is broken)",
                        task.what
                    ),
                    &fix,
                );
                f.evidence.push(script.evidence(def.offset));
                f.evidence.extend(extra);
                out.push(f);
            }
        }
        out
    }
}
