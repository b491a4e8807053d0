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

use std::process::Command;

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

/// Run `argv` with `env` added to ours; its exit status.
pub fn run(argv: &[String], env: &[(String, String)]) -> Result<u8, SpawnError> {
    let (program, args) = argv.split_first().ok_or_else(|| SpawnError {
        program: String::new(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"),
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    forward::install();
    let mut child = cmd.spawn().map_err(|error| SpawnError {
        program: program.clone(),
        error,
    })?;
    forward::child_started(child.id());
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(SpawnError {
                    program: program.clone(),
                    error,
                })
            }
        }
    };
    Ok(exit_status(status))
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
