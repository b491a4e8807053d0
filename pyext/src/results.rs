//! A task's result as the Python side reads it: a plain tuple
//! `(id, status, value, pid, attempts)`, cheap to build and to unpack.
//!
//! | status        | value                                              |
//! |---------------|----------------------------------------------------|
//! | `"ok"`        | the pickled return value (a `bytearray`: arrays     |
//! |               | unpickled from it are writable), or `None`          |
//! | `"exception"` | `(type name, message, traceback text)`: raised      |
//! |               | outside the call itself (unpickling its arguments,  |
//! |               | pickling its result)                                |
//! | `"failed"`    | `(kind, message)`: `worker_died`, `timed_out`,      |
//! |               | `hung`, `start`, `error` or `exit`, and the         |
//! |               | message that names the cause                        |
//! | `"cancelled"` | the reason                                          |

use caiclust_core::{Failure, Outcome, TaskResult};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyTuple};
use pyo3::IntoPyObjectExt;

/// The tuple for one result.
pub(crate) fn result_tuple(py: Python<'_>, r: TaskResult) -> PyResult<Bound<'_, PyTuple>> {
    let pid = r.pid;
    let attempts = r.attempts;
    let id = r.id;
    let (status, value): (&str, Py<PyAny>) = match r.outcome {
        Outcome::Succeeded { .. } => match &r.payload {
            Some(bytes) => ("ok", PyByteArray::new(py, bytes).into_any().unbind()),
            None => ("ok", py.None()),
        },
        Outcome::Failed { failure } => match failure {
            Failure::Exception {
                type_name,
                message,
                traceback,
            } => (
                "exception",
                (type_name, message, traceback).into_py_any(py)?,
            ),
            other => (
                "failed",
                (failure_kind(&other), other.to_string()).into_py_any(py)?,
            ),
        },
        Outcome::Cancelled { reason } => ("cancelled", reason.into_py_any(py)?),
    };
    PyTuple::new(
        py,
        [
            id.into_py_any(py)?,
            status.into_py_any(py)?,
            value,
            pid.into_py_any(py)?,
            attempts.into_py_any(py)?,
        ],
    )
}

/// The failure's kind, as the Python side names its exceptions.
fn failure_kind(f: &Failure) -> &'static str {
    match f {
        Failure::Exit { .. } => "exit",
        Failure::TimedOut { .. } => "timed_out",
        Failure::Hung { .. } => "hung",
        Failure::Exception { .. } => "exception",
        Failure::Error { .. } => "error",
        Failure::WorkerDied { .. } => "worker_died",
        Failure::Start { .. } => "start",
    }
}
