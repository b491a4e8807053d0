//! Facts about the machine: OS, CPUs, affinity, cgroup quota, Slurm, memory.
//!
//! The centre of this module is hazard H06 (see `HAZARDS.md`): the machine's
//! logical CPU count is often far above the CPUs a process may really use.
//! [`collect_host`] therefore reports every bound it finds (affinity mask,
//! cgroup CPU bandwidth quota, Slurm allocation) and concludes
//! [`HostFacts::usable_cpus`] as their minimum, with one piece of evidence
//! per bound.
//!
//! # Platform-specific behaviour
//!
//! * Linux: the logical CPU count is the online CPU list in
//!   `/sys/devices/system/cpu/online`; the affinity mask is
//!   `Cpus_allowed_list` in `/proc/self/status` (restricted to online CPUs);
//!   the cgroup limit comes from `/proc/self/cgroup`,
//!   `/proc/self/mountinfo` and the cgroup v1 `cpu` and v2 unified
//!   hierarchies (see the `cgroup` submodule).
//! * macOS and Windows: the logical CPU count comes from `sysinfo`; no
//!   affinity mask or CPU quota is read (a note says so). On Windows the
//!   count covers the current processor group only (at most 64 CPUs).
//! * Everywhere: the Slurm allocation is read from the given environment,
//!   not from the process's own.
//!
//! # Cost
//!
//! A handful of small files and system calls; nothing sleeps or samples CPU
//! usage. About a millisecond on Linux.

use std::collections::BTreeMap;
#[cfg(target_os = "linux")]
use std::path::Path;

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, System};

use crate::facts::{
    CgroupCpuLimit, Conclusion, Confidence, Evidence, EvidenceSource, HostFacts, OsFamily,
};

#[cfg(any(target_os = "linux", test))]
mod cgroup;
#[cfg(test)]
mod fake_tree {
    /// Build a fake filesystem tree for tests: `(relative path, contents)`.
    pub(crate) fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, contents) in files {
            let full = dir.path().join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&full, contents).expect("write");
        }
        dir
    }
}
#[cfg(any(target_os = "linux", test))]
mod cpulist;
mod slurm;

/// Collect facts about this machine. `env` is the environment the probed
/// process would see (Slurm variables are read from it).
///
/// Never fails: whatever cannot be read is left empty and explained in
/// [`HostFacts::notes`]. See the module documentation for what is read on
/// each platform and what it costs.
pub fn collect_host(env: &BTreeMap<String, String>) -> HostFacts {
    let mut host = HostFacts {
        os: Some(OsFamily::current()),
        os_name: non_empty(System::name()),
        os_version: non_empty(System::os_version()),
        kernel_version: non_empty(System::kernel_version()),
        arch: std::env::consts::ARCH.to_owned(),
        hostname: non_empty(System::host_name()),
        physical_cpus: System::physical_core_count().ok().filter(|n| *n > 0),
        ..HostFacts::default()
    };

    let mut system = match System::new() {
        Ok(system) => Some(system),
        Err(e) => {
            host.notes
                .push(format!("sysinfo cannot read this system: {e}"));
            None
        }
    };
    if let Some(system) = system.as_mut() {
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        host.memory_total_bytes = Some(system.total_memory()).filter(|b| *b > 0);
        host.memory_available_bytes = Some(system.available_memory()).filter(|b| *b > 0);
    }

    let platform = platform_cpu_facts();
    host.notes.extend(platform.notes);
    host.affinity = platform.affinity;
    host.cgroup = platform.cgroup;

    let logical = match platform.logical {
        Some(bound) => bound,
        None => logical_fallback(system.as_mut()),
    };
    host.logical_cpus = logical.cpus.unwrap_or(1);

    let mut bounds = vec![logical];
    bounds.extend(platform.bounds);

    host.slurm = slurm::slurm_from_env(env, &mut host.notes);
    if let Some(alloc) = &host.slurm {
        bounds.push(match slurm::slurm_cpu_bound(alloc) {
            Some((cpus, var)) => Bound::new(
                Some(cpus),
                EvidenceSource::Environment,
                format!("{var}={cpus} → {}", cpu_count(cpus)),
            ),
            None => Bound::new(
                None,
                EvidenceSource::Environment,
                "Slurm variables present but neither SLURM_CPUS_PER_TASK, \
                 SLURM_CPUS_ON_NODE nor a one-node SLURM_JOB_CPUS_PER_NODE gives a CPU \
                 count: no Slurm bound",
            ),
        });
    }

    host.usable_cpus = Some(conclude_usable(bounds));
    host
}

/// `1 CPU`, `2 CPUs`: a count for evidence texts.
fn cpu_count(n: usize) -> String {
    if n == 1 {
        "1 CPU".to_owned()
    } else {
        format!("{n} CPUs")
    }
}

/// A sysinfo answer as an optional, non-empty string.
fn non_empty<E>(value: Result<String, E>) -> Option<String> {
    value
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The logical CPU count when the platform code found none: sysinfo's CPU
/// list (no usage sampling), else the standard library's count.
fn logical_fallback(system: Option<&mut System>) -> Bound {
    if let Some(system) = system {
        system.refresh_cpu_list(CpuRefreshKind::nothing());
        let n = system.cpus().len();
        if n > 0 {
            return Bound::new(
                Some(n),
                EvidenceSource::System,
                format!("{n} logical CPUs reported by the OS"),
            );
        }
    }
    match std::thread::available_parallelism() {
        Ok(n) => Bound::new(
            Some(n.get()),
            EvidenceSource::System,
            format!(
                "{n} CPUs from std::thread::available_parallelism \
                 (the machine's count was unavailable; this may already \
                 reflect affinity or quota)"
            ),
        ),
        Err(e) => Bound::new(
            Some(1),
            EvidenceSource::System,
            format!("the CPU count is unavailable ({e}); assuming 1"),
        ),
    }
}

/// One bound considered for the usable CPU count. `cpus` is `None` for
/// something checked that sets no bound (kept for the evidence).
#[derive(Debug, Clone, PartialEq)]
struct Bound {
    cpus: Option<usize>,
    evidence: Evidence,
}

impl Bound {
    fn new(cpus: Option<usize>, source: EvidenceSource, detail: impl Into<String>) -> Self {
        Self {
            cpus,
            evidence: Evidence::new(source, detail),
        }
    }
}

/// min over the bounds, at least 1, with every bound as evidence.
fn conclude_usable(bounds: Vec<Bound>) -> Conclusion<usize> {
    let value = bounds
        .iter()
        .filter_map(|b| b.cpus)
        .min()
        .unwrap_or(1)
        .max(1);
    Conclusion::new(
        value,
        Confidence::High,
        bounds.into_iter().map(|b| b.evidence).collect(),
    )
}

/// CPU facts that only the platform can give.
#[derive(Debug, Default)]
struct PlatformCpuFacts {
    /// The machine's logical CPU count, when the platform code read it.
    logical: Option<Bound>,
    affinity: Option<Vec<usize>>,
    cgroup: Option<CgroupCpuLimit>,
    /// Affinity and cgroup bounds, in that order.
    bounds: Vec<Bound>,
    notes: Vec<String>,
}

#[cfg(target_os = "linux")]
fn platform_cpu_facts() -> PlatformCpuFacts {
    linux_cpu_facts(Path::new("/"))
}

#[cfg(not(target_os = "linux"))]
fn platform_cpu_facts() -> PlatformCpuFacts {
    let note = if cfg!(target_os = "macos") {
        "CPU affinity and CPU quotas are not read on macOS (it has neither \
         affinity masks nor cgroups); usable CPUs assume the whole machine"
    } else if cfg!(windows) {
        "CPU affinity, processor groups and job-object CPU rate limits are not \
         read on Windows; usable CPUs assume the whole machine"
    } else {
        "CPU affinity and CPU quotas are not read on this OS; usable CPUs \
         assume the whole machine"
    };
    PlatformCpuFacts {
        notes: vec![note.to_owned()],
        ..PlatformCpuFacts::default()
    }
}

/// Read the Linux CPU facts from the filesystem below `root` (`/` in
/// production, a fake tree in tests): online CPUs, affinity mask and
/// cgroup CPU limits.
#[cfg(any(target_os = "linux", test))]
fn linux_cpu_facts(root: &std::path::Path) -> PlatformCpuFacts {
    let mut out = PlatformCpuFacts::default();
    let ids = cpulist::read_linux_cpu_ids(root);
    out.notes.extend(ids.notes);
    if let Some((online, evidence)) = ids.online {
        out.logical = Some(Bound {
            cpus: Some(online.len()),
            evidence,
        });
    }
    if let Some((affinity, evidence)) = ids.affinity {
        out.bounds.push(Bound {
            cpus: Some(affinity.len()),
            evidence,
        });
        out.affinity = Some(affinity);
    }

    let scan = cgroup::scan_cgroup_cpu_limits(root);
    out.notes.extend(scan.notes.iter().cloned());
    for found in &scan.found {
        out.bounds.push(Bound::new(
            found.quota.whole_cpus(),
            EvidenceSource::System,
            found.detail.clone(),
        ));
    }
    for unlimited in &scan.unlimited {
        out.bounds
            .push(Bound::new(None, EvidenceSource::System, unlimited.clone()));
    }
    out.cgroup = scan.tightest().map(|f| f.limit.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use super::fake_tree::tree;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn host_fake_tree_usable_is_min_of_all_bounds() {
        let dir = tree(&[
            ("sys/devices/system/cpu/online", "0-7\n"),
            ("proc/self/status", "Name:\tx\nCpus_allowed_list:\t0-5\n"),
            ("proc/self/cgroup", "0::/job\n"),
            (
                "proc/self/mountinfo",
                "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            ),
            ("sys/fs/cgroup/job/cpu.max", "250000 100000\n"),
        ]);
        let facts = linux_cpu_facts(dir.path());
        assert!(facts.notes.is_empty(), "{:?}", facts.notes);
        assert_eq!(facts.logical.as_ref().and_then(|b| b.cpus), Some(8));
        assert_eq!(facts.affinity, Some(vec![0, 1, 2, 3, 4, 5]));
        let limit = facts.cgroup.clone().expect("cgroup limit");
        assert_eq!(limit.quota_us, Some(250_000));

        let mut bounds: Vec<Bound> = facts.logical.into_iter().collect();
        bounds.extend(facts.bounds);
        let usable = conclude_usable(bounds);
        assert_eq!(usable.value, 3);
        assert_eq!(usable.confidence, Confidence::High);
        assert_eq!(usable.evidence.len(), 3, "{:?}", usable.evidence);
        assert!(usable.evidence[1]
            .detail
            .contains("affinity mask 0-5 (6 CPUs)"));
        assert!(usable.evidence[2].detail.contains("cpu.max 250000 100000"));
        assert!(usable.evidence[2].detail.ends_with("→ 3 CPUs"));
    }

    #[test]
    fn host_fake_tree_affinity_is_restricted_to_online_cpus() {
        let dir = tree(&[
            ("sys/devices/system/cpu/online", "0-3\n"),
            ("proc/self/status", "Cpus_allowed_list:\t0-63\n"),
        ]);
        let facts = linux_cpu_facts(dir.path());
        assert_eq!(facts.affinity, Some(vec![0, 1, 2, 3]));
    }

    #[test]
    fn host_fake_tree_empty_has_notes_not_panics() {
        let dir = tree(&[]);
        let facts = linux_cpu_facts(dir.path());
        assert!(facts.logical.is_none());
        assert!(facts.affinity.is_none());
        assert!(facts.cgroup.is_none());
        assert!(facts.notes.len() >= 3, "{:?}", facts.notes);
    }

    #[test]
    fn host_fake_tree_garbage_status_is_noted() {
        let dir = tree(&[
            ("sys/devices/system/cpu/online", "zero-three"),
            ("proc/self/status", "Cpus_allowed_list:\t3-1\n"),
        ]);
        let facts = linux_cpu_facts(dir.path());
        assert!(facts.logical.is_none());
        assert!(facts.affinity.is_none());
        assert!(facts.notes.iter().any(|n| n.contains("zero-three")));
        assert!(facts.notes.iter().any(|n| n.contains("3-1")));
    }

    #[test]
    fn host_usable_is_at_least_one() {
        let usable = conclude_usable(vec![Bound::new(Some(0), EvidenceSource::System, "nothing")]);
        assert_eq!(usable.value, 1);
    }

    #[test]
    fn host_real_machine_is_consistent() {
        let host = collect_host(&BTreeMap::new());
        assert_eq!(host.os, Some(OsFamily::current()));
        assert_eq!(host.arch, std::env::consts::ARCH);
        assert!(host.logical_cpus >= 1);
        let usable = host.usable_cpus.as_ref().expect("usable cpus");
        assert!(usable.value >= 1);
        assert!(
            usable.value <= host.logical_cpus,
            "usable {} > logical {}",
            usable.value,
            host.logical_cpus
        );
        assert!(host.slurm.is_none());
        if let (Some(total), Some(avail)) = (host.memory_total_bytes, host.memory_available_bytes) {
            assert!(avail <= total);
        }
        println!("{host:#?}");
    }

    /// `nproc` (coreutils) counts `sched_getaffinity`: an independent oracle
    /// for the affinity mask. It honours `OMP_NUM_THREADS` and
    /// `OMP_THREAD_LIMIT`, so those are removed.
    #[cfg(target_os = "linux")]
    #[test]
    fn host_real_affinity_matches_nproc() {
        let out = std::process::Command::new("nproc")
            .env_remove("OMP_NUM_THREADS")
            .env_remove("OMP_THREAD_LIMIT")
            .output()
            .expect("nproc must be installed to check the affinity mask");
        assert!(out.status.success(), "nproc failed: {out:?}");
        let nproc: usize = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("nproc prints a number");
        let host = collect_host(&BTreeMap::new());
        let affinity = host.affinity.expect("affinity is read on Linux");
        assert_eq!(affinity.len(), nproc, "affinity {affinity:?}");
        let usable = host.usable_cpus.expect("usable cpus");
        assert!(usable.value <= nproc);
        assert!(usable
            .evidence
            .iter()
            .any(|e| e.detail.starts_with("affinity mask")));
    }

    #[test]
    fn host_slurm_env_bounds_usable_cpus() {
        let host = collect_host(&env(&[
            ("SLURM_JOB_ID", "77"),
            ("SLURM_CPUS_PER_TASK", "1"),
            ("SLURM_CPUS_ON_NODE", "16"),
            ("SLURM_NTASKS", "1"),
            ("SLURM_JOB_NUM_NODES", "1"),
            ("SLURM_JOB_CPUS_PER_NODE", "16"),
            ("SLURM_JOB_NODELIST", "cn001"),
        ]));
        let slurm = host.slurm.expect("slurm allocation");
        assert_eq!(slurm.job_id.as_deref(), Some("77"));
        assert_eq!(slurm.cpus_per_task, Some(1));
        assert_eq!(slurm.cpus_on_node, Some(16));
        let usable = host.usable_cpus.expect("usable cpus");
        assert_eq!(usable.value, 1);
        let slurm_evidence = usable
            .evidence
            .iter()
            .find(|e| e.source == EvidenceSource::Environment)
            .expect("Slurm evidence");
        assert_eq!(slurm_evidence.detail, "SLURM_CPUS_PER_TASK=1 → 1 CPU");
    }

    #[test]
    fn host_slurm_cpus_on_node_is_the_fallback_bound() {
        let host = collect_host(&env(&[("SLURM_CPUS_ON_NODE", "1")]));
        assert_eq!(host.usable_cpus.map(|u| u.value), Some(1));
    }

    #[test]
    fn host_collect_is_fast() {
        let start = Instant::now();
        let _ = collect_host(&BTreeMap::new());
        let first = start.elapsed();
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            let _ = collect_host(&BTreeMap::new());
            best = best.min(start.elapsed());
        }
        println!("collect_host: first call {first:?}, best of 5 = {best:?}");
        assert!(
            best < Duration::from_millis(10),
            "collect_host took {best:?}"
        );
    }
}
