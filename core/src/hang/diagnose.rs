//! The default diagnosis of a suspect: probe the process and run the rules
//! on it as a forked child; a hang-or-crash finding at error level (CC001,
//! GNU OpenMP used after fork, say) is the hang's cause.
//!
//! One thing the rules cannot know from the environment is read live: how
//! big the pool was that the child inherited. A program that calls
//! `omp_set_num_threads(2)` starts a pool of two whatever
//! `OMP_NUM_THREADS` says, and that pool's workers still wait inside the
//! runtime in the parent. Their count (plus the master) becomes the
//! runtime's thread count in the facts the rules judge, when it is larger
//! than what the rules would assume. A parent that runs a single thread
//! has no pool to hand down: then the count is one (a child that started
//! a pool of its own and waits at its barrier is not hung by fork).

use std::path::{Path, PathBuf};

use caiclust_probe::{probe_pid, Facts, LiveOptions, RuntimeAnswer, Vendor};
use caiclust_rules::Finding;

use super::evidence::threads_waiting_in;
use super::{platform, Hang, HangKind, Suspect};

/// Probe `suspect` (without runtime queries: nothing is loaded) and run
/// the rules on it as a forked child. Returns the hang and its cause when
/// the rules find an error-level hang or crash; `None` otherwise, or when
/// the process cannot be read (it exited, say).
///
/// The finding whose location is the runtime the suspect waits in comes
/// first; [`Hang::runtime`] is that runtime, or else the finding's
/// location when it is a path.
///
/// # Cost
///
/// One live probe of the process: a few procfs reads and a static reading
/// of each library it has mapped (tens of milliseconds for a Python
/// process with numpy), then the rules.
pub fn diagnose_forked_child(suspect: &Suspect) -> Option<Hang> {
    let live = LiveOptions {
        query_helper: None,
        ..LiveOptions::default()
    };
    let mut facts = probe_pid(suspect.pid, &live).ok()?;
    let parent_pools = observe_parent_pools(suspect.pid, &mut facts);
    let findings = crate::watchdog::hang_findings(&facts, "fork", None);
    let finding = pick(&findings, suspect.runtime.as_deref())?;
    let runtime = suspect.runtime.clone().or_else(|| {
        finding
            .location
            .as_deref()
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    });
    let mut detail = match (suspect.how, &runtime) {
        (HangKind::Blocked, Some(r)) => format!(
            "its first thread has waited in a system call inside {} for {:.1} s, using next to no CPU",
            file_name(r),
            suspect.stalled.as_secs_f64()
        ),
        (HangKind::Blocked, None) => format!(
            "it has used next to no CPU for {:.1} s",
            suspect.stalled.as_secs_f64()
        ),
        (HangKind::Spinning, r) => format!(
            "it has spun for {:.1} s, nearly all its CPU time in the kernel (a sched_yield loop){}",
            suspect.stalled.as_secs_f64(),
            r.as_ref()
                .map(|r| format!(", with {} mapped", file_name(r)))
                .unwrap_or_default()
        ),
    };
    for (parent, lib, threads) in parent_pools.iter().filter(|(_, _, n)| *n > 1) {
        detail.push_str(&format!(
            "; its parent {parent} keeps a pool of {threads} threads in {} (seen waiting there)",
            file_name(lib)
        ));
    }
    Some(Hang {
        pid: suspect.pid,
        rule_id: finding.rule_id.clone(),
        rule_name: finding.rule_name.clone(),
        message: finding.message.clone(),
        fix: finding.fix.clone(),
        runtime,
        stalled: suspect.stalled,
        how: suspect.how,
        detail,
    })
}

/// The finding located at `runtime` first, else the first.
fn pick<'a>(findings: &'a [Finding], runtime: Option<&Path>) -> Option<&'a Finding> {
    findings
        .iter()
        .find(|f| runtime.is_some_and(|r| f.location.as_deref().map(Path::new) == Some(r)))
        .or(findings.first())
}

/// The pools of GNU OpenMP libraries seen in the parent `pid` was forked
/// from (still running the same program), as (parent, library, pool
/// size), and the facts told. A libgomp whose workers wait in the parent
/// has a pool of that many threads plus the master; a parent that runs a
/// single thread has no pool the child could have inherited (a pool's
/// workers live as long as the thread that started it): one thread,
/// whatever the environment says. Each libgomp, and each library whose
/// pool runs on it (an OpenMP OpenBLAS, MKL's GNU layer), gets that count
/// as its thread count: when larger than known, or always for a lone
/// parent.
fn observe_parent_pools(pid: u32, facts: &mut Facts) -> Vec<(u32, PathBuf, usize)> {
    let Some(parent) = crate::tree::process_sample(pid).map(|s| s.parent) else {
        return Vec::new();
    };
    let exe = |p: u32| std::fs::read_link(format!("/proc/{p}/exe")).ok();
    if exe(pid).is_none() || exe(pid) != exe(parent) {
        // Not its fork parent any more (it exited; the child was adopted).
        return Vec::new();
    }
    let alone = platform::threads(parent).len() == 1;
    let pools: Vec<(PathBuf, usize)> = facts
        .libraries
        .iter()
        .filter(|l| l.vendor.value == Vendor::GnuOpenmp)
        .map(|l| (l.path.clone(), threads_waiting_in(parent, &l.path) + 1))
        .filter(|(_, pool)| alone || *pool > 1)
        .collect();
    let Some(largest) = pools.iter().map(|(_, n)| *n).max() else {
        return Vec::new();
    };
    for lib in &mut facts.libraries {
        let pool = if lib.vendor.value == Vendor::GnuOpenmp {
            pools.iter().find(|(p, _)| *p == lib.path).map(|(_, n)| *n)
        } else if lib
            .openmp_runtime
            .as_ref()
            .is_some_and(|r| r.value == Vendor::GnuOpenmp)
        {
            // The libgomp it loads, else the largest pool seen.
            lib.dependencies
                .iter()
                .find_map(|d| pools.iter().find(|(p, _)| p == d).map(|(_, n)| *n))
                .or(Some(largest))
        } else {
            None
        };
        let Some(pool) = pool else {
            continue;
        };
        let answer = lib.runtime.get_or_insert_with(RuntimeAnswer::default);
        if alone || answer.num_threads.is_none_or(|n| n < pool) {
            answer.num_threads = Some(pool);
        }
    }
    pools
        .into_iter()
        .map(|(lib, pool)| (parent, lib, pool))
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
