//! Run one program as our child and end as it ended.
//!
//! The child stays in our process group, so what the terminal sends
//! (Ctrl-C, Ctrl-\, a hangup) reaches it directly. Signals sent to
//! caiclust alone (`kill`, `timeout`, a batch system) are passed on:
//! INT, TERM, HUP, QUIT, USR1 and USR2. A signal the kernel raised (for
//! the terminal) is not passed on a second time; like sudo, caiclust tells
//! them apart by the sender's pid, which is 0 for the kernel.
//!
//! The exit status is the child's, or 128 + N when signal N killed it;
//! 127 when the program is not found, 126 when it cannot be executed.
//!
//! On Windows the child runs in a Job Object of its own
//! ([`caiclust_core::job`]), the process group's counterpart: Ctrl-C
//! reaches it through the console as before, and the job ends the whole
//! tree, grandchildren included, when the watchdog stops it, when caiclust
//! is killed outright (the job's handle closes with caiclust), and when
//! the program ends (what it leaves running goes with it, as for a
//! command task).
//!
//! With a stall time, the hang watchdog ([`caiclust_core::hang`]) watches
//! the child's process tree; when it finds a forked worker hung in a
//! runtime, the whole tree is stopped (TERM, a grace period, KILL) and
//! [`Ended::Hung`] says why.

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use caiclust_core::hang::{diagnose_forked_child, watch_tree, Hang, TreeWatchOptions};
use caiclust_core::job;
use caiclust_core::tree::{self, StopSignal};

/// How the program ended.
#[derive(Debug)]
pub enum Ended {
    /// On its own: its exit status (128 + N for signal N).
    Exited(u8),
    /// Stopped by the hang watchdog.
    Hung(Box<Hang>),
}

/// Between TERM and KILL when the watchdog stops a hung program.
const GRACE: Duration = Duration::from_secs(2);

/// Why the program could not start, and the exit status that says so.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {program}: {error}")]
pub struct SpawnError {
    pub program: String,
    pub error: std::io::Error,
}

impl SpawnError {
    /// 127 for "not found", 126 for anything else, as a shell does.
    pub fn exit_status(&self) -> u8 {
        match self.error.kind() {
            std::io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}

/// Run `argv` with `env` added to ours, watched for hangs when `stall` is
/// given; how it ended.
pub fn run(
    argv: &[String],
    env: &[(String, String)],
    stall: Option<Duration>,
) -> Result<Ended, SpawnError> {
    let (program, args) = argv.split_first().ok_or_else(|| SpawnError {
        program: String::new(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"),
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    job::prepare(&mut cmd);
    forward::install();
    let mut child = cmd.spawn().map_err(|error| SpawnError {
        program: program.clone(),
        error,
    })?;
    let pid = child.id();
    if let Err(error) = job::adopt(&child) {
        // It has been terminated: reap it.
        let _ = child.wait();
        return Err(SpawnError {
            program: program.clone(),
            error,
        });
    }
    forward::child_started(pid);
    let ended = watched(child, pid, program, stall);
    // Whatever the program left running in its job goes with it.
    job::release(pid);
    ended
}

/// Wait for the child started as `pid`, watched for hangs when `stall`
/// is given and the platform has a watchdog.
fn watched(
    mut child: std::process::Child,
    pid: u32,
    program: &str,
    stall: Option<Duration>,
) -> Result<Ended, SpawnError> {
    // A watch that ended at once watches nothing (a platform without the
    // watchdog): waiting on it would only spin.
    let watch = stall
        .and_then(|s| watch_tree(pid, TreeWatchOptions::with_stall(s), diagnose_forked_child).ok())
        .filter(|w| !w.is_finished());
    let Some(watch) = watch else {
        return wait(&mut child, program).map(Ended::Exited);
    };
    // One channel for both ends: the child's exit (its own thread waits)
    // and the watchdog's first hang (forwarded by another).
    let (tx, rx) = mpsc::channel();
    let exited = tx.clone();
    let name = program.to_string();
    std::thread::spawn(move || {
        let _ = exited.send(Event::Exited(wait(&mut child, &name)));
    });
    std::thread::spawn(move || loop {
        match watch.recv_timeout(Duration::from_millis(500)) {
            Some(hang) => {
                let _ = tx.send(Event::Hung(Box::new(hang)));
                return;
            }
            None if !tree::alive(pid) => return,
            None => {}
        }
    });
    match rx.recv() {
        Ok(Event::Exited(r)) => r.map(Ended::Exited),
        Ok(Event::Hung(hang)) => {
            stop_tree(pid);
            // The program's own exit, now that it is stopped.
            loop {
                match rx.recv() {
                    Ok(Event::Exited(_)) | Err(_) => break,
                    Ok(Event::Hung(_)) => {}
                }
            }
            Ok(Ended::Hung(hang))
        }
        Err(_) => Ok(Ended::Exited(1)),
    }
}

enum Event {
    Exited(Result<u8, SpawnError>),
    Hung(Box<Hang>),
}

/// Wait for the child; its exit status.
fn wait(child: &mut std::process::Child, program: &str) -> Result<u8, SpawnError> {
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(SpawnError {
                    program: program.to_string(),
                    error,
                })
            }
        }
    };
    Ok(exit_status(status))
}

/// Stop the program and every process it started: TERM, up to [`GRACE`]
/// for them to go, then KILL whatever is left. The tree is read first:
/// once the program is gone, its workers are no longer its descendants.
fn stop_tree(pid: u32) {
    let mut pids = vec![pid];
    pids.extend(tree::descendants(pid));
    tree::signal_tree(pid, StopSignal::Term);
    let deadline = Instant::now() + GRACE;
    while pids.iter().any(|p| tree::alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    tree::signal_tree(pid, StopSignal::Kill);
    for p in pids.iter().filter(|p| tree::alive(**p)) {
        tree::signal_tree(*p, StopSignal::Kill);
    }
}

/// The child's exit code, or 128 + the signal that killed it.
pub fn exit_status(status: std::process::ExitStatus) -> u8 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128u8.saturating_add(u8::try_from(sig).unwrap_or(127));
        }
    }
    match status.code() {
        Some(c) => (c & 0xff) as u8,
        None => 1,
    }
}

#[cfg(unix)]
mod forward {
    use std::sync::atomic::{AtomicI32, Ordering};

    const SIGNALS: [libc::c_int; 6] = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];

    static CHILD: AtomicI32 = AtomicI32::new(0);
    /// A signal that came before the child existed.
    static PENDING: AtomicI32 = AtomicI32::new(0);

    extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
        let sender = if info.is_null() {
            0
        } else {
            unsafe { (*info).si_pid() }
        };
        if sender == 0 {
            // From the kernel (the terminal): the child has it already.
            return;
        }
        let child = CHILD.load(Ordering::SeqCst);
        if child > 0 {
            if sender != child {
                // SAFETY: kill is async-signal-safe.
                unsafe {
                    libc::kill(child, sig);
                }
            }
        } else {
            PENDING.store(sig, Ordering::SeqCst);
        }
    }

    /// Catch the forwarded signals (a child's exec resets the handlers).
    pub fn install() {
        for sig in SIGNALS {
            // SAFETY: a zeroed sigaction with a valid handler and flags is
            // a valid argument; the handler only uses async-signal-safe
            // calls and atomics.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal
                    as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                    as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    }

    pub fn child_started(pid: u32) {
        let pid = libc::pid_t::try_from(pid).unwrap_or(0);
        CHILD.store(pid, Ordering::SeqCst);
        let pending = PENDING.swap(0, Ordering::SeqCst);
        if pending != 0 && pid > 0 {
            // SAFETY: plain syscall on a pid we own.
            unsafe {
                libc::kill(pid, pending);
            }
        }
    }
}

#[cfg(not(unix))]
mod forward {
    /// Ctrl-C reaches the child through the console; caiclust waits for it
    /// to end instead of dying first.
    pub fn install() {
        let _ = ctrlc::set_handler(|| {});
    }

    pub fn child_started(_pid: u32) {}
}
