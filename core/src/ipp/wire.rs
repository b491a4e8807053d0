//! The driver's messages, turned into the crate's types.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{EngineFailure, EngineInfo, IppEvent};
use crate::task::{ExitInfo, Failure, Outcome, Output, TaskResult};

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Update what is known about the cluster from one driver message, and
/// turn it into an event for the caller (none for bookkeeping messages).
pub(super) fn apply(
    msg: &Value,
    pids: &mut BTreeSet<u32>,
    engines: &mut BTreeMap<u32, EngineInfo>,
) -> Option<IppEvent> {
    if msg.get("id").is_some() && (msg.get("ok").is_some() || msg.get("err").is_some()) {
        return result(msg).map(IppEvent::Result);
    }
    match msg["event"].as_str()? {
        "controller" => {
            pids.extend(as_u32(&msg["pid"]));
            None
        }
        "pids" => {
            pids.extend(msg["pids"].as_array()?.iter().filter_map(as_u32));
            None
        }
        "engine" => {
            let info = EngineInfo {
                id: as_u32(&msg["engine"])?,
                pid: as_u32(&msg["pid"])?,
                host: msg["host"].as_str().unwrap_or_default().to_string(),
            };
            engines.insert(info.id, info.clone());
            Some(IppEvent::EngineStarted(info))
        }
        "engine_died" => {
            let engine = as_u32(&msg["engine"])?;
            engines.remove(&engine);
            Some(IppEvent::EngineDied {
                engine,
                pid: as_u32(&msg["pid"]),
                host: msg["host"].as_str().map(str::to_string),
                tasks: msg["tasks"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default(),
                reason: msg["reason"].as_str().unwrap_or_default().to_string(),
                expected: msg["expected"].as_bool().unwrap_or(false),
            })
        }
        "started" => Some(IppEvent::Started {
            id: msg["id"].as_u64()?,
            engine: as_u32(&msg["engine"]),
            pid: as_u32(&msg["pid"]),
            attempt: as_u32(&msg["attempt"]).unwrap_or(1),
        }),
        "notice" => Some(IppEvent::Notice {
            task: msg["task"].as_u64(),
            message: msg["message"].as_str().unwrap_or_default().to_string(),
        }),
        _ => None,
    }
}

/// One of the crate's failures from the driver's `err` object.
fn failure(err: &Value) -> Failure {
    match serde_json::from_value::<Failure>(err.clone()) {
        Ok(f) => f,
        Err(_) => Failure::Error {
            message: err["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string()),
        },
    }
}

fn output(v: &Value) -> Output {
    match v.as_str().map(base64_decode) {
        Some(Some(bytes)) if !bytes.is_empty() => Output::Memory(bytes),
        _ => Output::Empty,
    }
}

fn result(msg: &Value) -> Option<TaskResult> {
    let id = msg["id"].as_u64()?;
    let outcome = match msg.get("err") {
        Some(err) if err["kind"] == "cancelled" => Outcome::Cancelled {
            reason: err["reason"].as_str().unwrap_or("cancelled").to_string(),
        },
        Some(err) => Outcome::Failed {
            failure: failure(err),
        },
        None => Outcome::Succeeded {
            value: msg.get("ok").cloned().unwrap_or(Value::Null),
        },
    };
    let mut r = TaskResult::bare(id, outcome);
    r.attempts = msg["attempts"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    r.history = msg["history"]
        .as_array()
        .map(|a| a.iter().map(failure).collect())
        .unwrap_or_default();
    r.started = msg["started"]
        .as_f64()
        .filter(|s| s.is_finite() && *s > 0.0)
        .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs_f64(s)));
    r.runtime = msg["runtime"]
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or_default();
    r.exit = serde_json::from_value::<ExitInfo>(msg["exit"].clone()).ok();
    r.pid = as_u32(&msg["pid"]);
    // The slot is the engine: ipyparallel's id, 1-based.
    r.slot = msg["engine"]
        .as_u64()
        .and_then(|e| usize::try_from(e).ok())
        .map(|e| e + 1);
    r.stdout = output(&msg["stdout"]);
    r.stderr = output(&msg["stderr"]);
    // A pickled call's return value (its value is then null).
    if let (true, Some(text)) = (r.outcome.is_success(), msg["payload"].as_str()) {
        match base64_decode(text) {
            Some(bytes) => r.payload = Some(bytes),
            None => {
                r.outcome = Outcome::Failed {
                    failure: Failure::Error {
                        message: "the driver sent a result payload that is not base64".into(),
                    },
                }
            }
        }
    }
    Some(r)
}

/// The `engines` list of a startup failure.
pub(super) fn engine_failures(v: &Value) -> Vec<EngineFailure> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| EngineFailure {
                    engine: match &e["engine"] {
                        Value::String(s) => s.clone(),
                        Value::Null => "?".into(),
                        other => other.to_string(),
                    },
                    pid: as_u32(&e["pid"]),
                    state: e["state"].as_str().unwrap_or("unknown").to_string(),
                    exit_code: e["exit_code"].as_i64(),
                    output: e["output"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(super) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padding optional; `None` when not base64.
pub(super) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_round_trips() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 128],
        ] {
            let enc = base64_encode(data);
            assert_eq!(base64_decode(&enc).unwrap(), data, "{enc}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
        assert!(base64_decode("not base64!").is_none());
    }

    #[test]
    fn results_map_onto_the_crates_types() {
        let mut pids = BTreeSet::new();
        let mut engines = BTreeMap::new();
        let ok = json!({"id": 3, "ok": {"x": [1, 2]}, "attempts": 2, "engine": 1, "pid": 77,
            "started": 1700000000.5, "runtime": 0.25, "stdout": base64_encode(b"hi\n"),
            "history": [{"kind": "worker_died", "exit": null, "pid": 70, "reason": "gone"}]});
        let Some(IppEvent::Result(mut r)) = apply(&ok, &mut pids, &mut engines) else {
            panic!("not a result")
        };
        assert_eq!(r.id, 3);
        assert_eq!(r.value(), Some(&json!({"x": [1, 2]})));
        assert_eq!(r.attempts, 2);
        assert_eq!(r.slot, Some(2));
        assert_eq!(r.pid, Some(77));
        assert_eq!(r.runtime, Duration::from_millis(250));
        assert_eq!(r.stdout.to_string_lossy(), "hi\n");
        assert_eq!(
            r.history,
            vec![Failure::WorkerDied {
                exit: None,
                pid: 70
            }]
        );
        assert!(r.started.is_some());

        let null = json!({"id": 4, "ok": null});
        let Some(IppEvent::Result(r)) = apply(&null, &mut pids, &mut engines) else {
            panic!("None is a value")
        };
        assert_eq!(r.value(), Some(&Value::Null));

        let cases = [
            (
                json!({"kind": "exit", "exit": {"code": 3}}),
                Failure::Exit {
                    exit: ExitInfo::Code(3),
                },
            ),
            (
                json!({"kind": "timed_out", "after_ms": 1500}),
                Failure::TimedOut { after_ms: 1500 },
            ),
            (
                json!({"kind": "start", "message": "nope: not found"}),
                Failure::Start {
                    message: "nope: not found".into(),
                    cause: crate::task::StartCause::Other,
                },
            ),
            (
                json!({"kind": "start", "message": "nope: denied", "cause": "not_executable"}),
                Failure::Start {
                    message: "nope: denied".into(),
                    cause: crate::task::StartCause::NotExecutable,
                },
            ),
            (
                json!({"kind": "exception", "type_name": "ValueError", "message": "m",
                       "traceback": "T"}),
                Failure::Exception {
                    type_name: "ValueError".into(),
                    message: "m".into(),
                    traceback: "T".into(),
                },
            ),
            (
                json!({"kind": "whatever", "message": "odd"}),
                Failure::Error {
                    message: "odd".into(),
                },
            ),
        ];
        for (err, want) in cases {
            let msg = json!({"id": 5, "err": err, "exit": {"signal": 9}});
            let Some(IppEvent::Result(r)) = apply(&msg, &mut pids, &mut engines) else {
                panic!("not a result")
            };
            assert_eq!(r.outcome, Outcome::Failed { failure: want });
            assert_eq!(r.exit, Some(ExitInfo::Signal(9)));
        }
        let msg = json!({"id": 6, "err": {"kind": "cancelled", "reason": "cancelled"}});
        let Some(IppEvent::Result(r)) = apply(&msg, &mut pids, &mut engines) else {
            panic!("not a result")
        };
        assert!(matches!(r.outcome, Outcome::Cancelled { .. }));
    }

    #[test]
    fn pickled_results_carry_their_bytes() {
        let mut pids = BTreeSet::new();
        let mut engines = BTreeMap::new();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let msg = json!({"id": 7, "ok": null, "payload": base64_encode(&bytes)});
        let Some(IppEvent::Result(r)) = apply(&msg, &mut pids, &mut engines) else {
            panic!("not a result")
        };
        assert_eq!(r.value(), Some(&Value::Null));
        assert_eq!(r.payload(), Some(&bytes[..]));
        // No payload: none, as for JSON tasks.
        let msg = json!({"id": 8, "ok": 1});
        let Some(IppEvent::Result(r)) = apply(&msg, &mut pids, &mut engines) else {
            panic!("not a result")
        };
        assert!(r.payload().is_none());
        // A payload that is not base64 fails the task rather than
        // vanishing.
        let msg = json!({"id": 9, "ok": null, "payload": "not base64!"});
        let Some(IppEvent::Result(r)) = apply(&msg, &mut pids, &mut engines) else {
            panic!("not a result")
        };
        assert!(
            matches!(&r.outcome, Outcome::Failed { failure: Failure::Error { message } } if message.contains("base64")),
            "{:?}",
            r.outcome
        );
        assert!(r.payload().is_none());
    }

    #[test]
    fn bookkeeping_messages_update_the_cluster_view() {
        let mut pids = BTreeSet::new();
        let mut engines = BTreeMap::new();
        assert!(apply(
            &json!({"event": "controller", "pid": 10}),
            &mut pids,
            &mut engines
        )
        .is_none());
        assert!(apply(
            &json!({"event": "pids", "pids": [11, 12]}),
            &mut pids,
            &mut engines
        )
        .is_none());
        let ev = apply(
            &json!({"event": "engine", "engine": 0, "pid": 11, "host": "h"}),
            &mut pids,
            &mut engines,
        );
        assert!(matches!(
            ev,
            Some(IppEvent::EngineStarted(EngineInfo { id: 0, pid: 11, .. }))
        ));
        let ev = apply(
            &json!({"event": "engine_died", "engine": 0, "pid": 11, "tasks": [4], "reason": "x"}),
            &mut pids,
            &mut engines,
        );
        assert!(
            matches!(ev, Some(IppEvent::EngineDied { engine: 0, ref tasks, .. }) if tasks == &[4])
        );
        assert_eq!(pids.iter().copied().collect::<Vec<_>>(), vec![10, 11, 12]);
        assert!(engines.is_empty());
        let ev = apply(
            &json!({"event": "started", "id": 9, "engine": 1, "pid": 33, "attempt": 2}),
            &mut pids,
            &mut engines,
        );
        assert!(matches!(
            ev,
            Some(IppEvent::Started {
                id: 9,
                engine: Some(1),
                pid: Some(33),
                attempt: 2
            })
        ));
        // Garbage is ignored, never a panic.
        for junk in [
            json!(null),
            json!([1]),
            json!({"event": 5}),
            json!({"id": "x", "ok": 1}),
            json!({"event": "engine", "engine": -1}),
        ] {
            assert!(apply(&junk, &mut pids, &mut engines).is_none(), "{junk}");
        }
    }

    #[test]
    fn engine_failures_read_any_shape() {
        let v = json!([
            {"engine": "0", "state": "exited", "exit_code": 1, "pid": 5, "output": "boom\n"},
            {"engine": 3, "state": "running, not registered"},
            {}
        ]);
        let f = engine_failures(&v);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].exit_code, Some(1));
        assert_eq!(f[1].engine, "3");
        assert_eq!(f[2].engine, "?");
        let text = f[0].to_string();
        assert!(
            text.contains("engine 0 (pid 5): exited (exit code 1)") && text.contains("boom"),
            "{text}"
        );
        assert!(engine_failures(&json!("nope")).is_empty());
    }
}
