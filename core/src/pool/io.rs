//! The scheduler's channels to its processes. Every write goes through a
//! [`WorkerInput`], a thread of the worker's own: the scheduler hands it
//! bytes and goes on, so a worker that does not read (busy on a long task
//! with megabytes of arguments queued for it) delays nobody. Answers are
//! read by a thread per worker and arrive as events.

use std::io::Write;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;

use super::events::Event;
use super::state::Server;
use crate::task::ExitInfo;
use crate::worker::frame::FrameReader;

/// A process's input, written by a thread of its own. Dropping it closes
/// the input once what was sent before is written (a worker reads that as
/// "no more tasks"), or at once if the process has gone.
pub(crate) struct WorkerInput {
    frames: Sender<Vec<u8>>,
    /// Bytes handed over and not yet written.
    queued: Arc<AtomicUsize>,
}

impl WorkerInput {
    /// Start the writer of `writer`; `None` when no thread can be started.
    pub fn start(name: &str, writer: Box<dyn Write + Send>) -> Option<WorkerInput> {
        let (frames, rx) = mpsc::channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let left = queued.clone();
        std::thread::Builder::new()
            .name(format!("caiclust-in-{name}"))
            .spawn(move || {
                let mut writer = writer;
                for frame in rx {
                    let ok = writer
                        .write_all(&frame)
                        .and_then(|_| writer.flush())
                        .is_ok();
                    left.fetch_sub(frame.len(), Ordering::Relaxed);
                    if !ok {
                        // The process went away: its end is seen by the
                        // reader; what is left is never written.
                        return;
                    }
                }
            })
            .ok()?;
        Some(WorkerInput { frames, queued })
    }

    /// Queue `bytes` for writing; false when the writer has stopped (the
    /// process is going away).
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        let n = bytes.len();
        self.queued.fetch_add(n, Ordering::Relaxed);
        if self.frames.send(bytes).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Bytes sent and not yet written.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// Ask a fork server for worker `serial`.
pub(super) fn send_fork(server: &mut Server, serial: u64) {
    if let Some(input) = server.input.as_ref() {
        let line = format!("{{\"fork\": {serial}}}\n");
        if !input.send(line.into_bytes()) {
            server.input = None;
        }
    }
}

/// Read a worker's answers until EOF; a second thread waits for the
/// process (when it is our child) and reports how it ended.
pub(super) fn spawn_reader(
    serial: u64,
    out: Box<dyn std::io::Read + Send>,
    child: Option<Child>,
    events: Sender<Event>,
) {
    if let Some(mut child) = child {
        let events = events.clone();
        std::thread::spawn(move || {
            let exit = child.wait().ok().map(ExitInfo::from_status);
            let _ = events.send(Event::WorkerExited { serial, exit });
        });
    }
    std::thread::spawn(move || {
        read_answers(serial, FrameReader::new(out), &events);
        let _ = events.send(Event::WorkerEof { serial });
    });
}

/// Read a worker's answers until EOF, each group in one event.
pub(super) fn read_answers<R: std::io::Read>(
    serial: u64,
    reader: FrameReader<R>,
    events: &Sender<Event>,
) {
    reader.read_groups(|msgs| events.send(Event::FromWorkerBatch { serial, msgs }).is_ok());
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn sending_never_waits_for_the_reader() {
        let (mut reader, writer) = std::io::pipe().expect("a pipe");
        let input = WorkerInput::start("test", Box::new(writer)).expect("the writer thread");
        // Far more than a pipe holds, and nobody reads yet: every send
        // returns at once and the bytes wait.
        let frames: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1 << 20]).collect();
        for f in &frames {
            assert!(input.send(f.clone()));
        }
        assert!(input.queued() > 1 << 20, "{} bytes queued", input.queued());
        // Dropping the input closes it once everything was written.
        drop(input);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).expect("read to EOF");
        assert_eq!(got, frames.concat());
    }

    #[test]
    fn a_reader_that_went_away_stops_the_writer() {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        let input = WorkerInput::start("test", Box::new(writer)).expect("the writer thread");
        drop(reader);
        // The first write fails (EPIPE); the thread ends, and sends then
        // say so. A bounded wait for that.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut refused = false;
        while !refused && std::time::Instant::now() < deadline {
            refused = !input.send(vec![0; 1024]);
            std::thread::yield_now();
        }
        assert!(refused, "sends still accepted after the reader closed");
    }
}
