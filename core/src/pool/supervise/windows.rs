//! Windows (and any system without fork): workers are spawned; fork
//! servers do not exist.

use std::process::Command;

use super::super::Scheduler;
use crate::task::PoolKind;

/// Nothing to set up besides what `Command` does.
pub(super) fn prepare_command(_cmd: &mut Command) {}

impl Scheduler {
    pub(super) fn ensure_server(&mut self, _kind: PoolKind) -> Result<(), String> {
        Err("forkserver and fork need a Unix system; use spawn".into())
    }
}
