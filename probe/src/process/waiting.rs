//! Linux: which libraries a process's threads are waiting in, from the
//! program counter each blocked thread reports in
//! `/proc/PID/task/TID/syscall` (`NR args… SP PC`; `running` for a thread
//! on a CPU), matched against the executable mappings of
//! `/proc/PID/maps`.
//!
//! A GNU OpenMP pool whose threads were started waits for work in
//! libgomp's own futex calls (an inline `syscall` in its code): threads
//! waiting in `libgomp*.so` are the evidence that the pool exists, which a
//! forked child inherits the bookkeeping of and then hangs on (issue #14:
//! "a live process whose pool threads exist"). A library that is only
//! loaded has no such threads.
//!
//! Reading another user's threads needs ptrace rights; then nothing is
//! known (`None`), never a guess.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An executable range of a file.
struct CodeRange {
    start: u64,
    end: u64,
    path: PathBuf,
}

/// Threads of `pid` blocked in each library's code (only libraries with
/// at least one); `None` when the threads cannot be read.
pub(crate) fn threads_waiting_in(pid: u32) -> Option<BTreeMap<PathBuf, usize>> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let maps = std::fs::read_to_string(dir.join("maps")).ok()?;
    let ranges = code_ranges(&maps);
    let mut out: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let tasks = std::fs::read_dir(dir.join("task")).ok()?;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("syscall")) else {
            // A thread that exited meanwhile; no rights is found below.
            continue;
        };
        if text.trim().is_empty() {
            // Empty without ptrace rights.
            return None;
        }
        if let Some(pc) = program_counter(&text) {
            if let Some(r) = ranges.iter().find(|r| r.start <= pc && pc < r.end) {
                *out.entry(r.path.clone()).or_default() += 1;
            }
        }
    }
    Some(out)
}

/// The executable, file-backed mappings of a maps text.
fn code_ranges(maps: &str) -> Vec<CodeRange> {
    maps.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(6, ' ');
            let range = parts.next()?;
            let perms = parts.next()?;
            let path = parts.nth(3)?.trim_start();
            if perms.as_bytes().get(2) != Some(&b'x') || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(CodeRange {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                path: Path::new(path.trim_end_matches(" (deleted)")).to_path_buf(),
            })
        })
        .collect()
}

/// The PC of a blocked thread: the last field, unless it is `running`.
fn program_counter(syscall: &str) -> Option<u64> {
    let fields: Vec<&str> = syscall.split_whitespace().collect();
    if fields.len() < 3 {
        return None;
    }
    u64::from_str_radix(fields.last()?.trim_start_matches("0x"), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcs_are_matched_to_executable_file_mappings() {
        let maps = "7f0000000000-7f0000001000 r--p 00000000 08:01 11 /usr/lib/libgomp.so.1.0.0\n\
                    7f0000001000-7f0000020000 r-xp 00001000 08:01 11 /usr/lib/libgomp.so.1.0.0\n\
                    7f0000030000-7f0000031000 rw-p 00000000 00:00 0 \n\
                    7f0000040000-7f0000050000 r-xp 00000000 08:01 12 /tmp/a b.so (deleted)\n";
        let ranges = code_ranges(maps);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].path, Path::new("/usr/lib/libgomp.so.1.0.0"));
        assert_eq!(ranges[1].path, Path::new("/tmp/a b.so"));
        let pc = program_counter("202 0x7f0 0x80 0x0 0x0 0x0 0x0 0x7ffc0000 0x7f0000001234\n");
        assert_eq!(pc, Some(0x7f0000001234));
        assert_eq!(program_counter("running\n"), None);
        assert_eq!(
            program_counter("-1 0x7ffc 0x7f0000001234\n"),
            Some(0x7f0000001234)
        );
    }

    #[test]
    fn this_process_is_read() {
        // The test thread waits in nothing of note; the reading works.
        assert!(threads_waiting_in(std::process::id()).is_some());
    }
}
