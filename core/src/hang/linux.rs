//! Linux: what a process's threads are doing, read from `/proc`: the
//! system call a thread sits in and the address it was made from
//! (`/proc/PID/task/TID/syscall`), the file mapped at an address
//! (`/proc/PID/maps`), and a process's threads (`/proc/PID/task`).
//!
//! Nothing is attached to or stopped; each read is one small file. The
//! parsers are pure and tested on canned text.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::evidence::ThreadState;

/// The hang watchdog works here.
pub(super) const SUPPORTED: bool = true;

/// The number of `sched_yield` on this architecture.
// `c_long` is `i32` on 32-bit targets: the cast is needed there.
#[allow(clippy::unnecessary_cast)]
pub(super) const SCHED_YIELD: i64 = libc::SYS_sched_yield as i64;

/// What thread `tid` of process `pid` is doing. `None` when it cannot be
/// read (gone, or no right to: reading it needs the rights to attach a
/// debugger).
pub(super) fn thread_state(pid: u32, tid: u32) -> Option<ThreadState> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    parse_syscall(&text)
}

/// The threads of `pid`, the first (tid = pid) among them.
pub(super) fn threads(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// The files mapped into a process, with their address ranges.
#[derive(Debug, Default)]
pub(super) struct Maps {
    /// (start, end, executable, path) in address order.
    regions: Vec<(u64, u64, bool, PathBuf)>,
}

impl Maps {
    /// Read `/proc/PID/maps`. `None` when it cannot be read.
    pub fn read(pid: u32) -> Option<Self> {
        std::fs::read(format!("/proc/{pid}/maps"))
            .ok()
            .map(|text| Self::parse(&text))
    }

    fn parse(text: &[u8]) -> Self {
        let regions = text
            .split(|&b| b == b'\n')
            .filter_map(parse_region)
            .collect();
        Self { regions }
    }

    /// The file mapped at `address`, if any.
    pub fn file_at(&self, address: u64) -> Option<&Path> {
        self.regions
            .iter()
            .find(|(start, end, _, _)| (*start..*end).contains(&address))
            .map(|(_, _, _, p)| p.as_path())
    }

    /// The files with executable mappings (the program and its shared
    /// libraries), each once, in address order.
    pub fn executable_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for (_, _, exec, path) in &self.regions {
            if *exec && !out.contains(path) {
                out.push(path.clone());
            }
        }
        out
    }
}

/// `nr arg0 .. arg5 sp pc` in a system call; `-1 sp pc` when blocked
/// elsewhere; `running`.
fn parse_syscall(text: &str) -> Option<ThreadState> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields.as_slice() {
        ["running"] => Some(ThreadState::Running),
        [nr, .., pc] if fields.len() == 9 || fields.len() == 3 => {
            let nr: i64 = nr.parse().ok()?;
            let pc = hex(pc)?;
            Some(if nr < 0 {
                ThreadState::Elsewhere { pc }
            } else {
                ThreadState::Syscall { nr, pc }
            })
        }
        _ => None,
    }
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// `start-end perms offset dev inode path`: file-backed lines only.
fn parse_region(line: &[u8]) -> Option<(u64, u64, bool, PathBuf)> {
    let mut fields = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let range = std::str::from_utf8(fields.next()?).ok()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    if inode == b"0" {
        return None;
    }
    // The path is the rest of the line after the padding (it may contain
    // spaces); the kernel appends " (deleted)" to unlinked files.
    let at = line.iter().position(|&b| b == b'/')?;
    let path = &line[at..];
    let path = path.strip_suffix(b" (deleted)").unwrap_or(path);
    let (start, end) = range.split_once('-')?;
    Some((
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
        perms.get(2) == Some(&b'x'),
        PathBuf::from(OsStr::from_bytes(path)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        assert_eq!(parse_syscall("running\n"), Some(ThreadState::Running));
        assert_eq!(
            parse_syscall(
                "202 0x557c1d645544 0x80 0x8 0x0 0x4924924924924925 0x557c1d645598 0x7ffcffde0a80 0x7f86bb129823\n"
            ),
            Some(ThreadState::Syscall {
                nr: 202,
                pc: 0x7f86bb129823
            })
        );
        assert_eq!(
            parse_syscall("-1 0x7ffcffde0a80 0x7f86bb129823\n"),
            Some(ThreadState::Elsewhere { pc: 0x7f86bb129823 })
        );
        assert_eq!(parse_syscall(""), None);
        assert_eq!(parse_syscall("202 0x1 zz"), None);
    }

    const MAPS: &str = "\
557c1d600000-557c1d601000 r--p 00000000 fe:00 4242       /tmp/hang
557c1d601000-557c1d602000 r-xp 00001000 fe:00 4242       /tmp/hang
557c1e000000-557c1e021000 rw-p 00000000 00:00 0          [heap]
7f86baf4e000-7f86bb0a4000 r-xp 00026000 fe:00 326279     /usr/lib/x86_64-linux-gnu/libc.so.6
7f86bb110000-7f86bb118000 r--p 00000000 fe:00 326300     /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0
7f86bb118000-7f86bb138000 r-xp 00008000 fe:00 326300     /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0
7f86bb200000-7f86bb201000 r-xp 00000000 fe:00 777        /tmp/a dir/libx.so (deleted)
7ffcffdc0000-7ffcffde1000 rw-p 00000000 00:00 0          [stack]
";

    #[test]
    fn files_at_addresses() {
        let maps = Maps::parse(MAPS.as_bytes());
        assert_eq!(
            maps.file_at(0x7f86bb129823),
            Some(Path::new("/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0"))
        );
        assert_eq!(
            maps.file_at(0x7f86baffbc17),
            Some(Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(
            maps.file_at(0x7f86bb200010),
            Some(Path::new("/tmp/a dir/libx.so"))
        );
        assert_eq!(maps.file_at(0x557c1e000100), None, "the heap");
        assert_eq!(maps.file_at(0x10), None);
        assert_eq!(
            maps.executable_files(),
            [
                "/tmp/hang",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0",
                "/tmp/a dir/libx.so"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn this_thread_is_running_or_in_a_syscall() {
        let me = std::process::id();
        assert!(threads(me).contains(&me));
        // Reading its own syscall file, a thread is in the read system call
        // (or shown running).
        let tid = own_tid();
        match thread_state(me, tid) {
            Some(ThreadState::Running) | Some(ThreadState::Syscall { .. }) => {}
            other => panic!("{other:?}"),
        }
        let maps = Maps::read(me).expect("own maps");
        assert!(!maps.executable_files().is_empty());
    }

    /// This thread's id, from `/proc/thread-self`.
    fn own_tid() -> u32 {
        std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
            .expect("/proc/thread-self")
    }
}
