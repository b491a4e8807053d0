//! Tests of the frame codec: round trips, frames split across reads, and
//! bad input (truncated frames, huge or inconsistent length prefixes).

use std::io::Read;

use serde_json::{json, Value};

use super::*;
use crate::worker::protocol::ToWorker;

/// A frame of `text` and `blobs`, as a worker writes it.
fn frame(text: &str, blobs: &[&[u8]]) -> Vec<u8> {
    let mut buf = vec![0; HEADER_LEN];
    buf.extend_from_slice(text.as_bytes());
    set_header(&mut buf, blobs.iter().map(|b| b.len()).sum()).unwrap();
    for b in blobs {
        buf.extend_from_slice(b);
    }
    buf
}

/// Hands out its bytes a few at a time (as a pipe may), counting reads.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
    reads: usize,
}

impl Read for Trickle {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.reads += 1;
        let n = self.step.min(out.len()).min(self.data.len() - self.at);
        out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn trickle(data: Vec<u8>, step: usize) -> FrameReader<Trickle> {
    FrameReader::new(Trickle {
        data,
        at: 0,
        step,
        reads: 0,
    })
}

fn all_groups<R: Read>(mut r: FrameReader<R>) -> Result<Vec<Vec<ToParent>>, FrameError> {
    let mut out = Vec::new();
    while let Some(g) = r.next_group()? {
        out.push(g);
    }
    Ok(out)
}

#[test]
fn a_batch_round_trips_with_its_payloads() {
    let args = [json!([1, 2]), Value::Null, json!({"k": "v"})];
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let calls: Vec<CallRef> = vec![
        (1, "m:f", &args[0], None),
        (2, "m:g", &args[1], Some(&big[..])),
        (3, "m:f", &args[2], Some(b"\n\0raw")),
    ];
    let mut ids = Vec::new();
    let mut wire = encode_batch(&calls, &mut ids).unwrap();
    // As the Rust worker reads it.
    let mut header = [0; HEADER_LEN];
    header.copy_from_slice(&wire[..HEADER_LEN]);
    let (len, text_len) = parse_header(&header).unwrap();
    assert_eq!(len, wire.len());
    let (text, blobs) = wire[HEADER_LEN..].split_at(text_len);
    let msg: ToWorker = serde_json::from_slice(text).unwrap();
    assert_eq!(msg.ids, Some(vec![1, 2, 3]));
    assert_eq!(msg.fs.unwrap().len(), 3);
    assert_eq!(msg.a, args);
    assert_eq!(msg.p, Some(vec![(1, Some(big.len())), (2, Some(5))]));
    assert_eq!(&blobs[..big.len()], &big[..]);
    assert_eq!(&blobs[big.len()..], b"\n\0raw");
    // No payloads: the text alone, and no "p".
    wire = encode_batch(&calls[..1], &mut ids).unwrap();
    let text = std::str::from_utf8(&wire[HEADER_LEN..]).unwrap();
    assert_eq!(text, "{\"ids\":[1],\"f\":\"m:f\",\"a\":[[1,2]]}\n");
}

#[test]
fn a_payload_over_the_budget_is_not_sent_but_named() {
    let null = Value::Null;
    let calls: Vec<CallRef> = vec![
        (1, "m:f", &null, Some(b"0123456789")),
        (2, "m:f", &null, Some(b"abc")),
    ];
    let mut ids = Vec::new();
    let run = RunRef::new(&calls, &mut ids, 5);
    assert_eq!(run.p, Some(vec![(0, None), (1, Some(3))]));
    assert_eq!(run.blobs, vec![&b"abc"[..]]);
}

#[test]
fn answers_with_and_without_blobs_round_trip() {
    let blob_a = vec![7u8; 70_000];
    let text = "{\"id\":1,\"ok\":[1]}\n{\"id\":2,\"blob\":70000}\n\
                {\"id\":3,\"err\":{\"type\":\"E\",\"message\":\"m\"}}\n{\"id\":4,\"blob\":0}\n";
    let mut data = frame(text, &[&blob_a, b""]);
    data.extend(frame("{\"id\":5,\"ok\":null}\n", &[]));
    let groups = all_groups(FrameReader::new(&data[..])).unwrap();
    let msgs: Vec<ToParent> = groups.into_iter().flatten().collect();
    assert_eq!(msgs.len(), 5);
    assert!(matches!(&msgs[0], ToParent::Ok { id: 1, ok } if ok == &json!([1])));
    assert!(matches!(&msgs[1], ToParent::Bytes { id: 2, bytes } if bytes == &blob_a));
    assert!(matches!(&msgs[2], ToParent::Err { id: 3, err } if err.type_name == "E"));
    assert!(matches!(&msgs[3], ToParent::Bytes { id: 4, bytes } if bytes.is_empty()));
    assert!(matches!(
        &msgs[4],
        ToParent::Ok {
            id: 5,
            ok: Value::Null
        }
    ));
}

#[test]
fn frames_already_read_in_come_as_one_group() {
    let mut data = Vec::new();
    for id in 0..100 {
        data.extend(frame(&format!("{{\"id\":{id},\"ok\":{id}}}\n"), &[]));
    }
    let groups = all_groups(FrameReader::new(&data[..])).unwrap();
    // A slice reads in as much as the buffer holds: all of it at once.
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].len(), 100);
}

#[test]
fn a_frame_split_across_reads_is_put_back_together() {
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let mut data = frame("{\"id\":9,\"blob\":300000}\n", &[&blob]);
    data.extend(frame("{\"id\":10,\"ok\":\"x\"}\n", &[]));
    for step in [1, 3, 8, 9, 4096, 65_536] {
        let mut r = trickle(data.clone(), step);
        let first = r.next_frame().unwrap().unwrap();
        assert!(
            matches!(&first[..], [ToParent::Bytes { id: 9, bytes }] if bytes == &blob),
            "step {step}"
        );
        let second = r.next_frame().unwrap().unwrap();
        assert!(matches!(&second[..], [ToParent::Ok { id: 10, .. }]));
        assert!(r.next_frame().unwrap().is_none(), "then EOF");
        // The buffer went back to its usual size after the large frame.
        assert_eq!(r.buf.len(), BUF_LEN);
    }
}

#[test]
fn a_truncated_frame_at_eof_is_an_error_not_a_panic() {
    let data = frame("{\"id\":1,\"blob\":10}\n", &[b"0123456789"]);
    for cut in [1, 7, 8, 12, data.len() - 1] {
        match all_groups(FrameReader::new(&data[..cut])) {
            Err(FrameError::Truncated { got, want }) => {
                assert_eq!(got, cut);
                assert_eq!(
                    want,
                    if cut < HEADER_LEN {
                        HEADER_LEN
                    } else {
                        data.len()
                    }
                );
                let msg = FrameError::Truncated { got, want }.to_string();
                assert!(msg.contains("ended inside a frame"), "{msg}");
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    assert!(all_groups(FrameReader::new(&[][..])).unwrap().is_empty());
}

#[test]
fn a_huge_length_prefix_is_refused_before_allocating() {
    let mut data = u32::MAX.to_le_bytes().to_vec();
    data.extend(10u32.to_le_bytes());
    data.extend(b"{}\n");
    let mut r = FrameReader::new(&data[..]);
    match r.next_group() {
        Err(e @ FrameError::TooLong { len }) => {
            assert_eq!(len, u32::MAX as usize);
            assert!(e.to_string().contains("over the limit"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.buf.len(), BUF_LEN, "nothing allocated for it");
}

#[test]
fn a_large_claim_grows_the_buffer_only_with_the_bytes_that_came() {
    // A length under the limit, but the stream ends 100 kB into it.
    let claim = (MAX_FRAME_LEN - 1) as u32;
    let mut data = claim.to_le_bytes().to_vec();
    data.extend(10u32.to_le_bytes());
    data.extend(vec![b' '; 100_000]);
    let mut r = trickle(data, 50_000);
    assert!(matches!(
        r.next_group(),
        Err(FrameError::Truncated { got: 100_008, .. })
    ));
    assert!(r.buf.len() <= GROW_STEP, "{} bytes allocated", r.buf.len());
}

#[test]
fn inconsistent_lengths_are_named() {
    let cases: [(u32, u32, &str); 2] = [
        (2, 0, "shorter than the 4-byte text length"),
        (10, 7, "does not fit in its frame length"),
    ];
    for (frame_len, text_len, says) in cases {
        let mut data = frame_len.to_le_bytes().to_vec();
        data.extend(text_len.to_le_bytes());
        data.extend([b'x'; 16]);
        let e = FrameReader::new(&data[..]).next_group().unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn a_blob_missing_from_its_frame_fails_its_task_only() {
    let text = "{\"id\":1,\"blob\":50}\n{\"id\":2,\"ok\":2}\n";
    let data = frame(text, &[b"short"]);
    let msgs = FrameReader::new(&data[..]).next_group().unwrap().unwrap();
    match &msgs[..] {
        [ToParent::Err { id: 1, err }, ToParent::Ok { id: 2, .. }] => {
            assert_eq!(err.type_name, "ProtocolError");
            assert!(err.message.contains("blob of 50 bytes"), "{}", err.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_text_is_skipped_and_the_stream_stays_in_step() {
    let mut data = frame("not json\n{\"id\":1,\"ok\":1}\n", &[]);
    data.extend(frame("{\"id\":2,\"ok\":2}\n", &[]));
    let msgs: Vec<ToParent> = all_groups(FrameReader::new(&data[..]))
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert!(matches!(
        &msgs[..],
        [ToParent::Ok { id: 1, .. }, ToParent::Ok { id: 2, .. }]
    ));
}

#[test]
fn a_frame_over_the_limit_is_not_written() {
    let mut buf = vec![0; HEADER_LEN + 10];
    let e = set_header(&mut buf, MAX_FRAME_LEN).unwrap_err();
    assert!(matches!(e, FrameError::TooLong { .. }), "{e}");
    let mut out = Vec::new();
    assert!(write_message(&mut out, &json!({"hello": {"pid": 1}})).is_ok());
    let msgs = FrameReader::new(&out[..]).next_frame().unwrap().unwrap();
    assert!(matches!(&msgs[..], [ToParent::Hello { hello }] if hello.pid == 1));
}

#[test]
fn blob_refs_are_read_strictly() {
    assert_eq!(blob_ref(b"{\"id\":3,\"blob\":10}"), Some((3, 10)));
    assert_eq!(blob_ref(b"{\"id\":3,\"blob\":10}  "), Some((3, 10)));
    for bad in [
        &b"{\"id\":3,\"blob\":-1}"[..],
        b"{\"id\":3,\"blob\":}",
        b"{\"id\":3,\"blob\":1,\"x\":2}",
        b"{\"id\":3,\"ok\":1}",
    ] {
        assert_eq!(blob_ref(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn large_frames_read_their_blobs_whole_however_they_arrive() {
    // Larger than the buffer: the blobs go straight into a vector of their
    // own (the one blob of a pickled result is handed over as it is).
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let small = vec![9u8; 100_000];
    let mut data = frame("{\"id\":1,\"blob\":3000000}\n", &[&big]);
    data.extend(frame(
        "{\"id\":2,\"blob\":100000}\n{\"id\":3,\"blob\":3000000}\n{\"id\":4,\"ok\":4}\n",
        &[&small, &big],
    ));
    data.extend(frame("{\"id\":5,\"ok\":5}\n", &[]));
    for step in [7, 4096, 65_536, 1 << 20, usize::MAX] {
        let msgs: Vec<ToParent> = all_groups(trickle(data.clone(), step))
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(msgs.len(), 5, "step {step}");
        assert!(matches!(&msgs[0], ToParent::Bytes { id: 1, bytes } if *bytes == big));
        assert!(matches!(&msgs[1], ToParent::Bytes { id: 2, bytes } if *bytes == small));
        assert!(matches!(&msgs[2], ToParent::Bytes { id: 3, bytes } if *bytes == big));
        assert!(matches!(&msgs[3], ToParent::Ok { id: 4, .. }));
        assert!(matches!(&msgs[4], ToParent::Ok { id: 5, .. }));
    }
    // Cut short inside the blobs: an error, not a panic or a short answer.
    let cut = data[..1_000_000].to_vec();
    assert!(matches!(
        all_groups(trickle(cut, 65_536)),
        Err(FrameError::Truncated { .. })
    ));
}
