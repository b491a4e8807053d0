//! The protocol between a cluster and its workers (Python or Rust) and
//! fork servers.
//!
//! # Workers: length-prefixed frames
//!
//! Both ways, a worker's channel carries frames (the framing itself is in
//! [`super::frame`]):
//!
//! ```text
//! u32 LE frame_len | u32 LE text_len | text | blobs
//! ```
//!
//! `frame_len` counts the bytes after itself (`4 + text_len + blobs`), at
//! most [`super::frame::MAX_FRAME_LEN`] (2 GiB). `text` is UTF-8 JSON lines,
//! each ending in `\n`; `blobs` are raw byte payloads, concatenated in the
//! order the lines refer to them, with nothing between them.
//!
//! * Parent → worker: one batch line per frame (see [`RunRef`]). Tasks with
//!   a byte payload are listed in `"p": [[INDEX, LEN], ...]` (INDEX: the
//!   task's position in the batch; LEN: its blob's length, `null` when the
//!   payload was too large to send, which fails that task). A frame whose
//!   text has no `ids` (`{"stop": true}`) stops the worker; so does EOF.
//! * Worker → parent: the hello (`{"hello": {"pid": P, "worker": N}}`) is
//!   the first frame; then answers, one line each, several per frame when
//!   they were ready together: `{"id":N,"ok":VALUE}`,
//!   `{"id":N,"err":{"type":..,"message":..,"traceback":..}}`, or
//!   `{"id":N,"blob":LEN}` whose value is the frame's next `LEN` blob
//!   bytes (a pickled result, or a Rust bytes task's result).
//!
//! # Fork servers: JSON lines
//!
//! A fork server's control channel (its stdin/stdout) stays one JSON
//! message per line: `{"fork": N}` in; its hello, `{"forked": N, "pid":
//! P}`, `{"fork_error": N, "message": ..}` and `{"exited": P, "code"|
//! "signal": ..}` out.

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Parent → worker: a batch of tasks, by column (far cheaper to decode
/// than an object per task, in Python above all):
///
/// `{"ids": [1, 2], "f": "pkg.mod:func", "a": [ARGS1, ARGS2]}`, with
/// `"fs": [NAME1, NAME2]` instead of `"f"` when the functions differ, and
/// `"p": [[INDEX, LEN], ..]` when some tasks carry a byte payload (their
/// blobs follow the text of the frame, in this order). Any message without
/// `ids` (`{"stop": true}`) stops the worker.
#[derive(Debug, Serialize)]
pub(crate) struct RunRef<'a> {
    pub ids: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<Vec<&'a str>>,
    pub a: Vec<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p: Option<Vec<(usize, Option<usize>)>>,
    /// The payloads sent, in the order of `p`'s non-null entries.
    #[serde(skip)]
    pub blobs: Vec<&'a [u8]>,
}

/// One task as a batch borrows it from the ledger: id, function name, JSON
/// arguments, byte payload.
pub(crate) type CallRef<'a> = (u64, &'a str, &'a Value, Option<&'a [u8]>);

/// The same batch as a Rust worker reads it (names borrowed from the line
/// when they have no escapes).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ToWorker<'a> {
    #[serde(default)]
    pub ids: Option<Vec<u64>>,
    #[serde(default, borrow)]
    pub f: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub fs: Option<Vec<std::borrow::Cow<'a, str>>>,
    #[serde(default)]
    pub a: Vec<Value>,
    /// `[INDEX, LEN]` of the tasks with a payload (`LEN` null: too large
    /// to have been sent).
    #[serde(default)]
    pub p: Option<Vec<(usize, Option<usize>)>>,
}

impl<'a> RunRef<'a> {
    /// A batch of `(id, function, arguments, payload)`. Payloads that would
    /// take the frame past `budget` bytes are not sent (`null` in `p`).
    pub fn new(tasks: &[CallRef<'a>], ids: &'a mut Vec<u64>, budget: usize) -> RunRef<'a> {
        ids.clear();
        ids.extend(tasks.iter().map(|t| t.0));
        let same = tasks.windows(2).all(|w| w[0].1 == w[1].1);
        let mut blobs = Vec::new();
        let p = tasks.iter().any(|t| t.3.is_some()).then(|| {
            let mut left = budget;
            let mut p = Vec::new();
            for (i, t) in tasks.iter().enumerate() {
                let Some(payload) = t.3 else { continue };
                if payload.len() <= left {
                    left -= payload.len();
                    blobs.push(payload);
                    p.push((i, Some(payload.len())));
                } else {
                    p.push((i, None));
                }
            }
            p
        });
        RunRef {
            ids,
            f: same.then(|| tasks.first().map_or("", |t| t.1)),
            fs: (!same).then(|| tasks.iter().map(|t| t.1).collect()),
            a: tasks.iter().map(|t| t.2).collect(),
            p,
            blobs,
        }
    }
}

/// What a task raised.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct TaskError {
    #[serde(rename = "type")]
    pub type_name: String,
    pub message: String,
    #[serde(default)]
    pub traceback: String,
}

/// Worker or fork server → parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum ToParent {
    Hello {
        hello: Hello,
    },
    Ok {
        id: u64,
        ok: Value,
    },
    Err {
        id: u64,
        err: TaskError,
    },
    /// An answer whose value is bytes (`{"id":N,"blob":LEN}` and its blob).
    #[serde(skip)]
    Bytes {
        id: u64,
        bytes: Vec<u8>,
    },
    Forked {
        forked: u64,
        pid: u32,
    },
    ForkError {
        fork_error: u64,
        message: String,
    },
    ExitedCode {
        exited: u32,
        code: i32,
    },
    ExitedSignal {
        exited: u32,
        signal: i32,
    },
}

impl ToParent {
    /// Whether this is a task's answer (as opposed to a hello or a fork
    /// server's report).
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            ToParent::Ok { .. } | ToParent::Err { .. } | ToParent::Bytes { .. }
        )
    }
}

/// The first message from every worker (its first frame) and server (its
/// first line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub pid: u32,
    #[serde(default)]
    pub worker: Option<u64>,
}

/// Every field any message may have: one pass over the line, instead of
/// trying each message shape in turn (answers are the hot path).
#[derive(Deserialize)]
struct AnyMessage {
    #[serde(default)]
    hello: Option<Hello>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    ok: Option<Value>,
    #[serde(default)]
    err: Option<TaskError>,
    #[serde(default)]
    forked: Option<u64>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    fork_error: Option<u64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    exited: Option<u32>,
    #[serde(default)]
    code: Option<i32>,
    #[serde(default)]
    signal: Option<i32>,
}

/// `"ok": null` is a value (the function returned None), not an absence.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// The hot path: `{"id": N, "ok": VALUE}` as both workers write it (with
/// or without spaces), without the general decoder's field matching.
fn fast_answer(line: &[u8]) -> Option<ToParent> {
    let rest = skip_ws(line.strip_prefix(b"{\"id\":")?);
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let id: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = skip_ws(skip_ws(&rest[digits..]).strip_prefix(b",")?);
    let rest = skip_ws(rest.strip_prefix(b"\"ok\":")?);
    let end = rest.iter().rposition(|&c| c == b'}')?;
    if !rest[end + 1..].iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let ok: Value = serde_json::from_slice(&rest[..end]).ok()?;
    Some(ToParent::Ok { id, ok })
}

/// The id of a line that begins as an answer does: `{"id": N, "ok"` or
/// `{"id": N, "err"`.
fn answer_id(line: &[u8]) -> Option<u64> {
    let rest = skip_ws(skip_ws(line).strip_prefix(b"{")?);
    let rest = skip_ws(rest.strip_prefix(b"\"id\"")?);
    let rest = skip_ws(rest.strip_prefix(b":")?);
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let id = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = skip_ws(skip_ws(&rest[digits..]).strip_prefix(b",")?);
    (rest.starts_with(b"\"ok\"") || rest.starts_with(b"\"err\"")).then_some(id)
}

/// Parse one line from a worker or server.
pub(crate) fn parse_from_worker(line: &[u8]) -> Result<ToParent, String> {
    if let Some(msg) = fast_answer(line) {
        return Ok(msg);
    }
    let m: AnyMessage = match serde_json::from_slice(line) {
        Ok(m) => m,
        Err(e) => {
            // An answer whose value cannot be read (a Python string with
            // a lone surrogate, say): the task fails with the reason, and
            // the worker's answers stay in step.
            if let Some(id) = answer_id(line) {
                return Ok(ToParent::Err {
                    id,
                    err: TaskError {
                        type_name: "ProtocolError".into(),
                        message: format!("the worker's answer could not be read: {e}"),
                        traceback: String::new(),
                    },
                });
            }
            return Err(format!(
                "{e} in {:?}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ));
        }
    };
    let msg = match m {
        AnyMessage {
            id: Some(id),
            ok: Some(ok),
            ..
        } => ToParent::Ok { id, ok },
        AnyMessage {
            id: Some(id),
            err: Some(err),
            ..
        } => ToParent::Err { id, err },
        AnyMessage {
            hello: Some(hello), ..
        } => ToParent::Hello { hello },
        AnyMessage {
            forked: Some(forked),
            pid: Some(pid),
            ..
        } => ToParent::Forked { forked, pid },
        AnyMessage {
            fork_error: Some(fork_error),
            message,
            ..
        } => ToParent::ForkError {
            fork_error,
            message: message.unwrap_or_default(),
        },
        AnyMessage {
            exited: Some(exited),
            code: Some(code),
            ..
        } => ToParent::ExitedCode { exited, code },
        AnyMessage {
            exited: Some(exited),
            signal: Some(signal),
            ..
        } => ToParent::ExitedSignal { exited, signal },
        _ => {
            return Err(format!(
                "not a message of the worker protocol: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ))
        }
    };
    Ok(msg)
}

#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) fn write_line<T: Serialize>(out: &mut dyn Write, msg: &T) -> std::io::Result<()> {
    let mut buf = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    buf.push(b'\n');
    out.write_all(&buf)?;
    out.flush()
}

/// Append a task's answer line to `buf`.
pub(crate) fn encode_answer(buf: &mut Vec<u8>, id: u64, result: Result<Value, TaskError>) {
    let written = match result {
        // The hot path, written as the derived form would be.
        Ok(ok) => {
            buf.extend_from_slice(b"{\"id\":");
            let _ = serde_json::to_writer(&mut *buf, &id);
            buf.extend_from_slice(b",\"ok\":");
            let r = serde_json::to_writer(&mut *buf, &ok);
            buf.push(b'}');
            r
        }
        Err(err) => serde_json::to_writer(&mut *buf, &ToParent::Err { id, err }),
    };
    if written.is_err() {
        buf.clear();
        let _ = serde_json::to_writer(
            &mut *buf,
            &ToParent::Err {
                id,
                err: TaskError {
                    type_name: "Error".into(),
                    message: "the result could not be encoded".into(),
                    traceback: String::new(),
                },
            },
        );
    }
    buf.push(b'\n');
}

/// Append the line of an answer whose value is the next `len` blob bytes.
pub(crate) fn encode_blob_ref(buf: &mut Vec<u8>, id: u64, len: usize) {
    use std::io::Write as _;
    let _ = writeln!(buf, "{{\"id\":{id},\"blob\":{len}}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_message_the_python_worker_sends() {
        let cases: &[&str] = &[
            r#"{"hello": {"pid": 12, "worker": null, "python": "3.11.7"}}"#,
            r#"{"hello": {"pid": 12, "worker": 4, "python": "3.11.7"}}"#,
            r#"{"id": 3, "ok": [1, 2]}"#,
            r#"{"id": 3, "ok": null}"#,
            r#"{"id": 3, "err": {"type": "ValueError", "message": "x", "traceback": "T"}}"#,
            r#"{"forked": 4, "pid": 99}"#,
            r#"{"fork_error": 4, "message": "no memory"}"#,
            r#"{"exited": 99, "code": 0}"#,
            r#"{"exited": 99, "signal": 9}"#,
        ];
        let parsed: Vec<ToParent> = cases
            .iter()
            .map(|c| parse_from_worker(c.as_bytes()).unwrap())
            .collect();
        assert!(
            matches!(&parsed[0], ToParent::Hello { hello } if hello.pid == 12 && hello.worker.is_none())
        );
        assert!(matches!(&parsed[1], ToParent::Hello { hello } if hello.worker == Some(4)));
        assert!(
            matches!(&parsed[2], ToParent::Ok { id: 3, ok } if ok == &serde_json::json!([1, 2]))
        );
        assert!(matches!(
            &parsed[3],
            ToParent::Ok {
                id: 3,
                ok: Value::Null
            }
        ));
        assert!(
            matches!(&parsed[4], ToParent::Err { id: 3, err } if err.type_name == "ValueError")
        );
        assert!(matches!(parsed[5], ToParent::Forked { forked: 4, pid: 99 }));
        assert!(matches!(
            parsed[6],
            ToParent::ForkError { fork_error: 4, .. }
        ));
        assert!(matches!(
            parsed[7],
            ToParent::ExitedCode {
                exited: 99,
                code: 0
            }
        ));
        assert!(matches!(
            parsed[8],
            ToParent::ExitedSignal {
                exited: 99,
                signal: 9
            }
        ));
        assert!(parse_from_worker(b"{\"what\": 1}").is_err());
        // An answer whose value is not readable JSON fails its task.
        match parse_from_worker(br#"{"id":12,"ok":"\ud800"}"#) {
            Ok(ToParent::Err { id: 12, err }) => {
                assert_eq!(err.type_name, "ProtocolError");
                assert!(err.message.contains("could not be read"), "{}", err.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_from_worker(br#"{"id":12,"other":"\ud800"}"#).is_err());
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_decoder() {
        for line in [
            r#"{"id":7,"ok":49}"#,
            r#"{"id": 7, "ok": {"a": [1, "}"]}}"#,
            r#"{"id": 7, "ok": null}"#,
            r#"{"id":7,"ok":"x\"}"}  "#,
        ] {
            let fast = fast_answer(line.as_bytes()).expect(line);
            let general: AnyMessage = serde_json::from_slice(line.as_bytes()).unwrap();
            match fast {
                ToParent::Ok { id, ok } => {
                    assert_eq!(Some(id), general.id);
                    assert_eq!(Some(ok), general.ok, "{line}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Not answers, or not in the usual shape: the general decoder.
        for line in [
            r#"{"id": 7, "err": {"type": "E", "message": "m"}}"#,
            r#"{"id": 7, "ok": 1, "extra": 2}"#,
            r#"{"id": 7, "ok": }"#,
            r#"{"id": -1, "ok": 1}"#,
        ] {
            assert!(fast_answer(line.as_bytes()).is_none(), "{line}");
        }
        assert!(matches!(
            parse_from_worker(br#"{"id": 7, "ok": 1, "extra": 2}"#),
            Ok(ToParent::Ok { id: 7, .. })
        ));
    }

    #[test]
    fn answers_round_trip() {
        let mut buf = Vec::new();
        let value = serde_json::json!({"a": [1, "\u{e9}\n"]});
        encode_answer(&mut buf, 7, Ok(value.clone()));
        let derived = serde_json::to_vec(&ToParent::Ok { id: 7, ok: value }).unwrap();
        assert_eq!(buf[..buf.len() - 1], derived[..], "as the derived form");
        assert!(buf.ends_with(b"\n"));
        assert!(matches!(
            parse_from_worker(&buf[..buf.len() - 1]).unwrap(),
            ToParent::Ok { id: 7, .. }
        ));
    }
}
