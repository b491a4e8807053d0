//! Ctrl-C during a map: the first stops starting jobs and waits for the
//! running ones (their results and job-log lines are kept, so `--resume`
//! continues after them); the second stops the running ones too. The
//! jobs run in process groups of their own, so a Ctrl-C typed at the
//! terminal reaches only caiclust, which decides.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many interrupts have arrived.
#[derive(Debug, Clone, Default)]
pub struct Interrupts {
    count: Arc<AtomicUsize>,
}

impl Interrupts {
    /// Catch Ctrl-C (SIGINT; Ctrl-C and Ctrl-Break on Windows). When a
    /// handler cannot be installed the default (dying) stays, and the
    /// error says why.
    pub fn install() -> Result<Interrupts, String> {
        let me = Interrupts::default();
        let count = me.count.clone();
        ctrlc::set_handler(move || {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
        Ok(me)
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}
