//! Worker processes: the Rust worker entry hook, the registry of Rust task
//! functions, and the wire protocol shared with the Python worker.
//!
//! A program that runs Rust tasks calls [`serve_if_requested`] first thing
//! in `main`. In the parent it returns at once; in a worker process (the
//! same binary, started by a cluster with `CAICLUST_WORKER` set) it serves
//! tasks and exits, never returning.

#[cfg(unix)]
pub(crate) mod fork;
pub(crate) mod protocol;
#[cfg(unix)]
pub(crate) mod server;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use protocol::{TaskError, ToParent, ToWorker};

/// The Python worker program, run with `python -c`.
pub(crate) const PYTHON_WORKER: &str = include_str!("python_worker.py");

/// The environment variable that turns a process into a worker: `rust`
/// (a worker on stdin/stdout) or `rust-server` (a fork server; the socket
/// path follows in `CAICLUST_WORKER_SOCKET`).
pub const WORKER_ENV: &str = "CAICLUST_WORKER";
pub(crate) const WORKER_SOCKET_ENV: &str = "CAICLUST_WORKER_SOCKET";

type TaskFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync + 'static;

/// Rust task functions by name.
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<String, Arc<TaskFn>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.functions.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Register a function of JSON values.
    pub fn register_json<F>(mut self, name: &str, f: F) -> Registry
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.functions.insert(name.to_string(), Arc::new(f));
        self
    }

    /// Register a typed function: its argument is deserialised from the
    /// task's JSON arguments and its result serialised back.
    pub fn register<A, R, F>(self, name: &str, f: F) -> Registry
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(A) -> R + Send + Sync + 'static,
    {
        let fname = name.to_string();
        self.register_json(name, move |v| {
            let arg: A =
                serde_json::from_value(v).map_err(|e| format!("bad arguments for {fname}: {e}"))?;
            serde_json::to_value(f(arg)).map_err(|e| format!("{fname}: result: {e}"))
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }

    pub(crate) fn call(&self, name: &str, args: Value) -> Result<Value, TaskError> {
        let Some(f) = self.functions.get(name) else {
            return Err(TaskError {
                type_name: "UnknownFunction".into(),
                message: format!(
                    "no Rust task function named '{name}' is registered in this binary (known: {})",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
                traceback: String::new(),
            });
        };
        match catch_unwind(AssertUnwindSafe(|| f(args))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(message)) => Err(TaskError {
                type_name: "Error".into(),
                message,
                traceback: String::new(),
            }),
            Err(payload) => Err(TaskError {
                type_name: "panic".into(),
                message: panic_message(payload.as_ref()),
                traceback: String::new(),
            }),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// If this process was started as a caiclust worker, serve tasks with
/// `registry` and exit; otherwise return at once. Call it first in `main`.
pub fn serve_if_requested(registry: &Registry) {
    let Ok(mode) = std::env::var(WORKER_ENV) else {
        return;
    };
    let code = match mode.as_str() {
        "rust" => {
            let (inp, out) = private_channel();
            serve_loop(registry, inp, out, None);
            0
        }
        #[cfg(unix)]
        "rust-server" => match std::env::var(WORKER_SOCKET_ENV) {
            Ok(socket) => match private_channel_files() {
                Some((inp, out)) => {
                    server::serve(registry, inp, out, std::path::Path::new(&socket))
                }
                None => {
                    eprintln!("caiclust worker: cannot duplicate the standard streams");
                    2
                }
            },
            Err(_) => {
                eprintln!("caiclust worker: {WORKER_SOCKET_ENV} is not set");
                2
            }
        },
        other => {
            eprintln!("caiclust worker: unknown {WORKER_ENV}={other}");
            2
        }
    };
    std::process::exit(code);
}

/// Private copies of stdin and stdout for the protocol; the task's own
/// prints go to stderr (on Unix; on Windows the streams are shared).
fn private_channel() -> (Box<dyn Read + Send>, Box<dyn Write + Send>) {
    #[cfg(unix)]
    if let Some((inp, out)) = private_channel_files() {
        return (Box::new(inp), Box::new(out));
    }
    (Box::new(std::io::stdin()), Box::new(std::io::stdout()))
}

#[cfg(unix)]
fn private_channel_files() -> Option<(std::fs::File, std::fs::File)> {
    {
        use std::os::fd::FromRawFd;
        // SAFETY: dup/dup2/open/close on the process's own standard
        // descriptors; the new descriptors are owned by the Files below and
        // nothing else refers to them.
        unsafe {
            // Close-on-exec copies: a task's child processes must not hold
            // the protocol open (the parent sees a worker's end as EOF).
            let rfd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
            let wfd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
            if rfd >= 0 && wfd >= 0 {
                let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                if devnull >= 0 {
                    libc::dup2(devnull, 0);
                    libc::close(devnull);
                }
                libc::dup2(2, 1);
                return Some((
                    std::fs::File::from_raw_fd(rfd),
                    std::fs::File::from_raw_fd(wfd),
                ));
            }
        }
    }
    None
}

/// How long an answer may wait to be sent with others. Tiny tasks share
/// one write (and one wake-up of the parent); a long task never holds back
/// the answers before it by more than this, so the parent's view of which
/// task is running (for timeouts and crash blame) stays within it.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(1);

/// Answers waiting to be written, shared with the flusher thread.
struct Pending {
    buf: Vec<u8>,
    since: Option<std::time::Instant>,
    out: Box<dyn Write + Send>,
    broken: bool,
    closed: bool,
}

impl Pending {
    fn flush(&mut self) {
        if !self.buf.is_empty()
            && !self.broken
            && self
                .out
                .write_all(&self.buf)
                .and_then(|_| self.out.flush())
                .is_err()
        {
            self.broken = true;
        }
        self.buf.clear();
        self.since = None;
    }
}

type Shared = std::sync::Arc<(std::sync::Mutex<Pending>, std::sync::Condvar)>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    shared.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// Write answers that waited `FLUSH_AFTER`, until the worker closes.
fn flusher(shared: Shared) {
    let mut p = lock(&shared);
    loop {
        while p.since.is_none() && !p.closed {
            p = shared.1.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if p.closed {
            return;
        }
        let due = p.since.map(|t| t + FLUSH_AFTER);
        let now = std::time::Instant::now();
        match due {
            Some(due) if due > now => {
                p = shared
                    .1
                    .wait_timeout(p, due - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            _ => p.flush(),
        }
    }
}

/// Say hello, then serve tasks until the parent says stop or goes away.
pub(crate) fn serve_loop(
    registry: &Registry,
    inp: Box<dyn Read + Send>,
    mut out: Box<dyn Write + Send>,
    worker: Option<u64>,
) {
    let hello = ToParent::Hello {
        hello: protocol::Hello {
            pid: std::process::id(),
            worker,
        },
    };
    if protocol::write_line(&mut out, &hello).is_err() {
        return;
    }
    let shared: Shared = std::sync::Arc::new((
        std::sync::Mutex::new(Pending {
            buf: Vec::with_capacity(1 << 16),
            since: None,
            out,
            broken: false,
            closed: false,
        }),
        std::sync::Condvar::new(),
    ));
    let flusher_shared = shared.clone();
    let flusher = std::thread::Builder::new()
        .name("caiclust-answers".into())
        .spawn(move || flusher(flusher_shared));
    serve_tasks(registry, inp, &shared);
    {
        let mut p = lock(&shared);
        p.flush();
        p.closed = true;
    }
    shared.1.notify_all();
    if let Ok(f) = flusher {
        let _ = f.join();
    }
}

fn serve_tasks(registry: &Registry, inp: Box<dyn Read + Send>, shared: &Shared) {
    let mut reader = BufReader::with_capacity(1 << 16, inp);
    let mut line = Vec::new();
    let mut answer = Vec::with_capacity(256);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let msg: ToWorker = match serde_json::from_slice(&line) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("caiclust worker: bad message from the parent: {e}");
                return;
            }
        };
        let Some(ids) = msg.ids else {
            // {"stop": true}, or anything else that is not work.
            return;
        };
        let n = ids.len();
        let mut args = msg.a.into_iter();
        for (i, id) in ids.into_iter().enumerate() {
            let name = match (&msg.f, &msg.fs) {
                (Some(f), _) => f.as_ref(),
                (None, Some(fs)) => fs.get(i).map_or("", |f| f.as_ref()),
                (None, None) => "",
            };
            let result = registry.call(name, args.next().unwrap_or(Value::Null));
            answer.clear();
            protocol::encode_answer(&mut answer, id, result);
            let mut p = lock(shared);
            p.buf.extend_from_slice(&answer);
            if i + 1 == n {
                // The batch is done: nothing would come to share the write.
                p.flush();
            } else if p.since.is_none() {
                // The first answer waiting: the flusher writes it (and any
                // after it) within FLUSH_AFTER. One clock reading per
                // write, not per task.
                p.since = Some(std::time::Instant::now());
                drop(p);
                shared.1.notify_one();
                continue;
            }
            if p.broken {
                return;
            }
        }
    }
}
