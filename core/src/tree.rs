//! Process trees: find a process's descendants, stop a whole tree (TERM, a
//! grace period, then KILL), and read how much CPU a tree has used (for the
//! hang watchdog).
//!
//! Every process caiclust starts leads its own process group, so one
//! `killpg` reaches descendants that stayed in it; on Linux the
//! descendants found through `/proc` are signalled too, which also reaches
//! those that moved to a process group of their own.

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
/// platform can tell. Linux reads `/proc`; elsewhere the answer is empty
/// and the process group does the work.
pub fn descendants(pid: u32) -> Vec<u32> {
    descendants_with_parents(pid)
        .into_iter()
        .map(|(child, _)| child)
        .collect()
}

/// As [`descendants`], each with its parent's pid.
pub fn descendants_with_parents(pid: u32) -> Vec<(u32, u32)> {
    #[cfg(target_os = "linux")]
    {
        let table = linux::parent_table();
        let mut out: Vec<(u32, u32)> = Vec::new();
        let mut frontier = vec![pid];
        while let Some(p) = frontier.pop() {
            for &(child, parent) in &table {
                if parent == p && child != pid && !out.iter().any(|&(c, _)| c == child) {
                    out.push((child, parent));
                    frontier.push(child);
                }
            }
        }
        out
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        Vec::new()
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
        let _ = signal;
        for &p in &pids {
            windows::terminate(p);
        }
    }
    pids
}

/// Does the process group led (once) by `pgid` still have members?
pub fn group_alive(pgid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 to a group only checks for existence.
        unsafe { libc::killpg(pgid as libc::pid_t, 0) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = pgid;
        false
    }
}

/// Signal every member of the process group `pgid`.
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
    #[cfg(not(unix))]
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
mod linux {
    use super::{ProcessSample, TreeSample};

    /// (pid, parent pid) of every process.
    pub(super) fn parent_table() -> Vec<(u32, u32)> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(ppid) = field(&stat, 4).and_then(|f| f.parse().ok()) {
                    out.push((pid, ppid));
                }
            }
        }
        out
    }

    /// Field `n` (1-based as in proc(5)) of a stat line; the command name
    /// in parentheses may contain spaces, so fields count from its end.
    pub(super) fn field(stat: &str, n: usize) -> Option<&str> {
        let close = stat.rfind(')')?;
        if n <= 2 {
            return None;
        }
        stat[close + 1..].split_whitespace().nth(n - 3)
    }

    pub(super) fn state_of(stat: &str) -> Option<char> {
        field(stat, 3).and_then(|s| s.chars().next())
    }

    /// (user + system, system) clock ticks.
    fn ticks(stat: &str) -> (u64, u64) {
        let utime: u64 = field(stat, 14).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = field(stat, 15).and_then(|f| f.parse().ok()).unwrap_or(0);
        (utime + stime, stime)
    }

    pub(super) fn process_sample(pid: u32) -> Option<ProcessSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (cpu_ticks, sys_ticks) = ticks(&stat);
        Some(ProcessSample {
            parent: field(&stat, 4)?.parse().ok()?,
            state: state_of(&stat)?,
            start_ticks: field(&stat, 22)?.parse().ok()?,
            cpu_ticks,
            sys_ticks,
        })
    }

    pub(super) fn sample(pid: u32) -> Option<TreeSample> {
        let mut procs = vec![pid];
        procs.extend(super::descendants(pid));
        let mut s = TreeSample {
            cpu_ticks: 0,
            sys_ticks: 0,
            threads: 0,
            running: 0,
            waits: Vec::new(),
        };
        let mut any = false;
        for (i, p) in procs.iter().enumerate() {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let base = t.path();
                let Ok(stat) = std::fs::read_to_string(base.join("stat")) else {
                    continue;
                };
                any = true;
                let (cpu, sys) = ticks(&stat);
                s.cpu_ticks += cpu;
                s.sys_ticks += sys;
                s.threads += 1;
                if state_of(&stat) == Some('R') {
                    s.running += 1;
                }
                if i == 0 {
                    if let Ok(w) = std::fs::read_to_string(base.join("wchan")) {
                        let w = w.trim().to_string();
                        if !w.is_empty() && w != "0" && !s.waits.contains(&w) {
                            s.waits.push(w);
                        }
                    }
                }
            }
        }
        any.then_some(s)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stat_fields_count_from_the_end_of_the_name() {
            let stat = "123 (a b) c) S 45 123 123 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0";
            assert_eq!(field(stat, 3), Some("S"));
            assert_eq!(field(stat, 4), Some("45"));
            assert_eq!(ticks(stat), (10, 3));
            assert_eq!(state_of(stat), Some('S'));
        }

        #[test]
        fn descendants_of_this_process_include_a_grandchild() {
            let mut child = std::process::Command::new("sh")
                .args(["-c", "sleep 5 & wait"])
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let found = loop {
                let d = super::super::descendants(std::process::id());
                if d.len() >= 2 || std::time::Instant::now() > deadline {
                    break d;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            assert!(found.contains(&child.id()), "{found:?}");
            assert!(found.len() >= 2, "the sleep under sh: {found:?}");
            super::super::signal_tree(child.id(), super::super::StopSignal::Kill);
            let _ = child.wait();
        }
    }
}

#[cfg(windows)]
mod windows {
    use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, TerminateProcess, PROCESS_QUERY_LIMITED_INFORMATION,
        PROCESS_TERMINATE,
    };

    pub(super) fn terminate(pid: u32) {
        // SAFETY: the handle is checked and closed; TerminateProcess on a
        // handle we opened with PROCESS_TERMINATE.
        unsafe {
            let h = OpenProcess(PROCESS_TERMINATE, 0, pid);
            if !h.is_null() {
                TerminateProcess(h, 1);
                CloseHandle(h);
            }
        }
    }

    pub(super) fn alive(pid: u32) -> bool {
        // SAFETY: as above, with a query-only handle.
        unsafe {
            let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
            if h.is_null() {
                return false;
            }
            let mut code = 0u32;
            let ok = GetExitCodeProcess(h, &mut code);
            CloseHandle(h);
            ok != 0 && code == STILL_ACTIVE as u32
        }
    }
}
