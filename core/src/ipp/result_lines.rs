//! The driver's result lines. Results travel together: a line
//! `{"results": [ITEM, ...]}` holds, in the order the driver sent them,
//! single results (one JSON object each, read by [`super::wire::apply`]) and
//! batch blocks, the plain values one engine returned for a batch as the
//! engine wrote them:
//!
//! ```text
//! {"batch": {"engine": E, "pid": P, "host": H, "attempts": N},
//!  "ids": [ID, ...], "starts": [NS, ...], "ends": [NS, ...],
//!  "values": [VALUE, ...]}
//! ```
//!
//! (four arrays of one length: task, start and end in nanoseconds since
//! the epoch, value).
//!
//! A block, or a single message, may also be a line of its own.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::task::{Outcome, TaskResult};

/// One message of a driver line.
pub(super) enum Message {
    /// An event, or one task's result ([`super::wire::apply`]).
    One(Value),
    /// The results of a batch block.
    Results(Vec<TaskResult>),
}

/// The messages of one line of the driver's output, in order.
pub(super) fn split(msg: Value) -> Vec<Message> {
    match msg {
        Value::Object(mut o) if o.len() == 1 && o.get("results").is_some_and(Value::is_array) => {
            match o.remove("results") {
                Some(Value::Array(items)) => items.into_iter().map(one).collect(),
                _ => Vec::new(),
            }
        }
        other => vec![one(other)],
    }
}

fn one(msg: Value) -> Message {
    if msg.get("batch").is_some() && msg.get("ids").is_some() {
        Message::Results(batch_results(msg))
    } else {
        Message::One(msg)
    }
}

fn array(block: &mut Value, key: &str) -> Vec<Value> {
    match block[key].take() {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// The results of a batch block. An item without an integer id is
/// skipped, and a start or end that is not a time gives none (the block
/// comes from our own engine code, so this does not happen in practice).
fn batch_results(mut block: Value) -> Vec<TaskResult> {
    let head = block["batch"].take();
    let attempts = head["attempts"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1);
    let pid = head["pid"].as_u64().and_then(|n| u32::try_from(n).ok());
    // The slot is the engine: ipyparallel's id, 1-based.
    let slot = head["engine"]
        .as_u64()
        .and_then(|e| usize::try_from(e).ok())
        .map(|e| e + 1);
    let ids = array(&mut block, "ids");
    let starts = array(&mut block, "starts");
    let ends = array(&mut block, "ends");
    let values = array(&mut block, "values");
    ids.iter()
        .zip(values)
        .enumerate()
        .filter_map(|(i, (id, value))| {
            let mut r = TaskResult::bare(id.as_u64()?, Outcome::Succeeded { value });
            r.attempts = attempts;
            r.pid = pid;
            r.slot = slot;
            let start = starts.get(i).and_then(Value::as_u64);
            let end = ends.get(i).and_then(Value::as_u64);
            r.started = start
                .filter(|s| *s > 0)
                .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(s)));
            r.runtime = match (start, end) {
                (Some(s), Some(e)) => Duration::from_nanos(e.saturating_sub(s)),
                _ => Duration::ZERO,
            };
            Some(r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipp::{wire, IppEvent};
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};

    fn ids(msgs: &[Message]) -> Vec<u64> {
        let (mut pids, mut engines) = (BTreeSet::new(), BTreeMap::new());
        let mut out = Vec::new();
        for m in msgs {
            match m {
                Message::One(v) => match wire::apply(v, &mut pids, &mut engines) {
                    Some(IppEvent::Result(r)) => out.push(r.id),
                    other => panic!("not a result: {other:?}"),
                },
                Message::Results(rs) => out.extend(rs.iter().map(|r| r.id)),
            }
        }
        out
    }

    #[test]
    fn results_of_one_line_keep_their_order() {
        let line = json!({"results": [
            {"id": 3, "ok": 1, "attempts": 1},
            {"batch": {"engine": 0, "pid": 7, "host": "h", "attempts": 1},
             "ids": [5, 4], "starts": [1_500_000_000_000_000_000_u64, 1_500_000_000_250_000_000_u64],
             "ends": [1_500_000_000_250_000_000_u64, 1_500_000_000_250_000_000_u64],
             "values": [{"a": [1]}, "x"]},
            {"id": 1, "err": {"kind": "cancelled", "reason": "cancelled"}, "attempts": 0},
        ]});
        assert_eq!(ids(&split(line)), [3, 5, 4, 1]);
        // A single message, a lone result, a lone block stay one message.
        assert_eq!(split(json!({"event": "notice", "message": "m"})).len(), 1);
        assert_eq!(ids(&split(json!({"id": 2, "ok": null}))), [2]);
        assert!(split(json!({"results": []})).is_empty());
    }

    #[test]
    fn a_batch_block_gives_each_task_its_result() {
        let block = json!({"batch": {"engine": 1, "pid": 42, "host": "h", "attempts": 2},
                           "ids": [9, "bad", 10],
                           "starts": [1_700_000_000_000_000_000_u64, 0, 1_700_000_000_900_000_000_u64],
                           "ends": [1_700_000_000_500_000_000_u64, 0, 1_700_000_000_800_000_000_u64],
                           "values": [[1, "two"], 0, null]});
        let mut msgs = split(block);
        assert_eq!(msgs.len(), 1);
        let Some(Message::Results(rs)) = msgs.pop() else {
            panic!("not a block");
        };
        assert_eq!(rs.len(), 2, "the item without an id is skipped");
        let r = &rs[0];
        assert_eq!(r.id, 9);
        assert_eq!(
            r.outcome,
            Outcome::Succeeded {
                value: json!([1, "two"])
            }
        );
        assert_eq!((r.attempts, r.pid, r.slot), (2, Some(42), Some(2)));
        assert_eq!(r.runtime, Duration::from_millis(500));
        assert_eq!(
            r.started,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(rs[1].id, 10);
        assert_eq!(rs[1].outcome, Outcome::Succeeded { value: json!(null) });
        assert_eq!(
            rs[1].runtime,
            Duration::ZERO,
            "an end before the start is no run time"
        );
    }
}
