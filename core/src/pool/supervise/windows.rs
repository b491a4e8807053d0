//! Windows (and any system without fork): workers are spawned, each in a
//! Job Object of its own (see [`crate::job`]): stopping a worker ends its
//! tasks' children too, and workers die with this process; fork servers
//! do not exist.

use std::process::Command;

use super::super::Scheduler;
use crate::task::PoolKind;

/// Start suspended, for `job::adopt` to put the worker in its job first.
pub(super) fn prepare_command(cmd: &mut Command) {
    crate::job::prepare(cmd);
}

impl Scheduler {
    pub(super) fn ensure_server(&mut self, _kind: PoolKind) -> Result<(), String> {
        Err("forkserver and fork need a Unix system; use spawn".into())
    }
}
