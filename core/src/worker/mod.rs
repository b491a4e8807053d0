//! Worker processes: the Rust worker entry hook, the registry of Rust task
//! functions (of JSON values or of bytes), and the wire protocol shared
//! with the Python worker (frames: see [`protocol`] and [`frame`]).
//!
//! A program that runs Rust tasks calls [`serve_if_requested`] first thing
//! in `main`. In the parent it returns at once; in a worker process (the
//! same binary, started by a cluster with `CAICLUST_WORKER` set) it serves
//! tasks and exits, never returning.

pub(crate) mod boot;
#[cfg(unix)]
pub(crate) mod fork;
pub(crate) mod frame;
pub(crate) mod protocol;
#[cfg(unix)]
pub(crate) mod server;
#[cfg(unix)]
pub(crate) mod standby;
#[cfg(windows)]
mod windows;

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use protocol::{TaskError, ToParent, ToWorker};

/// Stop the standby interpreters of this process that are still waiting
/// (a program that stops its cluster expects nothing of it left); how
/// many there were.
pub fn stop_standbys() -> usize {
    #[cfg(unix)]
    return standby::stop_all();
    #[cfg(not(unix))]
    0
}

/// The process id of the standby interpreter waiting for `python`, if
/// one is (started by [`prestart_python`], not yet taken by a cluster).
pub fn standby_pid(python: &std::path::Path) -> Option<u32> {
    #[cfg(unix)]
    return standby::waiting_pid(python);
    #[cfg(not(unix))]
    {
        let _ = python;
        None
    }
}

/// Start a standby Python interpreter for `python` in the background, so
/// that the next cluster's fork template is ready when it starts (see
/// `worker/standby.rs`). `imports` are standard-library modules it loads
/// while it waits. False where there are no fork servers (Windows) or no
/// standby can start.
pub fn prestart_python(python: &std::path::Path, imports: &[String]) -> bool {
    #[cfg(unix)]
    return standby::prestart_python(python, imports);
    #[cfg(not(unix))]
    {
        let _ = (python, imports);
        false
    }
}

/// The Python worker program (see [`boot`] for how it is started).
pub(crate) const PYTHON_WORKER: &str = include_str!("python_worker.py");

/// The environment variable that turns a process into a worker: `rust`
/// (a worker on stdin/stdout) or `rust-server` (a fork server; the socket
/// path follows in `CAICLUST_WORKER_SOCKET`).
pub const WORKER_ENV: &str = "CAICLUST_WORKER";
pub(crate) const WORKER_SOCKET_ENV: &str = "CAICLUST_WORKER_SOCKET";

type JsonFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync + 'static;
type BytesFn = dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync + 'static;

/// A registered function: of JSON values, or of bytes.
#[derive(Clone)]
enum TaskFn {
    Json(Arc<JsonFn>),
    Bytes(Arc<BytesFn>),
}

/// What a task function returned.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer {
    Json(Value),
    Bytes(Vec<u8>),
}

/// Rust task functions by name.
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<String, TaskFn>,
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
        self.functions
            .insert(name.to_string(), TaskFn::Json(Arc::new(f)));
        self
    }

    /// Register a function of bytes, for tasks made with
    /// [`crate::Task::rust_bytes`]: it gets the task's payload and its
    /// result comes back as the result's
    /// [`payload`](crate::TaskResult::payload) (the value is `null`).
    pub fn register_bytes<F>(mut self, name: &str, f: F) -> Registry
    where
        F: Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    {
        self.functions
            .insert(name.to_string(), TaskFn::Bytes(Arc::new(f)));
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

    /// Call `name` with the task's JSON arguments, or with its payload.
    #[inline]
    pub(crate) fn call(
        &self,
        name: &str,
        args: Value,
        payload: Option<&[u8]>,
    ) -> Result<Answer, TaskError> {
        match (self.functions.get(name), payload) {
            (Some(TaskFn::Json(f)), None) => {
                caught(catch_unwind(AssertUnwindSafe(|| f(args)))).map(Answer::Json)
            }
            (Some(TaskFn::Bytes(f)), Some(bytes)) => {
                caught(catch_unwind(AssertUnwindSafe(|| f(bytes)))).map(Answer::Bytes)
            }
            (f, _) => Err(self.refusal(name, f.is_some())),
        }
    }

    /// Why `name` cannot run the task: it is not registered, or takes the
    /// other kind of input (`known`: it is registered).
    #[cold]
    #[inline(never)]
    fn refusal(&self, name: &str, known: bool) -> TaskError {
        match self.functions.get(name) {
            Some(TaskFn::Json(_)) => error(format!(
                "'{name}' takes JSON arguments (Registry::register), but the task carries \
                 bytes (Task::rust_bytes)"
            )),
            Some(TaskFn::Bytes(_)) => error(format!(
                "'{name}' takes bytes (Registry::register_bytes): make its tasks with \
                 Task::rust_bytes"
            )),
            None => {
                debug_assert!(!known);
                TaskError {
                    type_name: "UnknownFunction".into(),
                    message: format!(
                        "no Rust task function named '{name}' is registered in this binary \
                         (known: {})",
                        self.names().collect::<Vec<_>>().join(", ")
                    ),
                    traceback: String::new(),
                }
            }
        }
    }
}

fn error(message: String) -> TaskError {
    TaskError {
        type_name: "Error".into(),
        message,
        traceback: String::new(),
    }
}

/// A task function's outcome: its value, its error, or its panic.
#[inline]
fn caught<T>(r: std::thread::Result<Result<T, String>>) -> Result<T, TaskError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(message)) => Err(error(message)),
        Err(payload) => Err(TaskError {
            type_name: "panic".into(),
            message: panic_message(payload.as_ref()),
            traceback: String::new(),
        }),
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
/// prints go to stderr, and its children inherit neither (Unix: here;
/// Windows: `windows.rs`).
fn private_channel() -> (Box<dyn Read + Send>, Box<dyn Write + Send>) {
    if let Some((inp, out)) = private_channel_files() {
        return (Box::new(inp), Box::new(out));
    }
    (Box::new(std::io::stdin()), Box::new(std::io::stdout()))
}

#[cfg(windows)]
use windows::private_channel_files;

#[cfg(not(any(unix, windows)))]
fn private_channel_files() -> Option<(std::fs::File, std::fs::File)> {
    None
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

/// Answers waiting to be written, shared with the flusher thread: the
/// next frame, its header still to be filled in.
struct Pending {
    /// [`frame::HEADER_LEN`] bytes kept for the header, then answer lines.
    buf: Vec<u8>,
    /// The blobs of the `{"id":N,"blob":LEN}` lines in `buf`.
    blobs: Vec<Vec<u8>>,
    since: Option<std::time::Instant>,
    out: Box<dyn Write + Send>,
    broken: bool,
    closed: bool,
}

impl Pending {
    fn flush(&mut self) {
        if self.buf.len() > frame::HEADER_LEN && !self.broken {
            let blobs: Vec<&[u8]> = self.blobs.iter().map(Vec::as_slice).collect();
            if frame::write_frame(&mut *self.out, &mut self.buf, &blobs).is_err() {
                self.broken = true;
            }
        }
        self.buf.truncate(frame::HEADER_LEN);
        self.blobs.clear();
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
    if frame::write_message(&mut out, &hello).is_err() {
        return;
    }
    let mut buf = Vec::with_capacity(1 << 16);
    buf.resize(frame::HEADER_LEN, 0);
    let shared: Shared = std::sync::Arc::new((
        std::sync::Mutex::new(Pending {
            buf,
            blobs: Vec::new(),
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

/// A task's payload as a batch frame carries it.
#[derive(Clone, Copy)]
enum Payload<'b> {
    None,
    Sent(&'b [u8]),
    /// Not sent, or not where the batch says: why.
    Missing(&'static str),
}

/// Each task's payload, by its position in the batch.
fn payloads<'b>(
    p: Option<&[(usize, Option<usize>)]>,
    n: usize,
    blobs: &'b [u8],
) -> Vec<Payload<'b>> {
    let Some(p) = p else { return Vec::new() };
    let mut out = vec![Payload::None; n];
    let mut rest = blobs;
    for &(i, len) in p {
        let payload = match len {
            None => Payload::Missing("the task's payload is larger than a frame can carry (2 GiB)"),
            Some(len) if len <= rest.len() => {
                let (blob, after) = rest.split_at(len);
                rest = after;
                Payload::Sent(blob)
            }
            Some(_) => Payload::Missing("the task's payload is missing from its frame"),
        };
        if let Some(slot) = out.get_mut(i) {
            *slot = payload;
        }
    }
    out
}

/// Read the next frame into `body` (text and blobs); its text length, or
/// `None` at EOF or when the stream is unreadable (reported).
fn read_frame(reader: &mut impl Read, body: &mut Vec<u8>) -> Option<usize> {
    let mut header = [0; frame::HEADER_LEN];
    reader.read_exact(&mut header).ok()?;
    let (len, text_len) = match frame::parse_header(&header) {
        Ok(lens) => lens,
        Err(e) => {
            eprintln!("caiclust worker: bad frame from the parent: {e}");
            return None;
        }
    };
    let want = len - frame::HEADER_LEN;
    body.clear();
    // Grows as the bytes arrive, not to what the header claims.
    match reader.take(want as u64).read_to_end(body) {
        Ok(n) if n == want => Some(text_len),
        _ => {
            eprintln!("caiclust worker: the parent's stream ended inside a frame");
            None
        }
    }
}

/// Append task `id`'s answer to the frame being gathered (a bytes answer
/// goes alone in a frame of its own); false when the channel is broken.
fn answer(
    shared: &Shared,
    line: &mut Vec<u8>,
    id: u64,
    result: Result<Answer, TaskError>,
    last: bool,
) -> bool {
    line.clear();
    let blob = match result {
        Ok(Answer::Bytes(b)) if b.len() <= frame::MAX_BLOB_LEN => {
            protocol::encode_blob_ref(line, id, b.len());
            Some(b)
        }
        Ok(Answer::Bytes(b)) => {
            protocol::encode_answer(line, id, Err(too_large(b.len())));
            None
        }
        Ok(Answer::Json(v)) => {
            protocol::encode_answer(line, id, Ok(v));
            let len = line.len();
            if len > frame::MAX_BLOB_LEN {
                line.clear();
                protocol::encode_answer(line, id, Err(too_large(len)));
            }
            None
        }
        Err(e) => {
            protocol::encode_answer(line, id, Err(e));
            None
        }
    };
    let mut p = lock(shared);
    if let Some(blob) = blob {
        p.flush();
        p.buf.extend_from_slice(line);
        p.blobs.push(blob);
        p.flush();
        return !p.broken;
    }
    p.buf.extend_from_slice(line);
    if last {
        // The batch is done: nothing would come to share the write.
        p.flush();
    } else if p.since.is_none() {
        // The first answer waiting: the flusher writes it (and any after
        // it) within FLUSH_AFTER. One clock reading per write, not per
        // task.
        p.since = Some(std::time::Instant::now());
        drop(p);
        shared.1.notify_one();
        return true;
    }
    !p.broken
}

fn too_large(len: usize) -> TaskError {
    TaskError {
        type_name: "Error".into(),
        message: format!(
            "the result is {len} bytes, more than a frame can carry ({} bytes)",
            frame::MAX_BLOB_LEN
        ),
        traceback: String::new(),
    }
}

fn serve_tasks(registry: &Registry, inp: Box<dyn Read + Send>, shared: &Shared) {
    let mut reader = BufReader::with_capacity(1 << 16, inp);
    let mut body = Vec::new();
    let mut line = Vec::with_capacity(256);
    loop {
        let Some(text_len) = read_frame(&mut reader, &mut body) else {
            return;
        };
        let (text, blobs) = body.split_at(text_len);
        let msg: ToWorker = match serde_json::from_slice(text) {
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
        let payloads = payloads(msg.p.as_deref(), n, blobs);
        let mut args = msg.a.into_iter();
        for (i, id) in ids.into_iter().enumerate() {
            let name = match (&msg.f, &msg.fs) {
                (Some(f), _) => f.as_ref(),
                (None, Some(fs)) => fs.get(i).map_or("", |f| f.as_ref()),
                (None, None) => "",
            };
            let arg = args.next().unwrap_or(Value::Null);
            let result = match payloads.get(i).copied().unwrap_or(Payload::None) {
                Payload::None => registry.call(name, arg, None),
                Payload::Sent(bytes) => registry.call(name, arg, Some(bytes)),
                Payload::Missing(why) => Err(TaskError {
                    type_name: "Error".into(),
                    message: why.into(),
                    traceback: String::new(),
                }),
            };
            if !answer(shared, &mut line, id, result, i + 1 == n) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_json_functions_take_only_their_own_tasks() {
        let r = Registry::new()
            .register("sq", |x: i64| x * x)
            .register_bytes("rev", |b| Ok(b.iter().rev().copied().collect()));
        assert_eq!(
            r.call("sq", serde_json::json!(3), None),
            Ok(Answer::Json(serde_json::json!(9)))
        );
        assert_eq!(
            r.call("rev", Value::Null, Some(b"abc")),
            Ok(Answer::Bytes(b"cba".to_vec()))
        );
        let e = r.call("sq", Value::Null, Some(b"x")).unwrap_err();
        assert!(e.message.contains("takes JSON arguments"), "{}", e.message);
        let e = r.call("rev", serde_json::json!(1), None).unwrap_err();
        assert!(e.message.contains("Task::rust_bytes"), "{}", e.message);
    }

    #[test]
    fn payloads_are_found_by_position_and_checked() {
        let blobs = b"abcdef";
        let p = [(0, Some(2)), (2, None), (3, Some(4)), (9, Some(0))];
        let got = payloads(Some(&p), 5, blobs);
        assert!(matches!(got[0], Payload::Sent(b"ab")));
        assert!(matches!(got[1], Payload::None));
        assert!(matches!(got[2], Payload::Missing(m) if m.contains("larger than a frame")));
        assert!(matches!(got[3], Payload::Sent(b"cdef")));
        let short = payloads(Some(&[(0, Some(10))]), 1, blobs);
        assert!(matches!(short[0], Payload::Missing(m) if m.contains("missing")));
        assert!(payloads(None, 3, blobs).is_empty());
    }
}
