//! Live probing: what a running process has loaded, and the libraries'
//! own answers about themselves.
//!
//! * [`probe_pid`] reads a running process from outside (`/proc/PID`): its
//!   mapped libraries, threads, initial environment, command line.
//! * [`probe_python_imports`] starts an interpreter with a chosen
//!   environment, imports the given modules as the user's program would,
//!   adds Python-level facts (start method, active threads,
//!   `cv2.getNumThreads()`, `numba.threading_layer()`), then reads that
//!   process from outside. threadpoolctl is not needed.
//!
//! Both classify the mapped libraries with the same fingerprints as the
//! static probe, and then ask each BLAS and OpenMP runtime about itself in
//! a throw-away child process (see [`crate::query_runtime`]). Runtime
//! answers take precedence over static readings; where the two disagree,
//! the disagreement is kept in [`RuntimeAnswer::disagreements`]. Each query
//! child first loads the files the process had loaded for the library's
//! dependencies (`live/load_first.rs`), so that a library that relies on
//! them being loaded already (numpy 1.x's OpenBLAS and its bundled
//! libgfortran) loads in the child as it did in the process.

mod load_first;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::{current_env, relevant_env};
use crate::error::ProbeError;
use crate::facts::{
    Api, Conclusion, Confidence, Evidence, EvidenceSource, Facts, Library, OsFamily, ProcessFacts,
    PythonRuntime, RuntimeAnswer, Subject, SCHEMA_VERSION,
};
use crate::host::collect_host;
use crate::probe::ProbeOptions;
use crate::process::read_process;
use crate::python::{discover_python, query_python};
use crate::resolve::Loader;
use crate::runtime::{query_runtime_after, RuntimeQuery, RuntimeQueryOptions};
use crate::scan::{scan, ScanMode, ScanRequest};

/// The embedded start-and-import script.
const IMPORT_SCRIPT: &str = include_str!("live/import.py");

/// How live probing runs its helpers.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The program that serves runtime queries: one whose `main` calls
    /// [`crate::serve_runtime_query_if_requested`] first. Default: this
    /// program. `None` skips runtime queries.
    pub query_helper: Option<PathBuf>,
    /// Arguments put first on the helper's command line (see
    /// [`RuntimeQueryOptions::helper_args`]). Default: none.
    pub query_helper_args: Vec<OsString>,
    /// Deadline for each runtime query.
    pub query_deadline: Duration,
    /// Deadline for the interpreter to import the modules (`--import`).
    pub import_deadline: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            query_helper: std::env::current_exe().ok(),
            query_helper_args: Vec::new(),
            query_deadline: Duration::from_secs(10),
            import_deadline: Duration::from_secs(120),
        }
    }
}

/// Probe a running process by pid.
///
/// # Platform-specific behaviour
/// Linux reads `/proc/PID`; other systems return an error for now.
pub fn probe_pid(pid: u32, live: &LiveOptions) -> Result<Facts, ProbeError> {
    let collected_at_unix = crate::probe::now_unix();
    let process = read_process(pid)?;
    facts_for_process(process, live, collected_at_unix, None)
}

/// Start `options.python` (or the discovered interpreter) with
/// `options.env`, import `modules`, and probe that process.
pub fn probe_python_imports(
    options: &ProbeOptions,
    modules: &[String],
    live: &LiveOptions,
) -> Result<Facts, ProbeError> {
    let collected_at_unix = crate::probe::now_unix();
    let env = options.env.clone().unwrap_or_else(current_env);
    let (exe, source) = discover_python(options.python.as_deref(), &env)?;
    let python = query_python(&exe, source)?;
    for m in modules {
        if m.is_empty()
            || !m
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            return Err(ProbeError::PythonQuery {
                path: exe.clone(),
                reason: format!("'{m}' is not a module name"),
            });
        }
    }
    let mut command = Command::new(&exe);
    command
        .arg("-c")
        .arg(IMPORT_SCRIPT)
        .args(modules)
        .env_clear()
        .envs(&env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        crate::spawn::spawn_retrying(&mut command).map_err(|e| ProbeError::PythonQuery {
            path: exe.clone(),
            reason: format!("cannot start it: {e}"),
        })?;
    let pid = child.id();
    // One JSON line, read on a thread so the deadline holds even if the
    // imports hang.
    let stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out.take(1 << 20)).read_line(&mut line);
        }
        let _ = tx.send(line);
    });
    let started = Instant::now();
    let line = rx.recv_timeout(live.import_deadline);
    let finish = |child: &mut std::process::Child| {
        // Closing stdin lets the script end; kill it if it doesn't.
        drop(child.stdin.take());
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    let line = match line {
        Ok(l) if !l.trim().is_empty() => l,
        other => {
            finish(&mut child);
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = (&mut e).take(16 << 10).read_to_string(&mut stderr);
            }
            let reason = if other.is_err() {
                format!(
                    "importing {} did not finish within {:.0} s",
                    modules.join(", "),
                    started.elapsed().as_secs_f64()
                )
            } else {
                format!("it exited before answering; stderr: {}", stderr.trim())
            };
            return Err(ProbeError::PythonQuery { path: exe, reason });
        }
    };
    let runtime: PythonRuntime = match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(v) => python_runtime_from(&v),
        Err(e) => {
            finish(&mut child);
            return Err(ProbeError::PythonQuery {
                path: exe,
                reason: format!("unreadable answer from the import script: {e}"),
            });
        }
    };
    let process = read_process(pid);
    finish(&mut child);
    let mut process = process?;
    process.python_runtime = Some(runtime);
    facts_for_process(process, live, collected_at_unix, Some(python))
}

fn python_runtime_from(v: &serde_json::Value) -> PythonRuntime {
    let strings = |key: &str| -> Vec<String> {
        v.get(key)
            .and_then(|x| x.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    PythonRuntime {
        imported: strings("imported"),
        import_errors: v
            .get("import_errors")
            .and_then(|x| x.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, e)| (k.clone(), e.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        default_start_method: v
            .get("default_start_method")
            .and_then(|x| x.as_str())
            .map(str::to_owned),
        active_threads: v
            .get("active_threads")
            .and_then(|x| x.as_u64())
            .map(|n| n as usize),
        cv2_num_threads: v.get("cv2_num_threads").and_then(|x| x.as_i64()),
        numba_threading_layer: v
            .get("numba_threading_layer")
            .and_then(|x| x.as_str())
            .map(str::to_owned),
    }
}

/// Classify what the process mapped, ask the runtimes, assemble facts.
fn facts_for_process(
    process: ProcessFacts,
    live: &LiveOptions,
    collected_at_unix: u64,
    python: Option<crate::facts::PythonEnv>,
) -> Result<Facts, ProbeError> {
    let env = process.initial_env.clone();
    let exe_dir = process
        .executable
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let result = scan(ScanRequest {
        roots: process.mapped_libraries.clone(),
        mode: ScanMode::Mapped,
        loader: Loader::for_host(&env, exe_dir),
        runtime_dirs: Vec::new(),
    });
    let mut libraries = result.libraries;
    if let Some(helper) = &live.query_helper {
        let options = RuntimeQueryOptions {
            helper: helper.clone(),
            helper_args: live.query_helper_args.clone(),
            env: process.initial_env.clone(),
            affinity: process.affinity.clone(),
            deadline: live.query_deadline,
        };
        ask_runtimes(&mut libraries, &process.mapped_libraries, &options);
    }
    let executable = process
        .executable
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("pid {}", process.pid)));
    Ok(Facts {
        schema_version: SCHEMA_VERSION,
        producer: crate::probe::producer(),
        collected_at_unix,
        subject: Subject::Process {
            pid: process.pid,
            executable,
        },
        target_os: OsFamily::current(),
        host: collect_host(&env),
        python,
        packages: result.packages,
        libraries,
        duplicates: result.duplicates,
        env: relevant_env(env),
        scan: result.summary,
        process: Some(process),
    })
}

/// Ask every BLAS and OpenMP runtime about itself, in parallel, each in its
/// own throw-away process with the probed process's environment and CPUs,
/// loading first what the process had loaded for it (from `mapped`).
fn ask_runtimes(libraries: &mut [Library], mapped: &[PathBuf], options: &RuntimeQueryOptions) {
    let wanted: Vec<usize> = libraries
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.format.is_some()
                && l.forwards_to.is_none()
                && l.apis.iter().any(|a| matches!(a, Api::Blas | Api::Openmp))
        })
        .map(|(i, _)| i)
        .collect();
    let mut mapped = load_first::MappedFiles::new(mapped);
    let queries: Vec<_> = wanted
        .iter()
        .map(|&i| {
            let lib = &libraries[i];
            (
                i,
                RuntimeQuery::for_library(lib),
                mapped.load_first(&lib.path),
            )
        })
        .collect();
    let answers: Vec<(usize, RuntimeAnswer)> = std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .iter()
            .map(|(i, query, first)| {
                s.spawn(move || (*i, query_runtime_after(query, first, options)))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (i, answer) in answers {
        merge_runtime(&mut libraries[i], answer);
    }
}

/// Runtime answers take precedence; disagreements stay visible.
pub(crate) fn merge_runtime(lib: &mut Library, mut answer: RuntimeAnswer) {
    let calls = answer.calls.join(", ");
    if let Some(version) = answer.version.clone() {
        if let Some(stat) = &lib.version {
            if stat.value != version {
                answer.disagreements.push(format!(
                    "version: the binary says {} ({}), the library answers {version}",
                    stat.value,
                    describe(&stat.evidence)
                ));
            }
        }
        let mut evidence = vec![Evidence::new(
            EvidenceSource::Runtime,
            format!("{calls} → {version}"),
        )];
        if let Some(stat) = lib.version.take() {
            evidence.extend(stat.evidence);
        }
        lib.version = Some(Conclusion::new(version, Confidence::High, evidence));
    }
    if let Some(layer) = answer.threading_layer {
        if let Some(stat) = &lib.threading_layer {
            if stat.value != layer {
                answer.disagreements.push(format!(
                    "threading layer: the binary says {} ({}), the library answers {layer}",
                    stat.value,
                    describe(&stat.evidence),
                ));
            }
        }
        let mut evidence = vec![Evidence::new(
            EvidenceSource::Runtime,
            format!("{calls} → {layer}"),
        )];
        if let Some(stat) = lib.threading_layer.take() {
            evidence.extend(stat.evidence);
        }
        lib.threading_layer = Some(Conclusion::new(layer, Confidence::High, evidence));
    }
    lib.runtime = Some(answer);
}

fn describe(evidence: &[Evidence]) -> String {
    evidence
        .iter()
        .map(|e| e.detail.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}
