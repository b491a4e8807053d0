//! The driver's standard input. Submits go through a writer thread: those
//! queued while it writes travel together as one line,
//! `{"op": "submit_many", "tasks": [RUN, ...]}`, so that a caller
//! submitting faster than the driver reads costs the driver one line per
//! group rather than one per task. Other messages (cancel, withdraw,
//! shutdown) are written at once, after the submits queued before them:
//! the driver reads everything in the order it was sent.

use std::io::Write;
use std::process::ChildStdin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_json::Value;

#[derive(Default)]
struct Queued {
    /// Tasks to submit, each as JSON text: a `run` message, or a Python
    /// call's compact row `[id, function, args, timeout]`.
    msgs: Vec<String>,
    closed: bool,
    /// The writer waits for messages (it needs waking).
    idle: bool,
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
        if q.idle {
            q.idle = false;
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
        loop {
            {
                let mut q = relock(&self.queued);
                while q.msgs.is_empty() && !q.closed {
                    q.idle = true;
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                q.idle = false;
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
}
