//! Job Objects: on Windows every process caiclust starts (a command task,
//! a worker) runs in a job of its own, created with
//! `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`. The job is what a process group
//! is on Unix, and more:
//!
//! * stopping the process (a timeout, a cancel, a hang) terminates its
//!   job, grandchildren included, wherever they were re-parented;
//! * the job's handle lives only in this process (it is not inheritable),
//!   so when this process dies, even killed outright, the system closes
//!   the handle and the job kills everything in it: workers never outlive
//!   their parent (what `PR_SET_PDEATHSIG` does on Linux);
//! * a process is in its job before it runs its first instruction: it is
//!   started suspended ([`prepare`]), assigned, then resumed ([`adopt`]),
//!   so it cannot start a child outside the job.
//!
//! Jobs nest (Windows 8 and later): caiclust running inside a job (a CI
//! runner, another caiclust) still gives each process a job of its own.
//! Where a job cannot be made or assigned, the process runs without one
//! and stopping it falls back to ending the processes found by pid.
//!
//! Elsewhere every function here does nothing: process groups do the work
//! (see [`crate::tree`]).

use std::process::{Child, Command};

#[cfg(windows)]
mod windows;

/// Make `cmd` start its process suspended, for [`adopt`] to put it in a
/// job before it runs. A process started so must be given to [`adopt`].
pub fn prepare(cmd: &mut Command) {
    #[cfg(windows)]
    windows::prepare(cmd);
    #[cfg(not(windows))]
    let _ = cmd;
}

/// Put `child`, just started from a command given to [`prepare`], in a
/// job of its own, then let it run. An error means it could not be
/// resumed: it has been terminated. Not being able to make the job is no
/// error (the process runs without one).
pub fn adopt(child: &Child) -> std::io::Result<()> {
    #[cfg(windows)]
    return windows::adopt(child);
    #[cfg(not(windows))]
    {
        let _ = child;
        Ok(())
    }
}

/// Let go of `pid`'s job: whatever still runs in it is killed (a
/// command's background children, once the command has ended).
pub fn release(pid: u32) {
    #[cfg(windows)]
    windows::release(pid);
    #[cfg(not(windows))]
    let _ = pid;
}

/// End every process in `pid`'s job; false when `pid` has none.
pub fn terminate(pid: u32) -> bool {
    #[cfg(windows)]
    return windows::terminate(pid);
    #[cfg(not(windows))]
    {
        let _ = pid;
        false
    }
}

/// Does `pid`'s job still have processes? `None` when `pid` has no job.
pub fn active(pid: u32) -> Option<bool> {
    #[cfg(windows)]
    return windows::active(pid);
    #[cfg(not(windows))]
    {
        let _ = pid;
        None
    }
}
