//! Nothing outlives a killed map. Jobs run in process groups of their own
//! (so that a timeout can stop a whole tree), which also means that when
//! `caiclust map` itself dies without cleaning up (`kill -9`, the OOM
//! killer, a crash) they would run on as orphans, and `--resume` would
//! start them a second time. So each map starts a small watcher, this
//! program again ([`crate::self_program`]) in a process group of its own,
//! holding the other end of a pipe. Every job and worker carries a marker
//! variable naming the run; when the pipe closes, however the map ended,
//! the watcher stops every process still carrying the marker (TERM, up to
//! two seconds, then KILL) and exits. After a normal end there is nothing
//! left to stop.
//!
//! # Platform-specific behaviour
//! Linux only (it finds the marked processes in `/proc/*/environ`);
//! elsewhere no watcher starts.

#[cfg(target_os = "linux")]
use std::time::{Duration, Instant};

/// Set (to the run's token) for the watcher process.
pub const WATCH_ENV: &str = "CAICLUST_REAPER_FOR";
/// Set (to the run's token) for every job and worker of a map.
pub const MARK_ENV: &str = "CAICLUST_MAP_RUN";

/// The watcher of one map run.
pub struct Reaper {
    #[cfg(target_os = "linux")]
    child: Option<std::process::Child>,
}

impl Reaper {
    /// Start the watcher for the run marked `token` (nothing happens when
    /// it cannot start: the run goes on, unwatched).
    pub fn start(token: &str) -> Reaper {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            use std::process::Stdio;
            let child = crate::self_program::SelfProgram::current().and_then(|me| {
                me.command()
                    .env(WATCH_ENV, token)
                    .env_remove(MARK_ENV)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .spawn()
                    .ok()
            });
            Reaper { child }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = token;
            Reaper {}
        }
    }

    /// The run is over: let the watcher sweep (normally finding nothing)
    /// and wait for it.
    pub fn finish(self) {
        #[cfg(target_os = "linux")]
        if let Some(mut child) = self.child {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// When this process was started as a watcher: wait for the map to end,
/// sweep, and exit. Call first thing in `main`.
pub fn serve_if_requested() {
    let Some(token) = std::env::var_os(WATCH_ENV) else {
        return;
    };
    #[cfg(target_os = "linux")]
    {
        use std::io::Read;
        // SAFETY: setting a signal's disposition to "ignore" is always
        // sound; the watcher must outlive a Ctrl-C or hangup meant for the
        // map.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
        }
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        sweep(&format!("{MARK_ENV}={}", token.to_string_lossy()));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = token;
    std::process::exit(0);
}

/// Stop every process whose environment holds `needle`.
#[cfg(target_os = "linux")]
fn sweep(needle: &str) {
    let start = Instant::now();
    let mut signal = libc::SIGTERM;
    loop {
        let pids = marked(needle);
        if pids.is_empty() {
            return;
        }
        if start.elapsed() > Duration::from_secs(2) {
            signal = libc::SIGKILL;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return;
        }
        // SAFETY: plain integer syscalls; a stale pid is at worst ESRCH.
        unsafe {
            let own_group = libc::getpgid(0);
            for &pid in &pids {
                let group = libc::getpgid(pid);
                if group > 1 && group != own_group {
                    libc::killpg(group, signal);
                }
                libc::kill(pid, signal);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live processes (not zombies) whose initial environment holds `needle`.
#[cfg(target_os = "linux")]
fn marked(needle: &str) -> Vec<libc::pid_t> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        })
        .filter_map(|pid| libc::pid_t::try_from(pid).ok())
        .collect()
}
