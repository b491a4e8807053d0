//! CC007: more logical CPUs than usable ones.

use caiclust_probe::{Evidence, EvidenceSource};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::finding;

const EXPLANATION: &str = r#"## What it detects
The machine has more logical CPUs than this process may use: an affinity
mask (taskset, cpuset), a cgroup CPU quota (v1 `cpu.cfs_quota_us`, v2
`cpu.max`) or a Slurm allocation (`SLURM_CPUS_PER_TASK`,
`SLURM_CPUS_ON_NODE`).

## Why it is bad
CaImAn sizes its pool as `psutil.cpu_count() - 1`, and every BLAS/OpenMP
pool (cgroup quotas are invisible to them) counts the machine, not the
allocation: the job runs far more threads than it has CPUs.

## Example
A Slurm job with `--cpus-per-task=4` on a 64-CPU node: CaImAn starts 63
workers.

## Fix
Size workers from the usable CPUs: usable = min(affinity, ceil(quota ÷
period), Slurm CPUs), workers = usable − 1 (at least 1), and pass the thread
variables.

## References
CaImAn `cluster.py`; psutil #1122; loky `cpu_count()`; HAZARDS H06."#;

/// Logical CPUs exceed the allocation.
pub struct CpusExceedAllocation;

static INFO: RuleInfo = RuleInfo {
    id: "CC007",
    name: "cpus-exceed-allocation",
    category: Category::Oversubscription,
    summary: "the machine's CPU count exceeds the CPUs this process may use",
    explanation: EXPLANATION,
    hazards: &["H06"],
    depends_on_start_method: false,
};

impl Rule for CpusExceedAllocation {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let host = &cx.facts.host;
        let logical = host.logical_cpus;
        let usable = cx.usable_cpus();
        if logical <= usable {
            return Vec::new();
        }
        let mut ev = vec![Evidence::new(
            EvidenceSource::System,
            format!("{logical} logical CPUs"),
        )];
        if let Some(u) = &host.usable_cpus {
            ev.extend(u.evidence.iter().cloned());
        }
        let location = crate::rules::cpu_limit(cx.facts)
            .map(|(_, w)| w)
            .unwrap_or_else(|| "usable_cpus".to_string());
        vec![finding(
            &INFO,
            format!(
                "{logical} logical CPUs but only {usable} usable ({location}): a pool sized from os.cpu_count() starts {} workers",
                logical.saturating_sub(1).max(1)
            ),
            ev,
            format!("use {} workers (usable CPUs − 1) and set the thread variables", usable.saturating_sub(1).max(1)),
            location,
        )]
    }
}
