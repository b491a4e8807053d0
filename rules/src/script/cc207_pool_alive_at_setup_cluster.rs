//! CC207: CaImAn's `setup_cluster` while worker processes are still
//! alive.

use rustpython_parser::ast::Ranged;

use super::model::{self, Call};
use super::{pools, Script, ScriptRule, Setting};
use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::registry::Rule;

const EXPLANATION: &str = r#"## What it detects
CaImAn's `setup_cluster` with the multiprocessing backend (the default,
`'multiprocessing'` or `'local'`), without `ignore_preexisting=True`, when
other worker processes are still alive:

* an error when the source shows them: in the same function (or at module
  level), an earlier `setup_cluster`, `multiprocessing.Pool`, `Manager`,
  `ProcessPoolExecutor`, started `Process`, or Dask `LocalCluster` /
  `Client()` that is neither a `with` block nor stopped before the call
  (`cm.stop_server(dview=...)`, `.terminate()`, `.close()`, `.join()`,
  `.shutdown()` on the name it was bound to); or a `setup_cluster` inside a
  loop whose pool is not stopped in the loop (the second pass fails);
* a warning in a notebook, for a cell that sets up a cluster without first
  stopping an earlier one: running the cell again (an everyday thing in a
  notebook) fails while the first pool lives. A cell that stops its own
  cluster again before it ends (`cm.stop_server(dview=dview)`,
  `dview.terminate()`, in a `finally:` too) leaves nothing running and is
  not reported.

What the source cannot show: processes started in other modules, in
functions called in between, or by earlier runs of the kernel that no cell
shows; a backend computed at run time.

## Why it is bad
CaImAn refuses to set up a multiprocessing cluster when
`multiprocessing.active_children()` is not empty and raises `Exception: A
cluster is already running. Terminate with dview.terminate() if you want to
restart.` Any child process counts, not only CaImAn's own pool: a Dask
`LocalCluster` or a `Manager` started earlier trips it too (CaImAn #519).

## Example
```python
import caiman as cm
c, dview, n = cm.cluster.setup_cluster(backend="multiprocessing")
# ... motion correction ...
c, dview, n = cm.cluster.setup_cluster(backend="multiprocessing")   # CC207
```

## Fix
Stop the earlier pool first: `cm.stop_server(dview=dview)` (CaImAn's demos
do this, in notebooks as `if 'dview' in locals(): cm.stop_server(dview=dview)`),
`pool.terminate()`, or create it in a `with` block; or keep the first
cluster and reuse it. Pass `ignore_preexisting=True` only when the other
processes are meant to stay.

## References
CaImAn `caiman/cluster.py` (`setup_cluster`), CaImAn #519; CaImAn demos
(`demos/general/demo_pipeline.py` stops the cluster before setting up the
next); HAZARDS H17."#;

/// `setup_cluster` while worker processes are alive.
pub struct PoolAliveAtSetupCluster;

static INFO: RuleInfo = RuleInfo {
    id: "CC207",
    name: "pool-alive-at-setup-cluster",
    category: Category::HangOrCrash,
    summary: "CaImAn's setup_cluster runs while other worker processes are alive: it raises \"A cluster is already running\"",
    explanation: EXPLANATION,
    hazards: &["H17"],
    depends_on_start_method: false,
};

impl Rule for PoolAliveAtSetupCluster {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    /// Reads scripts, not facts: see [`crate::lint_script`].
    fn check(&self, _cx: &Context<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

fn offset(call: &Call<'_>) -> usize {
    call.node.range().start().to_usize()
}

/// A `setup_cluster` that refuses to run beside live children.
fn checks_for_children(call: &Call<'_>) -> bool {
    call.callee == "caiman.cluster.setup_cluster"
        && matches!(
            pools::caiman_backend(call),
            Some("multiprocessing" | "local")
        )
        && call
            .arg(3, "ignore_preexisting")
            .and_then(|a| model::truthy(a.expr))
            != Some(true)
}

/// Does `stop` stop what is bound to one of `names`?
fn stops(stop: &Call<'_>, names: &[&str]) -> bool {
    if let (Some(receiver), Some((_, method))) = (stop.receiver, stop.callee.rsplit_once('.')) {
        if names.contains(&receiver)
            && matches!(method, "terminate" | "close" | "join" | "shutdown")
        {
            return true;
        }
    }
    matches!(
        stop.callee.as_str(),
        "caiman.cluster.stop_server" | "caiman.stop_server"
    ) && stop
        .arg(3, "dview")
        .and_then(|a| a.name)
        .is_some_and(|n| names.contains(&n))
}

/// Any stop of a CaImAn pool or a pool bound to `names`.
fn stops_any(stop: &Call<'_>, names: &[&str]) -> bool {
    stops(stop, names)
        || matches!(
            stop.callee.as_str(),
            "caiman.cluster.stop_server" | "caiman.stop_server"
        )
}

impl<'a> Script<'a> {
    /// The names bound to the result of the call at `offset` (for a
    /// started `Process`, the name it is started through).
    fn bound_names(&self, call: &Call<'a>) -> Vec<&'a str> {
        let mut names: Vec<&'a str> = self
            .model
            .bindings
            .iter()
            .filter(|b| b.call_offset == offset(call))
            .map(|b| b.name)
            .collect();
        names.extend(call.receiver);
        names
    }

    /// The notebook cell (its byte range in the code) holding `offset`.
    fn cell_range(&self, offset: usize) -> Option<(usize, usize)> {
        let nb = self.source.notebook?;
        nb.cells
            .iter()
            .find(|c| c.start <= offset && offset < c.start + c.len)
            .map(|c| (c.start, c.start + c.len))
    }
}

impl ScriptRule for PoolAliveAtSetupCluster {
    fn lint(&self, script: &Script<'_>, _setting: &Setting<'_>) -> Vec<Finding> {
        let calls = &script.model.calls;
        let mut out = Vec::new();
        const RAISES: &str = "CaImAn raises \"A cluster is already running\"";
        for sc in calls.iter().filter(|c| checks_for_children(c)) {
            let at = offset(sc);
            // (a) Something started earlier in the same scope, still alive.
            let alive = calls.iter().find(|p| {
                let start = offset(p);
                start < at
                    && p.function == sc.function
                    && pools::starts_processes(p).is_some()
                    && !script.model.with_contexts.contains(&start)
                    && {
                        let names = script.bound_names(p);
                        !calls.iter().any(|s| {
                            let o = offset(s);
                            start < o && o < at && s.function == sc.function && stops(s, &names)
                        })
                    }
            });
            if let Some(p) = alive {
                let what = pools::starts_processes(p).unwrap_or("worker processes");
                let mut f = script.finding(
                    &INFO,
                    Level::Error,
                    at,
                    format!(
                        "`setup_cluster()` runs while {what} started at {} is still alive: {RAISES}",
                        script.source.line_label(offset(p))
                    ),
                    "stop it first (`cm.stop_server(dview=dview)`, `pool.terminate()`, or a `with` block), or pass ignore_preexisting=True if it is meant to stay",
                );
                f.evidence.push(script.evidence(offset(p)));
                out.push(f);
                continue;
            }
            let names = script.bound_names(sc);
            // (b) In a loop, not stopped within it: the second pass fails.
            if let Some((ls, le)) = sc.in_loop.and_then(|id| script.model.loops.get(id - 1)) {
                let stopped = calls.iter().any(|s| {
                    let o = offset(s);
                    *ls <= o && o < *le && o != at && stops(s, &names)
                });
                if !stopped {
                    out.push(script.finding(
                        &INFO,
                        Level::Error,
                        at,
                        format!(
                            "`setup_cluster()` runs in a loop and its pool is not stopped before the next pass: on the second pass {RAISES}"
                        ),
                        "call `cm.stop_server(dview=dview)` at the end of each pass, or set the cluster up once before the loop",
                    ));
                }
                continue;
            }
            // (c) A notebook cell that does not stop an earlier cluster:
            // running it again fails, unless the cell stops its own
            // cluster again before it ends (then nothing is left running).
            if let Some((cs, ce)) = script.cell_range(at) {
                let stopped_first = calls.iter().any(|s| {
                    let o = offset(s);
                    cs <= o && o < at && stops_any(s, &names)
                });
                let stopped_after = calls.iter().any(|s| {
                    let o = offset(s);
                    at < o && o < ce && s.function == sc.function && stops(s, &names)
                });
                if !stopped_first && !stopped_after {
                    out.push(script.finding(
                        &INFO,
                        Level::Warning,
                        at,
                        format!(
                            "this cell sets up a cluster without stopping the one an earlier run of it started: when the cell runs again {RAISES}"
                        ),
                        "stop an earlier cluster first, as CaImAn's demos do: `if 'dview' in locals(): cm.stop_server(dview=dview)`",
                    ));
                }
            }
        }
        out
    }
}
