//! The recommendation: how to run parallel work safely on these facts.
//! Deterministic: the same facts and configuration give the same advice.

use std::collections::BTreeMap;

use caiclust_probe::{Facts, Library, OsFamily, ThreadingLayer, Vendor};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::context::{Context, Plan};
use crate::finding::Category;
use crate::registry::all_rules;
use crate::rules::WINDOWS_MAX_WORKERS;

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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvSetting {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// The advice, each choice with its reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recommendation {
    pub backend: Choice<Backend>,
    /// `spawn`, `forkserver` or `fork` (for multiprocessing).
    pub start_method: Choice<String>,
    pub workers: Choice<usize>,
    /// Threads each worker's runtimes may use.
    pub threads_per_worker: Choice<usize>,
    /// Variables to set in every worker's environment, sorted by name.
    pub env: Vec<EnvSetting>,
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
        None => {
            let n = usable.saturating_sub(1).max(1);
            if windows && n > WINDOWS_MAX_WORKERS {
                (WINDOWS_MAX_WORKERS, format!("usable CPUs − 1 = {n}, capped at {WINDOWS_MAX_WORKERS} on Windows"))
            } else {
                (n, format!("usable CPUs − 1, leaving one CPU for the parent ({usable_why})"))
            }
        }
    };
    let threads = (usable / workers).max(1);
    let threads_reason = format!(
        "max(1, {usable} usable CPUs ÷ {workers} workers): workers × threads stays within the CPUs"
    );

    let start_method = choose_start_method(facts, config, workers);
    let env = thread_env(facts, threads);

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
    }
}

/// The rules that say fork would hang or crash here.
fn fork_hazards(facts: &Facts, config: &Config, workers: usize) -> Vec<String> {
    let plan = Plan {
        start_method: Some("fork".into()),
        workers: Some(workers),
    };
    let advisories = config.advisory_db();
    let cx = Context {
        facts,
        plan: &plan,
        advisories: &advisories,
    };
    let mut out = Vec::new();
    for rule in all_rules() {
        let info = rule.info();
        if info.category != Category::HangOrCrash || info.id == "CC010" || info.id == "CC011" {
            // CC010 (worker count) and CC011 (mixed runtimes) do not depend
            // on the start method.
            continue;
        }
        for f in rule.check(&cx) {
            out.push(format!("{} {}: {}", info.id, info.name, f.message));
        }
    }
    out
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
            let hazards = fork_hazards(facts, config, workers);
            if hazards.is_empty() {
                Choice {
                    value: "fork".into(),
                    reason: "no runtime here is unsafe across fork, and fork starts workers fastest (set it explicitly: Python 3.14 defaults to forkserver)".into(),
                }
            } else {
                Choice {
                    value: "forkserver".into(),
                    reason: format!(
                        "fork is unsafe here ({}); forkserver forks workers from a clean single-threaded server and starts them faster than spawn",
                        hazards.join("; ")
                    ),
                }
            }
        }
    }
}

/// The thread variables for every runtime present, sorted by name.
fn thread_env(facts: &Facts, threads: usize) -> Vec<EnvSetting> {
    let mut env: BTreeMap<&'static str, (String, String)> = BTreeMap::new();
    let n = threads.to_string();
    let libs: Vec<&Library> = facts
        .libraries
        .iter()
        .filter(|l| l.forwards_to.is_none())
        .collect();
    let name_of = |l: &Library| {
        l.path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut add = |var: &'static str, value: &str, why: String| {
        env.entry(var).or_insert_with(|| (value.to_string(), why));
    };
    let any_openmp = libs.iter().find(|l| {
        l.vendor.value.is_openmp()
            || l.openmp_runtime.is_some()
            || l.threading_layer
                .as_ref()
                .is_some_and(|t| t.value == ThreadingLayer::Openmp)
    });
    if let Some(l) = any_openmp {
        add(
            "OMP_NUM_THREADS",
            &n,
            format!("{} uses OpenMP, sized only by OMP_NUM_THREADS", name_of(l)),
        );
    }
    for l in &libs {
        let name = name_of(l);
        match l.vendor.value {
            Vendor::Openblas => add(
                "OPENBLAS_NUM_THREADS",
                &n,
                format!("limits the OpenBLAS pool of {name}"),
            ),
            Vendor::Mkl => add(
                "MKL_NUM_THREADS",
                &n,
                format!("limits the MKL pool of {name}"),
            ),
            Vendor::Blis => add(
                "BLIS_NUM_THREADS",
                &n,
                format!("limits the BLIS pool of {name}"),
            ),
            Vendor::Accelerate if facts.target_os == OsFamily::Macos => add(
                "VECLIB_MAXIMUM_THREADS",
                &n,
                format!("limits Accelerate/vecLib ({name})"),
            ),
            Vendor::Opencv => add(
                "OPENCV_FOR_THREADS_NUM",
                &n,
                format!("limits OpenCV's parallel_for in {name}"),
            ),
            _ => {}
        }
    }
    if let Some(l) = libs
        .iter()
        .find(|l| l.vendor.value == Vendor::Openblas && l.openmp_runtime.is_some())
    {
        add(
            "OMP_NUM_THREADS",
            &n,
            format!(
                "{} is an OpenMP build of OpenBLAS, which ignores OPENBLAS_NUM_THREADS",
                name_of(l)
            ),
        );
    }
    let has_gomp = libs.iter().any(|l| l.vendor.value == Vendor::GnuOpenmp);
    if let Some(l) = libs.iter().find(|l| l.vendor.value == Vendor::Mkl) {
        if has_gomp {
            add(
                "MKL_THREADING_LAYER",
                "GNU",
                format!(
                    "MKL ({}) and GNU libgomp share a process: MKL must use the GNU layer",
                    name_of(l)
                ),
            );
        }
    }
    for p in &facts.packages {
        match p.name.as_str() {
            "numexpr" => {
                add(
                    "NUMEXPR_NUM_THREADS",
                    &n,
                    format!("limits numexpr ({})", p.path.display()),
                );
                add(
                    "NUMEXPR_MAX_THREADS",
                    &n,
                    format!("sizes numexpr's pool ({})", p.path.display()),
                );
            }
            "numba" => add(
                "NUMBA_NUM_THREADS",
                &n,
                format!("limits numba's parallel pool ({})", p.path.display()),
            ),
            "cv2" => add(
                "OPENCV_FOR_THREADS_NUM",
                &n,
                format!("limits OpenCV's parallel_for ({})", p.path.display()),
            ),
            _ => {}
        }
    }
    env.into_iter()
        .map(|(name, (value, why))| EnvSetting {
            name: name.to_string(),
            value,
            reason: format!(
                "{why}; {threads} thread(s) per worker, set before the interpreter starts"
            ),
        })
        .collect()
}
