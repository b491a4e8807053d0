//! Facts about the machine: OS, CPUs, affinity, cgroup quota, Slurm, memory.

use std::collections::BTreeMap;

use crate::facts::HostFacts;

/// Collect facts about this machine. `env` is the environment the probed
/// process would see (Slurm variables are read from it).
pub fn collect_host(env: &BTreeMap<String, String>) -> HostFacts {
    let _ = env;
    HostFacts::default()
}
