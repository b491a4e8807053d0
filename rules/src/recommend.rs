//! The recommendation: how to run parallel work safely on these facts.
//! Deterministic: the same facts and configuration give the same advice.

use std::collections::BTreeMap;

use caiclust_probe::{Facts, Library, OsFamily, Vendor};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::context::Plan;
use crate::policy::{assess, Verdict};
use crate::rules::WINDOWS_MAX_WORKERS;
use crate::threads::{pool_sizing, PACKAGE_POOLS};

/// Where the work runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Local worker processes (Python multiprocessing or caiclust's pool).
    Multiprocessing,
    /// ipyparallel engines, possibly on several hosts.
    Ipyparallel,
    /// No parallelism: one process.
    Single,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "multiprocessing" | "local" => Ok(Self::Multiprocessing),
            "ipyparallel" => Ok(Self::Ipyparallel),
            "single" => Ok(Self::Single),
            other => Err(format!(
                "unknown backend '{other}' (expected multiprocessing, ipyparallel or single)"
            )),
        }
    }
}

/// A recommended value and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Choice<T> {
    pub value: T,
    pub reason: String,
}

/// One environment variable to set before the interpreter starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvSetting {
    pub name: String,
    pub value: String,
    pub reason: String,
    /// The ids of the hazards this setting makes safe (`CC001`): set for
    /// the environment fixes of a start method, empty for thread limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
}

/// The advice, each choice with its reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recommendation {
    pub backend: Choice<Backend>,
    /// `spawn`, `forkserver` or `fork` (for multiprocessing).
    pub start_method: Choice<String>,
    pub workers: Choice<usize>,
    /// Threads each worker's runtimes may use.
    pub threads_per_worker: Choice<usize>,
    /// Variables to set in every worker's environment, sorted by name:
    /// thread limits, and where the start method alone is not safe, the
    /// variables that make it so.
    pub env: Vec<EnvSetting>,
    /// The hazard policy's verdict on the plan it recommends: the start
    /// method, workers and `env` above (see [`crate::assess`]).
    pub verdict: Verdict,
}

/// Work out the recommendation.
///
/// * backend: the configured one; else ipyparallel when Slurm shows more
///   than one node; else single when one CPU is usable; else
///   multiprocessing.
/// * start method: the configured one; else spawn on macOS and Windows;
///   on Linux fork only when no fork hazard (a rule of the hang-or-crash
///   category evaluated with fork) applies, else forkserver (fast, and its
///   workers are forked from a clean single-threaded server).
/// * workers: the configured count, else max(1, usable − 1), capped at 60
///   on Windows.
/// * threads per worker: max(1, usable ÷ workers).
/// * env: the thread variable of every runtime present, sorted by name.
pub fn recommend(facts: &Facts, config: &Config) -> Recommendation {
    let usable = facts
        .host
        .usable_cpus
        .as_ref()
        .map(|c| c.value)
        .unwrap_or(facts.host.logical_cpus)
        .max(1);
    let usable_why = match &facts.host.usable_cpus {
        Some(c) => format!(
            "{usable} usable CPUs ({})",
            c.evidence
                .iter()
                .map(|e| e.detail.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        None => format!("{usable} logical CPUs"),
    };
    let windows = facts.target_os == OsFamily::Windows;

    let nodes = facts
        .host
        .slurm
        .as_ref()
        .and_then(|s| s.nnodes)
        .unwrap_or(1);
    let backend = if let Some(b) = config.backend {
        Choice {
            value: b,
            reason: "set in the configuration".into(),
        }
    } else if nodes > 1 {
        Choice {
            value: Backend::Ipyparallel,
            reason: format!(
                "the Slurm allocation spans {nodes} nodes; local processes would use only one"
            ),
        }
    } else if usable == 1 {
        Choice {
            value: Backend::Single,
            reason: format!("{usable_why}: worker processes would only add overhead"),
        }
    } else {
        Choice {
            value: Backend::Multiprocessing,
            reason: format!("{usable_why} on one host"),
        }
    };

    let (workers, workers_reason) = match config.workers {
        Some(n) if windows && n > WINDOWS_MAX_WORKERS => (
            WINDOWS_MAX_WORKERS,
            format!("{n} configured, capped at {WINDOWS_MAX_WORKERS}: Windows multiprocessing handles at most 60 workers"),
        ),
        Some(n) => (n.max(1), "set in the configuration".to_string()),
        None if backend.value == Backend::Single => (1, "the single backend runs one process".to_string()),
        None if backend.value == Backend::Ipyparallel && nodes > 1 => slurm_engines(facts, nodes),
        None => {
            let n = usable.saturating_sub(1).max(1);
            if windows && n > WINDOWS_MAX_WORKERS {
                (WINDOWS_MAX_WORKERS, format!("usable CPUs − 1 = {n}, capped at {WINDOWS_MAX_WORKERS} on Windows"))
            } else {
                (n, format!("usable CPUs − 1, leaving one CPU for the parent ({usable_why})"))
            }
        }
    };
    let (threads, threads_reason) = match slurm_cpus_per_engine(facts, nodes, backend.value, workers) {
        Some(t) => t,
        None => (
            (usable / workers).max(1),
            format!(
                "max(1, {usable} usable CPUs ÷ {workers} workers): workers × threads stays within the CPUs"
            ),
        ),
    };

    let start_method = choose_start_method(facts, config, workers);
    let mut env = thread_env(facts, threads);
    // Where the start method stays unsafe (configured, or the platform
    // has no other), the hazards' own environment fix, checked by the
    // policy, replaces the thread limits it overlaps.
    let plan = |env: &[EnvSetting]| Plan {
        start_method: Some(start_method.value.clone()),
        workers: Some(workers),
        env: env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        usage: None,
    };
    // The hazards of the start method as the workers would meet them
    // without caiclust's variables, then with its thread limits (which may
    // start a pool the bare environment left at one thread): each
    // environment fix (checked by the policy) goes in over the thread
    // limits it overlaps, its variables naming the hazards they answer,
    // even where a thread limit happens to set the same value.
    let mut verdict = assess(facts, &plan(&[]), config);
    for _ in 0..3 {
        if let Some(fix) = verdict.env_fix.clone().filter(|f| !f.is_empty()) {
            let answers: Vec<String> = verdict.hazards.iter().map(|f| f.rule_id.clone()).collect();
            for e in fix {
                env.retain(|x| x.name != e.name);
                env.push(EnvSetting {
                    reason: format!(
                        "{}; makes {} safe ({})",
                        e.reason,
                        start_method.value,
                        answers.join(", ")
                    ),
                    answers: answers.clone(),
                    ..e
                });
            }
            env.sort_by(|a, b| a.name.cmp(&b.name));
        }
        verdict = assess(facts, &plan(&env), config);
        if verdict.env_fix.as_ref().is_none_or(Vec::is_empty) {
            break;
        }
    }

    Recommendation {
        backend,
        start_method,
        workers: Choice {
            value: workers,
            reason: workers_reason,
        },
        threads_per_worker: Choice {
            value: threads,
            reason: threads_reason,
        },
        env,
        verdict,
    }
}

/// Engines for an allocation over several nodes: one per task
/// (`SLURM_NTASKS`), else one per allocated CPU (`SLURM_JOB_CPUS_PER_NODE`),
/// else one per node.
fn slurm_engines(facts: &Facts, nodes: usize) -> (usize, String) {
    let alloc = facts.host.slurm.as_ref();
    if let Some(n) = alloc.and_then(|a| a.ntasks).filter(|n| *n > 0) {
        return (
            n,
            format!(
                "one engine per task of the Slurm allocation (SLURM_NTASKS={n}, {nodes} nodes)"
            ),
        );
    }
    if let Some(n) = alloc.and_then(|a| a.total_cpus()) {
        return (n, format!("one engine per CPU of the Slurm allocation ({n} CPUs on {nodes} nodes, SLURM_JOB_CPUS_PER_NODE)"));
    }
    (
        nodes,
        format!("one engine per node of the Slurm allocation ({nodes} nodes)"),
    )
}

/// Threads per engine in an allocation over several nodes: the CPUs each
/// task has (`SLURM_CPUS_PER_TASK`, else the allocation's CPUs ÷ engines).
fn slurm_cpus_per_engine(
    facts: &Facts,
    nodes: usize,
    backend: Backend,
    engines: usize,
) -> Option<(usize, String)> {
    if nodes <= 1 || backend != Backend::Ipyparallel {
        return None;
    }
    let alloc = facts.host.slurm.as_ref()?;
    if let Some(n) = alloc.cpus_per_task.filter(|n| *n > 0) {
        return Some((
            n,
            format!("SLURM_CPUS_PER_TASK={n}: each engine's task has {n} CPUs"),
        ));
    }
    let total = alloc.total_cpus()?;
    let per = (total / engines.max(1)).max(1);
    Some((
        per,
        format!("max(1, {total} CPUs of the allocation ÷ {engines} engines)"),
    ))
}

fn choose_start_method(facts: &Facts, config: &Config, workers: usize) -> Choice<String> {
    if let Some(m) = &config.start_method {
        return Choice {
            value: m.clone(),
            reason: "set in the configuration".into(),
        };
    }
    match facts.target_os {
        OsFamily::Windows => Choice { value: "spawn".into(), reason: "Windows has only spawn".into() },
        OsFamily::Macos => Choice {
            value: "spawn".into(),
            reason: "macOS system frameworks (Accelerate, Objective-C runtime) do not survive fork; spawn is the default since Python 3.8".into(),
        },
        OsFamily::Linux | OsFamily::Other => {
            let fork = Plan {
                start_method: Some("fork".into()),
                workers: Some(workers),
                ..Plan::default()
            };
            let verdict = assess(facts, &fork, config);
            match verdict.safer_start_method() {
                Some(m) if verdict.start_method_unsafe() => Choice {
                    value: m.to_string(),
                    reason: format!(
                        "fork is unsafe here ({}); {m} forks workers from a clean single-threaded server and starts them faster than spawn",
                        verdict
                            .start_method_findings()
                            .map(|f| format!("{} {}: {}", f.rule_id, f.rule_name, f.message))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                },
                _ => Choice {
                    value: "fork".into(),
                    reason: "no runtime here is unsafe across fork, and fork starts workers fastest (set it explicitly: Python 3.14 defaults to forkserver)".into(),
                },
            }
        }
    }
}

/// The thread variables for every runtime present, sorted by name: each
/// runtime's own limit variable (the table in [`crate::threads`]), and
/// those of packages with pools of their own.
fn thread_env(facts: &Facts, threads: usize) -> Vec<EnvSetting> {
    let mut env: BTreeMap<&'static str, (String, String)> = BTreeMap::new();
    let n = threads.to_string();
    let libs: Vec<&Library> = facts
        .libraries
        .iter()
        .filter(|l| l.forwards_to.is_none())
        .collect();
    let mut add = |var: &'static str, value: &str, why: String| {
        env.entry(var).or_insert_with(|| (value.to_string(), why));
    };
    for l in &libs {
        if l.vendor.value == Vendor::Accelerate && facts.target_os != OsFamily::Macos {
            continue;
        }
        let Some(sizing) = pool_sizing(l) else {
            continue;
        };
        let name = l
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let var = sizing.limit_variable();
        let why = if sizing.ignores.is_empty() {
            format!("limits the {} pool of {name}", sizing.runtime)
        } else {
            format!(
                "limits the {} pool of {name}, which ignores {}",
                sizing.runtime,
                sizing.ignores.join(" and ")
            )
        };
        add(var, &n, why);
    }
    let has_gomp = libs.iter().any(|l| l.vendor.value == Vendor::GnuOpenmp);
    if let Some(l) = libs.iter().find(|l| l.vendor.value == Vendor::Mkl) {
        if has_gomp {
            add(
                "MKL_THREADING_LAYER",
                "GNU",
                format!(
                    "MKL ({}) and GNU libgomp share a process: MKL must use the GNU layer",
                    l.path.display()
                ),
            );
        }
    }
    for p in &facts.packages {
        let Some(pool) = PACKAGE_POOLS.iter().find(|x| x.package == p.name) else {
            continue;
        };
        for var in pool.sized_by {
            add(
                var,
                &n,
                format!("limits the pool of {} ({})", p.name, p.path.display()),
            );
        }
    }
    env.into_iter()
        .map(|(name, (value, why))| EnvSetting {
            name: name.to_string(),
            value,
            reason: format!(
                "{why}; {threads} thread(s) per worker, set before the interpreter starts"
            ),
            answers: Vec::new(),
        })
        .collect()
}
