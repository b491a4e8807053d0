//! Worker supervision: starting workers (spawned, or forked by a fork
//! server), reconciling a worker's EOF with its exit, attributing a
//! crash to the task that caused it, retiring and stopping workers.
//! Fork servers and the socket forked workers connect to are Unix-only
//! (`unix.rs`); elsewhere only spawn exists (`windows.rs`).

mod crash;
#[cfg(unix)]
mod unix;
#[cfg(not(unix))]
mod windows;

#[cfg(unix)]
pub(crate) use unix::prepare_command;
#[cfg(not(unix))]
use windows::prepare_command;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::io::{send_fork, spawn_reader, WorkerInput};
use super::state::{StopCause, Worker};
use super::Scheduler;
use crate::messages::Notice;
use crate::plan::StartMethod;
use crate::task::{ExitInfo, PoolKind};
use crate::tree::{self, StopSignal};
use crate::worker::protocol::ToParent;
use crate::worker::{boot, WORKER_ENV, WORKER_SOCKET_ENV};

/// The writer thread of process `serial`'s input (0: a fork server).
fn input_of(serial: u64, writer: Box<dyn Write + Send>) -> Result<WorkerInput, String> {
    WorkerInput::start(&serial.to_string(), writer)
        .ok_or_else(|| "cannot start a thread to write to a worker".to_string())
}

impl Scheduler {
    /// A forked worker connected to the pool's socket.
    pub(super) fn connected(&mut self, serial: u64, pid: u32, writer: Box<dyn Write + Send>) {
        let input = WorkerInput::start(&serial.to_string(), writer);
        if let Some(w) = self.worker_mut(serial) {
            w.pid = Some(pid);
            w.ready = input.is_some();
            w.input = input;
        }
    }

    /// Worker `serial`'s channel reached EOF.
    pub(super) fn worker_eof(&mut self, serial: u64) {
        if let Some(w) = self.worker_mut(serial) {
            w.channel_closed = true;
            w.input = None;
            if w.exit.is_some() {
                w.gone_by = Some(Instant::now());
            } else if w.gone_by.is_none() {
                w.gone_by = Some(Instant::now() + Duration::from_millis(500));
            }
        }
    }

    pub(super) fn worker_exited(&mut self, serial: u64, exit: Option<ExitInfo>) {
        if let Some(w) = self.worker_mut(serial) {
            w.exit = Some(exit);
            w.input = None;
            // Answers still in the channel arrive before its EOF; a task's
            // child holding the channel open must not keep us waiting.
            let by = Instant::now() + Duration::from_millis(300);
            w.gone_by = Some(if w.channel_closed { Instant::now() } else { by });
        }
    }

    /// Finish with workers whose process ended and whose channel closed (or
    /// that ran out of time for either).
    pub(super) fn reap_workers(&mut self) {
        let now = Instant::now();
        let mut done = Vec::new();
        let mut nudge = Vec::new();
        for p in self.pools.values_mut() {
            for w in &mut p.workers {
                let Some(by) = w.gone_by else { continue };
                if w.exit.is_some() && (w.channel_closed || now >= by) {
                    done.push(w.serial);
                } else if now >= by {
                    if !w.nudged {
                        // The channel closed but the process lives on.
                        w.nudged = true;
                        w.gone_by = Some(now + Duration::from_secs(1));
                        if let Some(pid) = w.pid {
                            nudge.push(pid);
                        }
                    } else {
                        done.push(w.serial);
                    }
                }
            }
        }
        for pid in nudge {
            self.kill_now(pid);
        }
        for serial in done {
            self.worker_gone(serial);
        }
    }

    /// The fork server saw its worker `pid` end.
    fn forked_worker_exited(&mut self, kind: PoolKind, pid: u32, exit: ExitInfo) {
        let serial = self.pools.get(&kind).and_then(|p| {
            p.workers
                .iter()
                .find(|w| w.pid == Some(pid))
                .map(|w| w.serial)
        });
        if let Some(serial) = serial {
            self.worker_exited(serial, Some(exit));
        }
    }

    pub(super) fn on_server_message(&mut self, kind: PoolKind, msg: ToParent) {
        let Some(pool) = self.pools.get_mut(&kind) else {
            return;
        };
        match msg {
            ToParent::Hello { .. } => {
                if let Some(s) = pool.server.as_mut() {
                    s.ready = true;
                    let backlog = std::mem::take(&mut s.backlog);
                    for serial in backlog {
                        send_fork(s, serial);
                    }
                }
            }
            ToParent::Forked { forked, pid } => {
                if let Some(w) = pool.workers.iter_mut().find(|w| w.serial == forked) {
                    w.pid.get_or_insert(pid);
                }
            }
            ToParent::ForkError {
                fork_error,
                message,
            } => {
                if let Some(i) = pool.workers.iter().position(|w| w.serial == fork_error) {
                    pool.workers.remove(i);
                    pool.start_failures += 1;
                    if pool.start_failures >= self.settings.max_start_failures {
                        pool.broken = Some(format!("the fork server cannot fork: {message}"));
                    }
                }
            }
            ToParent::ExitedCode { exited, code } => {
                self.forked_worker_exited(kind, exited, ExitInfo::Code(code))
            }
            ToParent::ExitedSignal { exited, signal } => {
                self.forked_worker_exited(kind, exited, ExitInfo::Signal(signal))
            }
            _ => {}
        }
    }

    pub(super) fn server_gone(&mut self, kind: PoolKind, exit: Option<ExitInfo>) {
        let Some(pool) = self.pools.get_mut(&kind) else {
            return;
        };
        pool.server = None;
        // Workers it had not forked yet will never come.
        let unborn: Vec<u64> = pool
            .workers
            .iter()
            .filter(|w| w.pid.is_none())
            .map(|w| w.serial)
            .collect();
        pool.workers.retain(|w| w.pid.is_some());
        if self.shutdown.is_none() {
            pool.start_failures += 1;
            let _ = self.notices.send(Notice {
                task: None,
                message: format!(
                    "the fork server exited ({}); {}",
                    exit.map_or("exit status unknown".into(), |e| e.to_string()),
                    if pool.start_failures >= self.settings.max_start_failures {
                        "giving up"
                    } else {
                        "starting a new one"
                    }
                ),
            });
            if pool.start_failures >= self.settings.max_start_failures {
                pool.broken = Some(format!(
                    "the fork server keeps exiting ({})",
                    exit.map_or("exit status unknown".into(), |e| e.to_string())
                ));
            }
        }
        let _ = unborn;
    }

    pub(super) fn stop_worker(&mut self, kind: PoolKind, i: usize, cause: StopCause) {
        let Some(pool) = self.pools.get_mut(&kind) else {
            return;
        };
        let w = &mut pool.workers[i];
        if w.stopping.is_some() {
            return;
        }
        w.stopping = Some(cause);
        w.input = None;
        if let Some(pid) = w.pid {
            self.stop_tree(pid);
        }
    }

    /// Close the input of workers that served their quota and are idle
    /// (their loop then ends).
    pub(super) fn retire_idle(&mut self, kind: PoolKind) {
        if let Some(pool) = self.pools.get_mut(&kind) {
            for w in &mut pool.workers {
                if w.retiring && w.in_flight.is_empty() && w.input.is_some() {
                    // Closing its input ends the worker's loop.
                    w.input = None;
                }
            }
        }
    }

    pub(super) fn start_worker(&mut self, kind: PoolKind) -> Result<(), String> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let pool = self.pools.get(&kind).expect("pool exists");
        let used: Vec<usize> = pool.workers.iter().map(|w| w.slot).collect();
        let slot = (1..).find(|s| !used.contains(s)).unwrap_or(1);
        let method = self.settings.start_method;
        let mut worker = Worker::new(serial, slot);
        match method {
            StartMethod::Spawn => {
                let mut cmd = self.worker_command(kind, None)?;
                cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
                let mut child = cmd.spawn().map_err(|e| self.start_error(kind, &e))?;
                if let Err(e) = crate::job::adopt(&child) {
                    let _ = child.wait();
                    return Err(self.start_error(kind, &e));
                }
                let stdin = child.stdin.take().ok_or("no worker stdin")?;
                let stdout = child.stdout.take().ok_or("no worker stdout")?;
                worker.pid = Some(child.id());
                worker.input = Some(input_of(serial, Box::new(stdin))?);
                let events = self.events_tx.clone();
                spawn_reader(serial, Box::new(stdout), Some(child), events);
            }
            StartMethod::Forkserver | StartMethod::Fork => {
                self.ensure_server(kind)?;
                let pool = self.pools.get_mut(&kind).expect("pool exists");
                let server = pool.server.as_mut().ok_or("no fork server")?;
                if server.ready {
                    send_fork(server, serial);
                } else {
                    server.backlog.push(serial);
                }
            }
        }
        let pool = self.pools.get_mut(&kind).expect("pool exists");
        pool.workers.push(worker);
        Ok(())
    }

    pub(super) fn start_error(&self, kind: PoolKind, e: &std::io::Error) -> String {
        match kind {
            PoolKind::Python => format!(
                "cannot start the Python interpreter {}: {e}",
                self.settings.python.display()
            ),
            _ => format!("cannot start a Rust worker: {e}"),
        }
    }

    pub(super) fn rust_worker_exe(&self) -> Result<PathBuf, String> {
        match &self.settings.rust_worker {
            Some(p) => Ok(p.clone()),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find this program to start Rust workers: {e}")),
        }
    }

    /// How a Python fork server runs: its mode, and what it imports before
    /// any worker forks: the task modules (fork, mode `server`), or the
    /// modules a Python parent uses (forkserver, which must stay clean).
    pub(super) fn python_server_mode(&self) -> (&'static str, &[String]) {
        match self.settings.start_method {
            StartMethod::Fork => ("server", &self.settings.preload),
            _ => ("forkserver", &self.settings.forkserver_preload),
        }
    }

    /// The command line of a spawned worker, or of a fork server.
    pub(super) fn worker_command(
        &self,
        kind: PoolKind,
        server_socket: Option<&PathBuf>,
    ) -> Result<Command, String> {
        let mut cmd = match kind {
            PoolKind::Python => {
                let mut c = Command::new(&self.settings.python);
                c.arg("-c").arg(boot::python_program());
                match server_socket {
                    None => {
                        c.arg("worker");
                    }
                    Some(sock) => {
                        let (mode, preload) = self.python_server_mode();
                        c.arg(mode).arg(sock).args(preload);
                    }
                }
                c
            }
            _ => {
                let mut c = Command::new(self.rust_worker_exe()?);
                match server_socket {
                    None => {
                        c.env(WORKER_ENV, "rust");
                    }
                    Some(sock) => {
                        c.env(WORKER_ENV, "rust-server")
                            .env(WORKER_SOCKET_ENV, sock);
                    }
                }
                c
            }
        };
        cmd.envs(self.env.iter());
        prepare_command(&mut cmd);
        Ok(cmd)
    }

    /// Close every worker's input, wait a little for them to exit, then
    /// stop whatever is left.
    pub(super) fn stop_everything(&mut self) {
        let mut pids = Vec::new();
        for p in self.pools.values_mut() {
            for w in &mut p.workers {
                w.input = None;
                if let Some(pid) = w.pid {
                    pids.push(pid);
                }
            }
            if let Some(s) = p.server.as_mut() {
                s.input = None;
                pids.push(s.pid);
            }
        }
        self.slots.clear();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && pids.iter().any(|&p| tree::alive(p)) {
            // Keep reaping readers' events so spawned children are waited.
            match self.events.recv_timeout(Duration::from_millis(10)) {
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for pid in pids {
            if tree::alive(pid) {
                tree::signal_tree(pid, StopSignal::Kill);
            }
        }
        for (_, pids) in self.kills.drain(..) {
            for pid in pids {
                if tree::alive(pid) {
                    tree::signal_tree(pid, StopSignal::Kill);
                }
            }
        }
    }
}
