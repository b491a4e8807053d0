//! What ties a stalled process to a threading runtime, seen from outside:
//! the system call its first thread sits in and the library that call was
//! made from, or, for a spinning process, the runtimes it has mapped.
//!
//! Only the first thread (tid = pid) is looked at. The hang of GCC bug
//! 60035 is always there: libgomp keeps a pool's bookkeeping with the
//! thread that started it, and after fork the thread that forked is the
//! child's only thread, with the child's pid as its tid. A runtime's own
//! pool threads, on the other hand, wait inside the runtime whenever the
//! pool is idle (libgomp's workers sleep in `futex` called from libgomp),
//! also in a healthy worker that ran OpenMP and now waits for its next
//! task in libc.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::platform::{self, Maps, SCHED_YIELD};
use super::runtimes::{self, Runtimes};
use super::tracker::Key;

/// What a thread is doing. (Only Linux can tell.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) enum ThreadState {
    /// On a CPU or runnable: not in a system call.
    Running,
    /// In system call `nr`, made from the instruction at `pc`.
    Syscall { nr: i64, pc: u64 },
    /// Blocked outside a system call (a page fault, a stop), at `pc`.
    Elsewhere { pc: u64 },
}

/// Looks at suspects' threads, remembering what it learnt.
#[derive(Debug, Default)]
pub(super) struct Looker {
    runtimes: Runtimes,
    /// The last address each process's first thread waited at, and the
    /// runtime there (if it is one): an idle process keeps waiting at the
    /// same place, so its maps are read once.
    waits: HashMap<Key, (u64, Option<PathBuf>)>,
}

impl Looker {
    /// The runtime that the first thread of `key` waits in: it sits in a
    /// system call made from inside a threading runtime.
    pub fn blocked_in_runtime(&mut self, key: Key) -> Option<PathBuf> {
        let (pid, _) = key;
        let ThreadState::Syscall { pc, .. } = platform::thread_state(pid, pid)? else {
            return None;
        };
        if let Some((at, runtime)) = self.waits.get(&key) {
            if *at == pc {
                return runtime.clone();
            }
        }
        let runtime = Maps::read(pid)
            .and_then(|m| m.file_at(pc).map(Path::to_path_buf))
            .filter(|p| self.runtimes.identify(p).is_some());
        self.waits.insert(key, (pc, runtime.clone()));
        runtime
    }

    /// The runtime a spinning `key` spins in: its first thread runs or
    /// yields (it is not blocked in some other system call, as a process
    /// busy with I/O would be) and a threading runtime is mapped (an
    /// OpenMP one first).
    pub fn spinning_in_runtime(&mut self, key: Key) -> Option<PathBuf> {
        let (pid, _) = key;
        match platform::thread_state(pid, pid)? {
            ThreadState::Syscall { nr, .. } if nr != SCHED_YIELD => return None,
            _ => {}
        }
        let files = Maps::read(pid)?.executable_files();
        runtimes::pick_by_name(&files).cloned()
    }

    /// Forget the processes not in `seen`.
    pub fn retain(&mut self, seen: &HashSet<Key>) {
        self.waits.retain(|k, _| seen.contains(k));
    }
}

/// How many threads of `pid`, other than its first, wait in a system call
/// made from inside `runtime`: the workers of an idle pool.
pub(super) fn threads_waiting_in(pid: u32, runtime: &Path) -> usize {
    let Some(maps) = Maps::read(pid) else {
        return 0;
    };
    platform::threads(pid)
        .into_iter()
        .filter(|&tid| tid != pid)
        .filter(|&tid| {
            matches!(
                platform::thread_state(pid, tid),
                Some(ThreadState::Syscall { pc, .. }) if maps.file_at(pc) == Some(runtime)
            )
        })
        .count()
}
