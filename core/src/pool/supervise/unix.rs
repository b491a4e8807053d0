//! Unix: fork servers (a clean interpreter, or the program itself for
//! Rust tasks on fork), the socket their workers connect to, and the
//! process settings of every worker (its own process group; on Linux,
//! death with the scheduler).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::super::events::Event;
use super::super::io::read_answers;
use super::super::state::Server;
use super::super::Scheduler;
use super::input_of;
use crate::plan::StartMethod;
use crate::task::{ExitInfo, PoolKind};
use crate::worker::frame::FrameReader;
use crate::worker::protocol::{self, ToParent};
use crate::worker::standby;

/// Every worker and fork server: its own process group (a stop signals
/// the whole group); on Linux, killed when the scheduler's thread ends.
pub(crate) fn prepare_command(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl is async-signal-safe; the closure allocates
        // nothing. Workers and fork servers die with the thread that
        // started them (the scheduler), so a parent killed outright
        // (SIGKILL) leaves no pool behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
    }
}

impl Scheduler {
    pub(super) fn ensure_server(&mut self, kind: PoolKind) -> Result<(), String> {
        if self.pools.get(&kind).is_some_and(|p| p.server.is_some()) {
            return Ok(());
        }
        let sock = self.ensure_listener()?;
        let events = self.events_tx.clone();
        if kind == PoolKind::Rust && self.settings.start_method == StartMethod::Fork {
            // The template is this very process, forked: its workers see
            // everything the program set up before.
            let registry = self
                .settings
                .registry
                .clone()
                .ok_or("the fork start method for Rust tasks needs the functions: give the cluster builder the Registry (ClusterBuilder::registry)")?;
            let template =
                crate::worker::fork::fork_template(&registry, &sock, &self.settings.env)?;
            let pid = template.pid;
            let output = template.output;
            std::thread::spawn(move || {
                read_server(kind, Box::new(output), &events);
                let exit = crate::worker::fork::wait_for(pid);
                let _ = events.send(Event::ServerEof { pool: kind, exit });
            });
            let pool = self.pools.get_mut(&kind).expect("pool exists");
            pool.server = Some(Server {
                pid,
                input: Some(input_of(0, Box::new(template.input))?),
                ready: false,
                backlog: Vec::new(),
            });
            return Ok(());
        }
        let (mut child, stdin, stdout) = match self.take_standby(kind, &sock) {
            Some(s) => (s.child, s.stdin, s.stdout),
            None => {
                let mut cmd = self.worker_command(kind, Some(&sock))?;
                cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
                let mut child = cmd.spawn().map_err(|e| self.start_error(kind, &e))?;
                let stdin = child.stdin.take().ok_or("no server stdin")?;
                let stdout = child.stdout.take().ok_or("no server stdout")?;
                (child, stdin, stdout)
            }
        };
        let pid = child.id();
        std::thread::spawn(move || {
            read_server(kind, Box::new(stdout), &events);
            let exit = child.wait().ok().map(ExitInfo::from_status);
            let _ = events.send(Event::ServerEof { pool: kind, exit });
        });
        let pool = self.pools.get_mut(&kind).expect("pool exists");
        pool.server = Some(Server {
            pid,
            input: Some(input_of(0, Box::new(stdin))?),
            // A Python server reads fork requests only once it serves (a
            // restart without preloads keeps the unread ones): they go
            // out at once, not after its hello.
            ready: kind == PoolKind::Python,
            backlog: Vec::new(),
        });
        Ok(())
    }

    /// A standby interpreter (see [`standby`]) made this pool's Python fork
    /// server, when one is waiting that fits.
    fn take_standby(&mut self, kind: PoolKind, sock: &Path) -> Option<standby::Standby> {
        // (No standby waiting, as for every program that asked for none:
        // no environment gathered, no line composed.)
        if kind != PoolKind::Python || standby::waiting_pid(&self.settings.python).is_none() {
            return None;
        }
        let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        env.extend(self.env.iter().map(|(k, v)| (k.into(), v.into())));
        let cwd = std::env::current_dir().ok()?;
        let (mode, preload) = self.python_server_mode();
        let line = standby::become_line(mode, sock, preload, &env, &cwd)?;
        let taken = standby::take(&self.settings.python, &env)?;
        standby::tell(taken, &line)
    }

    /// The Unix socket forked workers connect to, and its accept thread.
    pub(super) fn ensure_listener(&mut self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.socket_dir {
            return Ok(dir.path().join("w.sock"));
        }
        let dir = tempfile::Builder::new()
            .prefix("caiclust-")
            .tempdir()
            .map_err(|e| format!("cannot create a folder for the worker socket: {e}"))?;
        let path = dir.path().join("w.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        let events = self.events_tx.clone();
        std::thread::spawn(move || accept_loop(listener, events));
        self.socket_dir = Some(dir);
        Ok(path)
    }
}

/// Read a fork server's reports until EOF.
pub(super) fn read_server(
    kind: PoolKind,
    out: Box<dyn std::io::Read + Send>,
    events: &Sender<Event>,
) {
    read_messages(BufReader::new(out), |msgs| {
        msgs.into_iter()
            .all(|msg| events.send(Event::FromServer { pool: kind, msg }).is_ok())
    });
}

/// Accept forked workers' connections: each says hello with its serial
/// first, then its answers follow, read as a spawned worker's are.
fn accept_loop(listener: std::os::unix::net::UnixListener, events: Sender<Event>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let events = events.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let Ok(read_half) = stream.try_clone() else {
                return;
            };
            let mut reader = FrameReader::new(read_half);
            let Ok(Some(mut first)) = reader.next_frame() else {
                return;
            };
            let Some(ToParent::Hello { hello }) = first.pop() else {
                return;
            };
            let Some(serial) = hello.worker else { return };
            let _ = reader.get_ref().set_read_timeout(None);
            if events
                .send(Event::Connected {
                    serial,
                    pid: hello.pid,
                    writer: Box::new(SocketWriter(stream)),
                })
                .is_err()
            {
                return;
            }
            // The rest of the conversation, as for a spawned worker.
            read_answers(serial, reader, &events);
            let _ = events.send(Event::WorkerEof { serial });
        });
    }
}

/// The parent's end of a forked worker's socket: dropping it shuts the
/// socket for writing, which the worker reads as "no more tasks" (the
/// reading half lives on in the reader thread).
struct SocketWriter(std::os::unix::net::UnixStream);

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

/// Read a fork server's protocol lines until EOF, handing `deliver` every complete line
/// already read in as one group (answers to tiny tasks come in groups);
/// stop early when it returns false. Unreadable lines are reported.
fn read_messages<R: std::io::Read>(
    mut reader: BufReader<R>,
    mut deliver: impl FnMut(Vec<ToParent>) -> bool,
) {
    let mut line = Vec::new();
    loop {
        let mut batch = Vec::new();
        let mut eof = false;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
            }
            let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
            match protocol::parse_from_worker(trimmed) {
                Ok(msg) => batch.push(msg),
                Err(e) => eprintln!("caiclust: unreadable message from a worker: {e}"),
            }
            // Stop when no complete line is left in the buffer: reading
            // further would wait.
            if !reader.buffer().contains(&b'\n') {
                break;
            }
        }
        if (!batch.is_empty() && !deliver(batch)) || eof {
            return;
        }
    }
}
