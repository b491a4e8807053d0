//! The driver's standard input. Submits go through a writer thread: those
//! queued while it writes travel together as one line,
//! `{"op": "submit_many", "tasks": [RUN, ...]}`, so that a caller
//! submitting faster than the driver reads costs the driver one line per
//! group rather than one per task. Other messages (cancel, withdraw,
//! shutdown) are written at once, after the submits queued before them:
//! the driver reads everything in the order it was sent.
//!
//! While submits stream in (the last line went out less than [`BURST`]
//! ago), the writer gathers them as long as more keep coming within
//! [`GATHER_WAIT`] of each other, up to [`GATHER_MAX`] tasks or
//! [`GATHER_LIMIT`], before it writes. A caller that submits thousands in
//! a loop then reaches the driver in a line or two, which it hands out as
//! one batch per engine; written as they came, they would make hundreds
//! of short lines (the caller is descheduled now and then on a busy
//! machine), each costing the driver a round of its loop, and small
//! first batches. A submit after a pause goes out at once.

use std::io::Write;
use std::process::ChildStdin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Submits closer than this to the last line written count as a stream.
const BURST: Duration = Duration::from_millis(2);
/// A stream's submits closer than this to each other are gathered.
const GATHER_WAIT: Duration = Duration::from_micros(500);
/// At most this many tasks are gathered in a line ...
const GATHER_MAX: usize = 16_384;
/// ... for at most this long.
const GATHER_LIMIT: Duration = Duration::from_millis(20);

use serde_json::Value;

#[derive(Default)]
struct Queued {
    /// Tasks to submit, each as JSON text: a `run` message, or a Python
    /// call's compact row `[id, function, args, timeout]`.
    msgs: Vec<String>,
    closed: bool,
    /// The writer waits for messages (it needs waking).
    idle: bool,
    /// The writer gathers a stream's submits (wake it at GATHER_MAX).
    gathering: bool,
}

pub(super) struct Input {
    queued: Mutex<Queued>,
    wake: Condvar,
    stdin: Mutex<Option<ChildStdin>>,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Input {
    /// The input and its writer thread (which ends at [`Input::close`]).
    pub(super) fn start(stdin: Option<ChildStdin>) -> Arc<Input> {
        let input = Arc::new(Input {
            queued: Mutex::new(Queued::default()),
            wake: Condvar::new(),
            stdin: Mutex::new(stdin),
        });
        let writer = Arc::clone(&input);
        std::thread::spawn(move || writer.write_queued());
        input
    }

    /// Queue a task (a `run` message or a compact row, as JSON text) for
    /// the writer thread.
    pub(super) fn submit(&self, msg: String) {
        let mut q = relock(&self.queued);
        q.msgs.push(msg);
        if q.idle || (q.gathering && q.msgs.len() >= GATHER_MAX) {
            q.idle = false;
            q.gathering = false;
            self.wake.notify_one();
        }
    }

    /// Write a message now, after the submits queued before it.
    pub(super) fn send(&self, msg: &Value) -> Result<(), String> {
        let mut stdin = relock(&self.stdin);
        let Some(out) = stdin.as_mut() else {
            return Err("the backend is stopping".into());
        };
        let mut text = queued_line(std::mem::take(&mut relock(&self.queued).msgs));
        text.push_str(&msg.to_string());
        text.push('\n');
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| format!("cannot write to the driver: {e}"))
    }

    /// Close the driver's input (end of input means stop to it); the
    /// writer thread ends.
    pub(super) fn close(&self) {
        relock(&self.queued).closed = true;
        self.wake.notify_one();
        drop(relock(&self.stdin).take());
    }

    fn write_queued(&self) {
        let mut last_write: Option<Instant> = None;
        loop {
            {
                let mut q = relock(&self.queued);
                while q.msgs.is_empty() && !q.closed {
                    q.idle = true;
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                q.idle = false;
                let streaming = last_write.is_some_and(|t| t.elapsed() < BURST);
                let since = Instant::now();
                while streaming && q.msgs.len() < GATHER_MAX && !q.closed {
                    let before = q.msgs.len();
                    q.gathering = true;
                    q = self
                        .wake
                        .wait_timeout_while(q, GATHER_WAIT, |q| q.gathering && !q.closed)
                        .map(|(q, _)| q)
                        .unwrap_or_else(|p| p.into_inner().0);
                    q.gathering = false;
                    if q.msgs.len() == before || since.elapsed() >= GATHER_LIMIT {
                        break;
                    }
                }
                if q.closed {
                    return;
                }
            }
            // The queue is taken under the input's lock: nothing sent
            // meanwhile can overtake it.
            let mut stdin = relock(&self.stdin);
            let text = queued_line(std::mem::take(&mut relock(&self.queued).msgs));
            let Some(out) = stdin.as_mut() else { return };
            // A driver gone is noticed by the reader (the tasks still
            // pending get their results there).
            if out
                .write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return;
            }
            last_write = Some(Instant::now());
        }
    }
}

/// Queued submits as one line (empty when none).
fn queued_line(msgs: Vec<String>) -> String {
    if msgs.is_empty() {
        return String::new();
    }
    let mut line = String::with_capacity(msgs.iter().map(|m| m.len() + 1).sum::<usize>() + 32);
    line.push_str(r#"{"op":"submit_many","tasks":["#);
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(m);
    }
    line.push_str("]}\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queued_submits_make_one_line() {
        assert_eq!(queued_line(Vec::new()), "");
        let one = queued_line(vec![json!({"op": "run", "id": 1}).to_string()]);
        assert_eq!(
            one,
            "{\"op\":\"submit_many\",\"tasks\":[{\"id\":1,\"op\":\"run\"}]}\n"
        );
        let two = queued_line(vec![
            json!({"op": "run", "id": 1}).to_string(),
            json!([2, "m:f", [1], null]).to_string(),
        ]);
        assert_eq!(two.lines().count(), 1);
        let v: Value = serde_json::from_str(&two).unwrap();
        assert_eq!(v["op"], "submit_many");
        assert_eq!(v["tasks"][0]["id"], 1);
        assert_eq!(v["tasks"][1][0], 2);
    }

    /// A stream of submits reaches the driver in a few lines, every task
    /// once and in order (here `cat` stands in for the driver).
    #[cfg(unix)]
    #[test]
    fn a_stream_of_submits_travels_in_few_lines() {
        use std::process::{Command, Stdio};
        let out = tempfile::NamedTempFile::new().unwrap();
        let mut cat = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(out.reopen().unwrap())
            .spawn()
            .unwrap();
        let input = Input::start(cat.stdin.take());
        let n = 20_000u64;
        for id in 0..n {
            input.submit(json!([id, "m:f", [id], null]).to_string());
        }
        input.send(&json!({"op": "shutdown"})).unwrap();
        input.close();
        assert!(cat.wait().unwrap().success());
        let text = std::fs::read_to_string(out.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<u64> = lines
            .iter()
            .filter(|v| v["op"] == "submit_many")
            .flat_map(|v| v["tasks"].as_array().unwrap().iter())
            .map(|t| t[0].as_u64().unwrap())
            .collect();
        assert_eq!(ids, (0..n).collect::<Vec<_>>());
        assert_eq!(lines.last().unwrap()["op"], "shutdown");
        assert!(lines.len() <= 40, "{} lines for {n} submits", lines.len());
    }
}
