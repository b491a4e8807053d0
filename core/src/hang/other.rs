//! Systems other than Linux: nothing can be read of another process's
//! threads yet, so the hang watchdog starts no thread and never reports.

use std::path::{Path, PathBuf};

use super::evidence::ThreadState;

/// The hang watchdog does not work here.
pub(super) const SUPPORTED: bool = false;

/// No system call is known by number here.
pub(super) const SCHED_YIELD: i64 = -1;

/// Always `None`: unknown here.
pub(super) fn thread_state(_pid: u32, _tid: u32) -> Option<ThreadState> {
    None
}

/// Always empty: unknown here.
pub(super) fn threads(_pid: u32) -> Vec<u32> {
    Vec::new()
}

/// The files mapped into a process: unknown here.
#[derive(Debug, Default)]
pub(super) struct Maps;

impl Maps {
    /// Always `None`: unknown here.
    pub fn read(_pid: u32) -> Option<Self> {
        None
    }

    /// Always `None`.
    pub fn file_at(&self, _address: u64) -> Option<&Path> {
        None
    }

    /// Always empty.
    pub fn executable_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}
