//! `caiclust._core.Cluster`: the Rust core's cluster for the Python
//! package. It is built from the hazard policy's plan (workers, start
//! method, thread limits) with any explicit choices on top, runs pickled
//! calls on Python workers, and hands results back in groups.
//!
//! Submitting and receiving happen on different Python threads (the
//! pool's caller and its result handler): sends go through the core's
//! [`Submitter`], which any thread may use, and receiving holds the
//! cluster itself behind a lock. Waits release the GIL.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use caiclust_core::{Cluster, ClusterBuilder, StartMethod, Submitter, Task};
use caiclust_rules::Backend;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::results::result_tuple;

/// The choices a Python pool passes; everything unset comes from the
/// policy's recommendation.
#[derive(Default)]
struct Choices {
    python: String,
    workers: Option<usize>,
    start_method: Option<String>,
    backend: Option<String>,
    preload: Vec<String>,
    env: BTreeMap<String, String>,
    timeout: Option<f64>,
    maxtasksperchild: Option<u64>,
    stall_after: Option<f64>,
    force_fork: bool,
}

impl Choices {
    fn builder(&self) -> PyResult<ClusterBuilder> {
        // A Python pool's workers start with it, as multiprocessing's do:
        // its first call finds them forked (or forking).
        let mut b = Cluster::builder()
            .auto(true)
            .python(&self.python)
            .force_fork(self.force_fork)
            .python_workers_now(true);
        if let Some(n) = self.workers {
            b = b.workers(n);
        }
        if let Some(m) = &self.start_method {
            let m: StartMethod = m.parse().map_err(PyValueError::new_err)?;
            b = b.start_method(m);
        }
        if let Some(name) = &self.backend {
            let backend: Backend = name.parse().map_err(PyValueError::new_err)?;
            b = b.backend(backend);
        }
        // The template imports them, whichever start method the policy
        // picks (fork: a template of the task modules; forkserver: a
        // clean server with them preloaded).
        for m in &self.preload {
            b = b.preload(m.clone()).forkserver_preload(m.clone());
        }
        for (k, v) in &self.env {
            b = b.env(k.clone(), v.clone());
        }
        if let Some(t) = self.timeout {
            b = b.timeout(seconds("timeout", t)?);
        }
        if let Some(n) = self.maxtasksperchild {
            b = b.recycle_after(n);
        }
        if let Some(t) = self.stall_after {
            b = b.stall_after(seconds("stall_after", t)?);
        }
        Ok(b)
    }
}

/// A positive, finite number of seconds.
pub(crate) fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    if s.is_finite() && s > 0.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(PyValueError::new_err(format!(
            "{what} must be a positive number of seconds, got {s}"
        )))
    }
}

/// The plan a cluster runs, as JSON for the Python side: workers, start
/// method, the environment the workers get, threads per worker, the
/// policy's verdict and the recommendation it came from.
fn plan_json(cluster: &Cluster) -> String {
    let s = cluster.settings();
    let advice = cluster.advice();
    serde_json::json!({
        "workers": s.workers,
        "start_method": s.start_method.as_str(),
        "env": s.env,
        "python": s.python,
        "preload": s.forkserver_preload,
        "threads_per_worker": advice.map(|a| a.recommendation.threads_per_worker.value),
        "recommendation": advice.map(|a| &a.recommendation),
        "verdict": advice.map(|a| &a.verdict),
        "verdict_summary": advice.map(|a| a.verdict.summary()),
    })
    .to_string()
}

#[pyclass(module = "caiclust._core", name = "Cluster")]
pub struct PyCluster {
    submitter: Submitter,
    /// `None` once shut down.
    cluster: Mutex<Option<Cluster>>,
    plan: String,
}

#[pymethods]
impl PyCluster {
    /// Start a cluster for `python` (workers start with the first tasks).
    #[new]
    #[pyo3(signature = (python, workers=None, start_method=None, backend=None, preload=Vec::new(), env=BTreeMap::new(), timeout=None, maxtasksperchild=None, stall_after=None, force_fork=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        python: String,
        workers: Option<usize>,
        start_method: Option<String>,
        backend: Option<String>,
        preload: Vec<String>,
        env: BTreeMap<String, String>,
        timeout: Option<f64>,
        maxtasksperchild: Option<u64>,
        stall_after: Option<f64>,
        force_fork: bool,
    ) -> PyResult<PyCluster> {
        if workers == Some(0) {
            return Err(PyValueError::new_err("workers must be at least 1"));
        }
        if maxtasksperchild == Some(0) {
            return Err(PyValueError::new_err(
                "maxtasksperchild must be a positive integer or None",
            ));
        }
        let choices = Choices {
            python,
            workers,
            start_method,
            backend,
            preload,
            env,
            timeout,
            maxtasksperchild,
            stall_after,
            force_fork,
        };
        let builder = choices.builder()?;
        // Probing the environment runs the interpreter: without the GIL.
        let cluster = py
            .detach(|| builder.build())
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(PyCluster {
            submitter: cluster.submitter(),
            plan: plan_json(&cluster),
            cluster: Mutex::new(Some(cluster)),
        })
    }

    /// The plan as JSON (see `plan_json`).
    #[getter]
    fn plan(&self) -> String {
        self.plan.clone()
    }

    /// Queue `function` (`module:qualname`) called with the pickled
    /// `(args, kwargs)` in `payload`; its id.
    #[pyo3(signature = (function, payload, timeout=None))]
    fn submit(&self, function: String, payload: &[u8], timeout: Option<f64>) -> PyResult<u64> {
        let task = Self::task(function, payload.to_vec(), timeout)?;
        Ok(self.submitter.submit(task))
    }

    /// Queue one task per payload, all calling `function`; their ids
    /// (consecutive).
    #[pyo3(signature = (function, payloads, timeout=None))]
    fn submit_many(
        &self,
        function: String,
        payloads: Vec<Bound<'_, PyBytes>>,
        timeout: Option<f64>,
    ) -> PyResult<Vec<u64>> {
        let mut tasks = Vec::with_capacity(payloads.len());
        for p in &payloads {
            tasks.push(Self::task(
                function.clone(),
                p.as_bytes().to_vec(),
                timeout,
            )?);
        }
        Ok(self.submitter.submit_many(tasks))
    }

    /// Stop a task: a queued one never starts, a running one is killed
    /// with its process tree. Its result says cancelled.
    fn cancel(&self, id: u64) {
        self.submitter.cancel(id);
    }

    /// Cancel those of `ids` that have not started.
    fn withdraw(&self, ids: Vec<u64>) {
        self.submitter.withdraw(ids);
    }

    /// The results that arrive within `timeout` seconds (at least one
    /// unless the time runs out or nothing is outstanding), as tuples
    /// `(id, status, value, pid, attempts)`; see `results::result_tuple`.
    /// An empty list and `outstanding() == 0` mean nothing more will come.
    fn recv_many<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyList>> {
        let wait = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        let got = py.detach(|| {
            let guard = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
            let Some(cluster) = guard.as_ref() else {
                return Vec::new();
            };
            let mut got = Vec::new();
            if let Some(first) = cluster.recv_timeout(wait) {
                got.push(first);
                // Whatever else already arrived, without waiting.
                while got.len() < 4096 {
                    match cluster.recv_timeout(Duration::ZERO) {
                        Some(r) => got.push(r),
                        None => break,
                    }
                }
            }
            got
        });
        let list = PyList::empty(py);
        for r in got {
            list.append(result_tuple(py, r)?)?;
        }
        Ok(list)
    }

    /// Tasks submitted whose results were not yet received.
    fn outstanding(&self) -> u64 {
        let guard = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map_or(0, |c| c.outstanding())
    }

    /// Messages about workers and stalls since the last call.
    fn notices(&self) -> Vec<(Option<u64>, String)> {
        let guard = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map_or_else(Vec::new, |c| {
            c.notices()
                .into_iter()
                .map(|n| (n.task, n.message))
                .collect()
        })
    }

    /// Stop the workers: after the queued tasks finish (`kill=False`) or
    /// at once, killing running tasks (`kill=True`). Waits for them.
    #[pyo3(signature = (kill=false))]
    fn shutdown(&self, py: Python<'_>, kill: bool) {
        py.detach(|| {
            let taken = self
                .cluster
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(c) = taken {
                if kill {
                    c.kill();
                } else {
                    c.shutdown();
                }
            }
        });
    }

    /// Whether `shutdown` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }
}

impl PyCluster {
    fn task(function: String, payload: Vec<u8>, timeout: Option<f64>) -> PyResult<Task> {
        let task = Task::python_pickled(function, payload);
        Ok(match timeout {
            Some(t) => task.timeout(seconds("timeout", t)?),
            None => task,
        })
    }
}

impl Drop for PyCluster {
    fn drop(&mut self) {
        // The core's own Drop kills the workers; taken here so that a
        // cluster dropped by the garbage collector never waits on tasks.
        let taken = self
            .cluster
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = taken {
            c.kill();
        }
    }
}
