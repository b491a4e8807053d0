//! Process trees: find a process's descendants, stop a whole tree (TERM, a
//! grace period, then KILL), and read how much CPU a tree has used (for the
//! hang watchdog).
//!
//! On Unix every process caiclust starts leads its own process group, so
//! one `killpg` reaches descendants that stayed in it; on Linux the
//! descendants found through `/proc` are signalled too, which also reaches
//! those that moved to a process group of their own. On Windows every
//! process caiclust starts runs in a Job Object of its own (see
//! [`crate::job`]), which plays the process group's part: stopping the
//! process terminates its job, which reaches every member whatever became
//! of its parent; descendants are read from a Toolhelp snapshot.

/// `/proc` reports CPU time in clock ticks of `sysconf(_SC_CLK_TCK)`,
/// which is 100 on every Linux configuration in use.
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Which signal to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Kill,
}

/// All descendants of `pid` (children, grandchildren, ...), as far as the
/// platform can tell. Linux reads `/proc`, Windows a process snapshot;
/// elsewhere the answer is empty and the process group does the work.
pub fn descendants(pid: u32) -> Vec<u32> {
    descendants_with_parents(pid)
        .into_iter()
        .map(|(child, _)| child)
        .collect()
}

/// As [`descendants`], each with its parent's pid.
pub fn descendants_with_parents(pid: u32) -> Vec<(u32, u32)> {
    #[cfg(target_os = "linux")]
    let table = linux::parent_table();
    #[cfg(windows)]
    let table = windows::parent_table();
    #[cfg(not(any(target_os = "linux", windows)))]
    let table: Vec<(u32, u32)> = Vec::new();
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &table {
            if parent == p
                && child != pid
                && !out.iter().any(|&(c, _)| c == child)
                && child_of(child, parent)
            {
                out.push((child, parent));
                frontier.push(child);
            }
        }
    }
    out
}

/// Is `child` really a child of `parent`, not of an earlier process that
/// had its pid? Windows keeps the parent's pid after the parent exits and
/// reuses pids soon, so a child must have started after its parent;
/// elsewhere orphans are re-parented and the table is right.
fn child_of(child: u32, parent: u32) -> bool {
    #[cfg(windows)]
    {
        windows::started_after(child, parent)
    }
    #[cfg(not(windows))]
    {
        let _ = (child, parent);
        true
    }
}

/// Signal `pid`, the process group it leads or led, and every descendant
/// found. Returns the pids signalled.
pub fn signal_tree(pid: u32, signal: StopSignal) -> Vec<u32> {
    let mut pids = vec![pid];
    pids.extend(descendants(pid));
    #[cfg(unix)]
    {
        let sig = match signal {
            StopSignal::Term => libc::SIGTERM,
            StopSignal::Kill => libc::SIGKILL,
        };
        // SAFETY: kill/killpg take plain integers; a stale pid is at worst
        // ESRCH. The group is signalled even when its leader has already
        // died (a group id is never reused while the group has members, so
        // this reaches the leader's leftovers and nothing else).
        unsafe {
            libc::killpg(pid as libc::pid_t, sig);
            for &p in pids.iter().rev() {
                libc::kill(p as libc::pid_t, sig);
            }
        }
    }
    #[cfg(windows)]
    {
        // Windows has no TERM: both end the job (the whole tree at once),
        // then whatever the snapshot found outside it.
        let _ = signal;
        crate::job::terminate(pid);
        for &p in &pids {
            windows::terminate(p);
        }
    }
    pids
}

/// Does the process group led (once) by `pgid` still have members? (On
/// Windows: does its job?)
pub fn group_alive(pgid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 to a group only checks for existence.
        unsafe { libc::killpg(pgid as libc::pid_t, 0) == 0 }
    }
    #[cfg(windows)]
    {
        // The job plays the group's part.
        crate::job::active(pgid).unwrap_or(false)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = pgid;
        false
    }
}

/// Signal every member of the process group `pgid` (on Windows: end
/// every process in its job).
pub fn signal_group(pgid: u32, signal: StopSignal) {
    #[cfg(unix)]
    {
        let sig = match signal {
            StopSignal::Term => libc::SIGTERM,
            StopSignal::Kill => libc::SIGKILL,
        };
        // SAFETY: killpg takes plain integers; a stale group is ESRCH.
        unsafe {
            libc::killpg(pgid as libc::pid_t, sig);
        }
    }
    #[cfg(windows)]
    {
        let _ = signal;
        crate::job::terminate(pgid);
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (pgid, signal);
    }
}

/// Is `pid` still running (not a zombie)?
pub fn alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => linux::state_of(&stat).is_some_and(|s| s != 'Z' && s != 'X'),
            Err(_) => false,
        }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }
    #[cfg(windows)]
    {
        windows::alive(pid)
    }
}

/// CPU time (user + system) used so far by `pid` and its descendants, in
/// clock ticks, and the states of all their threads. `None` when it cannot
/// be read (not Linux, or the process is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSample {
    pub cpu_ticks: u64,
    /// The part of `cpu_ticks` spent in the kernel.
    pub sys_ticks: u64,
    /// Threads in the tree.
    pub threads: usize,
    /// Threads that are running or runnable (`R`).
    pub running: usize,
    /// What the first process's threads wait in (`/proc/PID/task/*/wchan`),
    /// deduplicated, e.g. `futex_wait_queue`.
    pub waits: Vec<String>,
}

pub fn sample_tree(pid: u32) -> Option<TreeSample> {
    #[cfg(target_os = "linux")]
    {
        linux::sample(pid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// One process's CPU time (all its threads, living and ended), its parent,
/// state and start time, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    pub parent: u32,
    /// The state letter of proc(5): `R`, `S`, `D`, `T`, `t`, `Z`, ...
    pub state: char,
    /// When it started, in clock ticks since boot: with the pid, it tells
    /// a process from a later one that reuses its pid.
    pub start_ticks: u64,
    /// User + system time, in clock ticks.
    pub cpu_ticks: u64,
    /// The part of `cpu_ticks` spent in the kernel.
    pub sys_ticks: u64,
}

impl ProcessSample {
    /// Stopped (`T`, by a signal or job control) or traced (`t`): it is
    /// not running, by someone's choice.
    pub fn stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }

    /// Gone but not yet reaped (`Z`), or dead (`X`).
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Read one process (not its descendants): one small `/proc` read.
/// `None` when it cannot be read (not Linux, or the process is gone).
pub fn process_sample(pid: u32) -> Option<ProcessSample> {
    #[cfg(target_os = "linux")]
    {
        linux::process_sample(pid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

#[cfg(target_os = "linux")]
mod linux;
#[cfg(windows)]
mod windows;
