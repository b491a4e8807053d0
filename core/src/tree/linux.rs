//! Linux: process trees read from `/proc`.

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
