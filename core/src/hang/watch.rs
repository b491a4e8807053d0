//! The watch's two threads and its handle: a sampling thread that scans
//! the tree once per period, and a diagnosis thread that judges the
//! suspects one at a time, so that a slow diagnosis never delays sampling.
//! The first hang found goes to the handle, and the watch ends.

use std::cell::OnceCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::evidence::Looker;
use super::tracker::{Key, Reading, Tracker};
use super::{platform, Hang, HangKind, Suspect, TreeWatchOptions};
use crate::tree;

/// A running watch (see [`watch_tree`]). Dropping it stops the watch and
/// waits for its threads to end (a diagnosis in progress is finished
/// first).
#[derive(Debug)]
pub struct TreeWatch {
    root: u32,
    /// To stop the sampling thread; `None` when no thread was started.
    events: Option<Sender<Event>>,
    hangs: Receiver<Hang>,
    found: OnceCell<Hang>,
    thread: Option<JoinHandle<()>>,
}

/// What wakes the sampling thread between scans.
#[derive(Debug)]
enum Event {
    Stop,
    Diagnosed { key: Key, hang: Option<Hang> },
}

/// Watch `root` and its descendants for a hang after fork, on a thread of
/// its own, until `root` exits (or is a zombie) or the handle is dropped.
/// The first hang found is sent to the handle once, and the watch ends.
///
/// `diagnose` is called once for each suspect (on a thread of its own,
/// one suspect at a time); [`diagnose_forked_child`](super::diagnose_forked_child)
/// is the default. It returns `None` (or panics) to leave the process
/// alone: it is
/// then looked at again only after it has looked stalled for another
/// stall period. A hang is reported only if the process is still stalled
/// when the diagnosis comes back.
///
/// See the [module documentation](super) for what counts as a suspect.
///
/// # Cost
///
/// One scan of `/proc` per sampling period
/// ([`TreeWatchOptions::sampling_period`]) plus one small read for each
/// forked descendant; a descendant's first thread and maps are read only
/// while its CPU use looks stalled (the maps of a blocked one only when it
/// waits somewhere new). Between scans the thread sleeps.
///
/// # Platform-specific behaviour
///
/// Linux only; elsewhere no thread is started and no hang is ever
/// reported.
///
/// # Errors
///
/// When a thread cannot be started.
pub fn watch_tree<D>(
    root: u32,
    options: TreeWatchOptions,
    diagnose: D,
) -> std::io::Result<TreeWatch>
where
    D: FnMut(&Suspect) -> Option<Hang> + Send + 'static,
{
    let (hangs_tx, hangs) = mpsc::channel();
    if !platform::SUPPORTED {
        return Ok(TreeWatch {
            root,
            events: None,
            hangs,
            found: OnceCell::new(),
            thread: None,
        });
    }
    let (events_tx, events_rx) = mpsc::channel();
    let (requests_tx, requests_rx) = mpsc::channel::<(Key, Suspect)>();
    let stopping = Arc::new(AtomicBool::new(false));
    let diagnoser = {
        let answers = events_tx.clone();
        let stopping = Arc::clone(&stopping);
        let mut diagnose = diagnose;
        std::thread::Builder::new()
            .name(format!("hangdx-{root}"))
            .spawn(move || {
                for (key, suspect) in requests_rx {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    // A diagnosis that panics found nothing; the watch
                    // goes on.
                    let hang = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        diagnose(&suspect)
                    }))
                    .unwrap_or(None);
                    if answers.send(Event::Diagnosed { key, hang }).is_err() {
                        break;
                    }
                }
            })?
    };
    let sampler = Sampler {
        root,
        period: options.sampling_period(),
        tracker: Tracker::new(options.stall),
        looker: Looker::default(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("hang-{root}"))
        .spawn(move || {
            sampler.run(&events_rx, &requests_tx, &hangs_tx);
            stopping.store(true, Ordering::Relaxed);
            drop(requests_tx);
            let _ = diagnoser.join();
        })?;
    Ok(TreeWatch {
        root,
        events: Some(events_tx),
        hangs,
        found: OnceCell::new(),
        thread: Some(thread),
    })
}

impl TreeWatch {
    /// The pid watched.
    pub fn root(&self) -> u32 {
        self.root
    }

    /// The hang, if one has been found; never blocks. Once found, it is
    /// returned on every call.
    pub fn hang(&self) -> Option<Hang> {
        if let Some(h) = self.found.get() {
            return Some(h.clone());
        }
        let h = self.hangs.try_recv().ok()?;
        Some(self.found.get_or_init(|| h).clone())
    }

    /// Wait up to `timeout` for a hang. Returns `None` at the timeout, or
    /// sooner when the watch has ended without finding one.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Hang> {
        if let Some(h) = self.found.get() {
            return Some(h.clone());
        }
        let h = self.hangs.recv_timeout(timeout).ok()?;
        Some(self.found.get_or_init(|| h).clone())
    }

    /// Has the watch ended (root exited, a hang was found, or nothing
    /// could be watched here), with all its threads?
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for TreeWatch {
    fn drop(&mut self) {
        if let Some(events) = self.events.take() {
            let _ = events.send(Event::Stop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sampling thread's state.
struct Sampler {
    root: u32,
    period: Duration,
    tracker: Tracker,
    looker: Looker,
}

impl Sampler {
    /// Scan once per period until root exits, a hang is found, or the
    /// handle says stop.
    fn run(
        mut self,
        events: &Receiver<Event>,
        requests: &Sender<(Key, Suspect)>,
        hangs: &Sender<Hang>,
    ) {
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                if !tree::alive(self.root) {
                    return;
                }
                for request in self.scan() {
                    if requests.send(request).is_err() {
                        return;
                    }
                }
                next = Instant::now() + self.period;
            }
            match events.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Event::Diagnosed { key, hang }) => {
                    let still_stalled = self.tracker.diagnosed(key, hang.is_some());
                    if let Some(hang) = hang.filter(|_| still_stalled) {
                        let _ = hangs.send(hang);
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Read every process forked (without exec) in the tree; the new
    /// suspects.
    fn scan(&mut self) -> Vec<(Key, Suspect)> {
        let mut seen = HashSet::new();
        let mut suspects = Vec::new();
        for pid in crate::watchdog::forked_children(self.root) {
            let Some(s) = tree::process_sample(pid) else {
                continue;
            };
            if s.exited() {
                continue;
            }
            let key = (pid, s.start_ticks);
            seen.insert(key);
            let reading = Reading {
                at: Instant::now(),
                cpu_ticks: s.cpu_ticks,
                sys_ticks: s.sys_ticks,
            };
            let looker = &mut self.looker;
            let suspect = self.tracker.observe(key, s.stopped(), reading, |how| {
                match how {
                    HangKind::Blocked => looker.blocked_in_runtime(key),
                    HangKind::Spinning => looker.spinning_in_runtime(key),
                }
                .map(Some)
            });
            if let Some(suspect) = suspect {
                suspects.push((key, suspect));
            }
        }
        self.tracker.retain(&seen);
        self.looker.retain(&seen);
        suspects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<TreeWatch>();
    }

    #[test]
    #[cfg(unix)] // starts `true`
    fn a_watch_of_a_process_that_is_gone_ends_at_once() {
        // This test program, listing its tests: a program that exits at
        // once on every platform (Windows has no `true`).
        let mut child = std::process::Command::new(std::env::current_exe().expect("this test"))
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start this test program");
        let pid = child.id();
        child.wait().expect("wait");
        let w = watch_tree(pid, TreeWatchOptions::default(), |_: &Suspect| None)
            .expect("start the watch");
        assert_eq!(w.recv_timeout(Duration::from_secs(5)), None);
        // The channel closes as the thread returns: wait for the thread
        // to be done (a bounded wait on that condition).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !w.is_finished() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(w.is_finished() || !platform::SUPPORTED);
        assert_eq!(w.hang(), None);
    }
}
