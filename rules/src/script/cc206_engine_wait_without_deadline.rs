//! CC206: waiting for ipyparallel engines with no deadline.

use rustpython_parser::ast::{Expr, Ranged, UnaryOp};

use super::model::{self, Call};
use super::{pools, Script, ScriptRule, Setting};
use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::registry::Rule;

const EXPLANATION: &str = r#"## What it detects
A script or notebook that waits for ipyparallel engines with no deadline:

* CaImAn's `setup_cluster(backend='ipyparallel')` (also the older
  `'SLURM'` backend) and `caiman.cluster.start_server()`: CaImAn runs
  `ipcluster start -n N` in a shell and then loops `while len(client) <
  ncpus: time.sleep(0.5)` with no time limit;
* `Client.wait_for_engines(n)` of ipyparallel without `timeout=` (its
  default, `-1`, waits forever).

Found through any import alias. A warning: nothing is wrong while
`ipcluster` starts and every engine registers.

What the source cannot show, and so is not checked: whether `ipcluster`
is on the `PATH` the kernel or script sees, whether the engines start
(an import error, memory), and whether a stale pid or cluster file of an
earlier run makes `ipcluster start` refuse ("Cluster is already running").
Each of these turns the wait above into a hang.

## Why it is bad
CaImAn starts `ipcluster` with `subprocess.Popen(..., shell=True)`, which
does not fail when the program is missing or exits at once: the shell
reports it on standard error, and the loop waits for engines that will
never come. An engine that dies before registering, or an `ipcluster`
that refuses to start over an earlier cluster's leftovers, does the
same. The run hangs with no error, often inside a notebook cell or a
batch job that only its time limit ends.

## Example
```python
import caiman as cm
c, dview, n = cm.cluster.setup_cluster(backend="ipyparallel")   # CC206
```

## Fix
Start the engines with a deadline and let ipyparallel report failures:
`rc = ipyparallel.Cluster(n=4).start_and_connect_sync()` waits at most the
cluster's `engine_timeout` (60 s by default) and fails when an engine set
stops; pass `dview=rc[:]` to CaImAn. Waiting yourself, give a timeout:
`rc.wait_for_engines(4, timeout=120)`. Clear an earlier cluster's files
with `ipcluster stop` (or `ipcluster clean`), or give each run its own
`cluster_id` or profile.

## References
CaImAn `caiman/cluster.py` (`start_server`, `setup_cluster`); ipyparallel
`Client.wait_for_engines` and `Cluster.start_and_connect` (`engine_timeout`);
BlueBrain/BluePyMM #211 ("Cluster is already running", then no engines);
ipython/ipyparallel #362, #706; HAZARDS H16."#;

/// A wait for ipyparallel engines with no deadline.
pub struct EngineWaitWithoutDeadline;

static INFO: RuleInfo = RuleInfo {
    id: "CC206",
    name: "engine-wait-without-deadline",
    category: Category::Robustness,
    summary: "ipyparallel engines are waited for with no deadline: a missing ipcluster, a dead engine or a stale cluster hangs the run",
    explanation: EXPLANATION,
    hazards: &["H16"],
    depends_on_start_method: false,
};

impl Rule for EngineWaitWithoutDeadline {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    /// Reads scripts, not facts: see [`crate::lint_script`].
    fn check(&self, _cx: &Context<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// What waits without a deadline, if this call does.
fn waits_forever(call: &Call<'_>) -> Option<String> {
    match call.callee.as_str() {
        "caiman.cluster.setup_cluster" => {
            let backend = pools::caiman_backend(call)?;
            matches!(backend, "ipyparallel" | "SLURM").then(|| {
                format!("`setup_cluster(backend='{backend}')` starts ipcluster in a shell and waits for every engine with no deadline")
            })
        }
        "caiman.cluster.start_server" | "caiman.start_server" => Some(
            "`start_server()` starts ipcluster in a shell and waits for every engine with no deadline".into(),
        ),
        callee
            if callee.starts_with("ipyparallel.")
                && callee.ends_with(".wait_for_engines")
                && no_timeout(call) =>
        {
            Some("`wait_for_engines()` without a timeout waits forever for engines that do not register".into())
        }
        _ => None,
    }
}

/// `timeout=` absent, `None`, or negative (ipyparallel's "forever").
fn no_timeout(call: &Call<'_>) -> bool {
    let Some(t) = call.arg(usize::MAX, "timeout") else {
        return true;
    };
    match t.expr {
        Expr::UnaryOp(u) if u.op == UnaryOp::USub => true,
        e => model::is_none(e),
    }
}

impl ScriptRule for EngineWaitWithoutDeadline {
    fn lint(&self, script: &Script<'_>, _setting: &Setting<'_>) -> Vec<Finding> {
        script
            .model
            .calls
            .iter()
            .filter_map(|c| waits_forever(c).map(|what| (c, what)))
            .map(|(c, what)| {
                script.finding(
                    &INFO,
                    Level::Warning,
                    c.node.range().start().to_usize(),
                    format!(
                        "{what}: if ipcluster is missing or refuses to start (a stale cluster), or an engine dies, the run hangs with no error"
                    ),
                    "start the engines with a deadline: `rc = ipyparallel.Cluster(n=N).start_and_connect_sync()` (then `dview=rc[:]`), or `rc.wait_for_engines(N, timeout=...)`",
                )
            })
            .collect()
    }
}
