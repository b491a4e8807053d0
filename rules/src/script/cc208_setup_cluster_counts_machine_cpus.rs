//! CC208: CaImAn's `setup_cluster` left to count the machine's CPUs.

use caiclust_probe::{Evidence, EvidenceSource};
use rustpython_parser::ast::{Expr, Ranged};

use super::constants::Literal;
use super::model::{self, Call};
use super::{pools, Script, ScriptRule, Setting};
use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::registry::Rule;

const EXPLANATION: &str = r#"## What it detects
CaImAn's `setup_cluster` (`caiman.cluster.setup_cluster`, through any
alias: `cm.cluster.setup_cluster`, `from caiman.cluster import
setup_cluster`) with a backend that starts a pool or engines
(`'multiprocessing'`, the default, `'local'` or `'ipyparallel'`) whose
worker count is the machine's:

* no `n_processes` at all, or `n_processes=None` (also a name bound once
  to `None`): CaImAn then starts `max(psutil.cpu_count() - 1, 1)` workers
  (older releases: one per CPU), counting the logical CPUs of the
  machine;
* `n_processes` computed from `os.cpu_count()`,
  `multiprocessing.cpu_count()` or `psutil.cpu_count()`, which count the
  same.

Not reported: a count the script gives (`n_processes=4`, a name, any
other expression), a call that may pass it through `*args` or
`**kwargs`, the `single` backend, and `setup_cluster` calls the script has
replaced with caiclust's drop-in (`caiman.cluster.setup_cluster =
caiclust.setup_cluster`, or `caiclust.setup_cluster` itself).

## Why it is bad
The logical CPUs of the machine are not the CPUs the job may use. An
affinity mask (taskset, a cpuset, Slurm's task binding), a cgroup CPU
quota (a container's `--cpus`, Kubernetes limits, systemd's `CPUQuota`) or
a Slurm allocation (`--cpus-per-task`) leaves the process fewer, and
`psutil.cpu_count()` sees none of them. A job given 4 CPUs of a 64-CPU node
starts 63 workers; each runs its own BLAS/OpenMP threads on top, the
kernel time-slices them over 4 CPUs, and the run is slower than with 3
workers, or the node's other jobs suffer.

## Level
A warning (an oversubscription: slow, not a hang), decided by what the
facts say about the CPUs:

* facts whose usable CPUs (affinity, cgroup quota, Slurm) are fewer than
  the logical ones: a warning that names both numbers and the count to
  pass;
* no facts (`caiclust-check script.py` alone), or facts that cannot tell
  the usable CPUs: a warning, because the script's worker count depends on
  where it runs, and the machines CaImAn pipelines move to (clusters,
  containers) are exactly those that limit CPUs; the fix says how to count
  them where the script runs;
* facts that show every logical CPU usable: nothing. There CaImAn's count
  is the right one, and a lint that describes the machine it was given
  should not report what is fine on it (the script lint without facts
  reports the portable case).

## Example
```python
import caiman as cm
c, dview, n = cm.cluster.setup_cluster(backend="multiprocessing", n_processes=None)   # CC208
```

## Fix
Count the CPUs the job may use, where it runs, and take one off as CaImAn
does: `n_processes=max(caiclust.usable_cpus() - 1, 1)` (affinity, cgroup
quota and Slurm), or `max(len(os.sched_getaffinity(0)) - 1, 1)` (Linux; the
affinity mask only, which taskset, cpusets and Slurm's binding set, not a
cgroup quota). Or use `caiclust.setup_cluster`, a drop-in for CaImAn's that
counts the usable CPUs (also as `caiman.cluster.setup_cluster =
caiclust.setup_cluster`).

## References
CaImAn `caiman/cluster.py` (`setup_cluster`: `n_processes =
np.maximum(int(psutil.cpu_count() - 1), 1)`); psutil #1122; loky
`cpu_count()`; Python 3.13 `os.process_cpu_count()`; HAZARDS H06; CC007
(the same fact, about the environment)."#;

/// `setup_cluster` left to count the machine's CPUs.
pub struct SetupClusterCountsMachineCpus;

static INFO: RuleInfo = RuleInfo {
    id: "CC208",
    name: "setup-cluster-counts-machine-cpus",
    category: Category::Oversubscription,
    summary: "CaImAn's setup_cluster without n_processes starts a worker per logical CPU of the machine (minus one), ignoring affinity, cgroup quotas and Slurm allocations",
    explanation: EXPLANATION,
    hazards: &["H06"],
    depends_on_start_method: false,
};

impl Rule for SetupClusterCountsMachineCpus {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    /// Reads scripts, not facts: see [`crate::lint_script`].
    fn check(&self, _cx: &Context<'_>) -> Vec<Finding> {
        Vec::new()
    }
}

/// Calls that count the machine's logical CPUs, whatever the process may
/// use.
const MACHINE_CPU_COUNTS: &[&str] = &[
    "os.cpu_count",
    "multiprocessing.cpu_count",
    "psutil.cpu_count",
];

/// Backends that start `n_processes` workers or engines.
const COUNTED_BACKENDS: &[&str] = &["multiprocessing", "local", "ipyparallel"];

/// How a `setup_cluster` call leaves the count to the machine.
enum MachineCount<'s> {
    /// No `n_processes` argument.
    Missing,
    /// `n_processes=None`.
    None,
    /// Computed from a count of the machine's CPUs (the callee).
    Computed(&'s str),
}

/// What the facts say about the CPUs the job may use.
enum Cpus {
    /// Fewer usable CPUs than logical ones, and the tightest bound.
    Limited {
        usable: usize,
        logical: usize,
        source: String,
        evidence: Vec<Evidence>,
    },
    /// Every logical CPU is usable.
    AllUsable,
    /// No facts, or facts that cannot tell.
    Unknown,
}

fn cpus(setting: &Setting<'_>) -> Cpus {
    let Some(cx) = setting.cx else {
        return Cpus::Unknown;
    };
    let facts = cx.facts;
    let host = &facts.host;
    let logical = host.logical_cpus;
    // Host facts of another machine (a wheel tree checked for another
    // OS) say nothing about where the script runs.
    if logical == 0 || host.os.is_some_and(|os| os != facts.target_os) {
        return Cpus::Unknown;
    }
    let limit = crate::rules::cpu_limit(facts);
    let usable = host
        .usable_cpus
        .as_ref()
        .map(|c| c.value)
        .or(limit.as_ref().map(|(n, _)| *n));
    match usable {
        Some(usable) if usable < logical => {
            let mut evidence = vec![Evidence::new(
                EvidenceSource::System,
                format!("{logical} logical CPUs"),
            )];
            if let Some(u) = &host.usable_cpus {
                evidence.extend(u.evidence.iter().cloned());
            }
            Cpus::Limited {
                usable: usable.max(1),
                logical,
                source: limit.map_or_else(|| "usable CPUs".to_string(), |(_, w)| w),
                evidence,
            }
        }
        Some(_) => Cpus::AllUsable,
        None => Cpus::Unknown,
    }
}

impl<'a> Script<'a> {
    /// Has the script replaced CaImAn's `setup_cluster` with another
    /// (`caiman.cluster.setup_cluster = caiclust.setup_cluster`)? Then a
    /// call through the module's attribute is that one.
    fn replaces_setup_cluster(&self, call: &Call<'_>) -> bool {
        matches!(call.node.func.as_ref(), Expr::Attribute(_))
            && self.model.patches.iter().any(|p| {
                p.target == "caiman.cluster.setup_cluster"
                    && !p.value.as_deref().is_some_and(|v| v.starts_with("caiman."))
            })
    }

    /// How the call leaves its worker count to the machine, if it does.
    fn machine_count(&self, call: &Call<'_>) -> Option<MachineCount<'_>> {
        let Some(arg) = call.arg(1, "n_processes") else {
            return (!model::splats(call.node)).then_some(MachineCount::Missing);
        };
        if self.constants.value(arg.expr, call.function) == Some(Literal::None) {
            return Some(MachineCount::None);
        }
        let (start, end) = (
            arg.expr.range().start().to_usize(),
            arg.expr.range().end().to_usize(),
        );
        self.model.calls.iter().find_map(|c| {
            let at = c.node.range().start().to_usize();
            (start <= at && at < end && MACHINE_CPU_COUNTS.contains(&c.callee.as_str()))
                .then_some(MachineCount::Computed(c.callee.as_str()))
        })
    }
}

impl ScriptRule for SetupClusterCountsMachineCpus {
    fn lint(&self, script: &Script<'_>, setting: &Setting<'_>) -> Vec<Finding> {
        let cpus = cpus(setting);
        if matches!(cpus, Cpus::AllUsable) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for call in &script.model.calls {
            if call.callee != "caiman.cluster.setup_cluster" || script.replaces_setup_cluster(call)
            {
                continue;
            }
            let Some(backend) =
                pools::caiman_backend(call).filter(|b| COUNTED_BACKENDS.contains(b))
            else {
                continue;
            };
            let Some(how) = script.machine_count(call) else {
                continue;
            };
            let workers = if backend == "ipyparallel" {
                "engines"
            } else {
                "workers"
            };
            let what = match how {
                MachineCount::Missing => "`setup_cluster()` without n_processes".to_string(),
                MachineCount::None => "`setup_cluster(n_processes=None)`".to_string(),
                MachineCount::Computed(f) => {
                    format!("`setup_cluster()` with n_processes from `{f}()`")
                }
            };
            let computed = matches!(how, MachineCount::Computed(_));
            let (message, fix, evidence) = match &cpus {
                Cpus::Limited {
                    usable,
                    logical,
                    source,
                    evidence,
                } => {
                    let starts = if computed {
                        format!("counts the machine's {logical} logical CPUs")
                    } else {
                        format!(
                            "starts {} {workers} (CaImAn counts the machine's {logical} logical CPUs, minus one)",
                            logical.saturating_sub(1).max(1)
                        )
                    };
                    (
                        format!(
                            "{what} {starts}, but this process may use only {usable} ({source}): \
                             the {workers} and their threads oversubscribe the allocation"
                        ),
                        format!(
                            "this machine lets the job use {usable} of {logical} CPUs: pass \
                             n_processes={} (usable CPUs − 1), better counted where the script \
                             runs: `n_processes=max(caiclust.usable_cpus() - 1, 1)`; or call \
                             `caiclust.setup_cluster`, a drop-in for CaImAn's that counts the \
                             usable CPUs",
                            usable.saturating_sub(1).max(1)
                        ),
                        evidence.clone(),
                    )
                }
                _ => {
                    let starts = if computed {
                        "counts every logical CPU of the machine".to_string()
                    } else {
                        format!(
                            "starts one {} per logical CPU of the machine, minus one \
                             (`psutil.cpu_count() - 1`)",
                            workers.trim_end_matches('s')
                        )
                    };
                    (
                        format!(
                            "{what} {starts}: where an affinity mask, a cgroup CPU quota or a \
                             Slurm allocation lets the job use fewer CPUs, it starts more \
                             {workers} than the job has CPUs"
                        ),
                        "count the CPUs the job may use where it runs: \
                         `n_processes=max(caiclust.usable_cpus() - 1, 1)` (affinity, cgroup \
                         quota and Slurm) or `max(len(os.sched_getaffinity(0)) - 1, 1)` (Linux; \
                         the affinity mask only, not a cgroup quota); or call \
                         `caiclust.setup_cluster`, a drop-in for CaImAn's that counts the usable \
                         CPUs"
                            .to_string(),
                        Vec::new(),
                    )
                }
            };
            let mut f = script.finding(
                &INFO,
                Level::Warning,
                call.node.range().start().to_usize(),
                message,
                &fix,
            );
            f.evidence.extend(evidence);
            out.push(f);
        }
        out
    }
}
