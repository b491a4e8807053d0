//! Length-prefixed frames on a worker's channel (the layout is described in
//! [`super::protocol`]): the parent's encoder of a batch of tasks, the
//! parent's reader of a worker's frames, and the pieces the Rust worker
//! shares with them.
//!
//! The reader trusts nothing it reads: a length prefix over
//! [`MAX_FRAME_LEN`] is refused before anything is allocated for it, a
//! frame's buffer grows only as its bytes arrive, and a stream that ends
//! inside a frame is reported as such.

use std::io::{Read, Write};

use super::protocol::{self, CallRef, RunRef, TaskError, ToParent};

/// The largest `frame_len` (the bytes after the length field) either side
/// writes or reads: 2 GiB.
pub(crate) const MAX_FRAME_LEN: usize = 1 << 31;

/// The two length fields.
pub(crate) const HEADER_LEN: usize = 8;

/// Room kept for a frame's text when its blobs are budgeted.
const TEXT_ROOM: usize = 16 << 20;

/// The largest blob a worker answers with (the rest of a frame is its
/// text); a larger result fails its task.
pub(crate) const MAX_BLOB_LEN: usize = MAX_FRAME_LEN - TEXT_ROOM;

/// The reader's buffer to begin with, and what it shrinks back to.
const BUF_LEN: usize = 1 << 16;

/// A frame's buffer grows at least this much at once (smaller frames are
/// allocated whole as soon as their header is read).
const GROW_STEP: usize = 16 << 20;

/// What was wrong with a frame, or with reading or writing one.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} is over the limit of {MAX_FRAME_LEN} bytes (a corrupt stream?)")]
    TooLong { len: usize },
    #[error("frame length {len} is shorter than the 4-byte text length that must follow it")]
    TooShort { len: usize },
    #[error("a frame's text length {text} does not fit in its frame length {frame}")]
    TextOverrun { text: usize, frame: usize },
    #[error("the stream ended inside a frame: {got} of its {want} bytes arrived")]
    Truncated { got: usize, want: usize },
    #[error("the batch could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Fill in the header at the start of `buf` (which begins with
/// [`HEADER_LEN`] bytes kept for it, followed by the text), for a frame
/// whose blobs take `blob_len` bytes.
pub(crate) fn set_header(buf: &mut [u8], blob_len: usize) -> Result<(), FrameError> {
    let text_len = buf.len() - HEADER_LEN;
    let frame_len = 4 + text_len + blob_len;
    if frame_len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong { len: frame_len });
    }
    // Both fit in u32: MAX_FRAME_LEN does.
    buf[..4].copy_from_slice(&(frame_len as u32).to_le_bytes());
    buf[4..HEADER_LEN].copy_from_slice(&(text_len as u32).to_le_bytes());
    Ok(())
}

/// Write the frame whose header and text are in `buf` (see [`set_header`])
/// followed by `blobs`, and flush.
pub(crate) fn write_frame(
    out: &mut dyn Write,
    buf: &mut [u8],
    blobs: &[&[u8]],
) -> Result<(), FrameError> {
    set_header(buf, blobs.iter().map(|b| b.len()).sum())?;
    out.write_all(buf)?;
    for blob in blobs {
        out.write_all(blob)?;
    }
    out.flush()?;
    Ok(())
}

/// A batch of tasks to a worker as one frame, ready to write: the batch
/// line, then the payloads of its tasks. `ids` is scratch space, reused
/// from one batch to the next.
pub(crate) fn encode_batch(
    calls: &[CallRef<'_>],
    ids: &mut Vec<u64>,
) -> Result<Vec<u8>, FrameError> {
    let run = RunRef::new(calls, ids, MAX_BLOB_LEN);
    let blob_len: usize = run.blobs.iter().map(|b| b.len()).sum();
    let mut buf = Vec::with_capacity(HEADER_LEN + 64 * calls.len() + blob_len);
    buf.extend_from_slice(&[0; HEADER_LEN]);
    serde_json::to_writer(&mut buf, &run)?;
    buf.push(b'\n');
    set_header(&mut buf, blob_len)?;
    for blob in &run.blobs {
        buf.extend_from_slice(blob);
    }
    Ok(buf)
}

/// A message alone in a frame (a worker's hello).
pub(crate) fn write_message<T: serde::Serialize>(
    out: &mut dyn Write,
    msg: &T,
) -> Result<(), FrameError> {
    let mut buf = vec![0; HEADER_LEN];
    serde_json::to_writer(&mut buf, msg)?;
    buf.push(b'\n');
    write_frame(out, &mut buf, &[])
}

/// The lengths in the header at the start of `bytes`, checked: the whole
/// frame's size (header included) and its text's.
pub(crate) fn parse_header(bytes: &[u8; HEADER_LEN]) -> Result<(usize, usize), FrameError> {
    let [a, b, c, d, e, f, g, h] = *bytes;
    let frame = u32::from_le_bytes([a, b, c, d]) as usize;
    let text = u32::from_le_bytes([e, f, g, h]) as usize;
    if frame > MAX_FRAME_LEN {
        return Err(FrameError::TooLong { len: frame });
    }
    if frame < 4 {
        return Err(FrameError::TooShort { len: frame });
    }
    if text > frame - 4 {
        return Err(FrameError::TextOverrun { text, frame });
    }
    Ok((4 + frame, text))
}

/// `{"id":N,"blob":LEN}`, as both workers write it. Most lines are `ok`
/// answers: they are told apart before any number is parsed.
fn blob_ref(line: &[u8]) -> Option<(u64, usize)> {
    fn number(b: &[u8]) -> Option<u64> {
        if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    }
    let rest = line.strip_prefix(b"{\"id\":")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let (id, rest) = rest.split_at(digits);
    let rest = rest.strip_prefix(b",\"blob\":")?;
    let end = rest.iter().position(|&c| c == b'}')?;
    if !rest[end + 1..].iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let len = usize::try_from(number(&rest[..end])?).ok()?;
    Some((number(id)?, len))
}

fn protocol_error(id: u64, message: String) -> ToParent {
    ToParent::Err {
        id,
        err: TaskError {
            type_name: "ProtocolError".into(),
            message,
            traceback: String::new(),
        },
    }
}

/// The messages of one frame's text and blobs, appended to `out`. Lines
/// that cannot be read are reported and skipped, as an answer whose blob
/// is missing fails its task: the frame boundaries keep the stream in step
/// whatever its content.
pub(crate) fn parse_frame(text: &[u8], blobs: &[u8], out: &mut Vec<ToParent>) {
    let mut rest = blobs;
    for line in text.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some((id, len)) = blob_ref(line) {
            match (rest.get(..len), rest.get(len..)) {
                (Some(blob), Some(after)) => {
                    out.push(ToParent::Bytes {
                        id,
                        bytes: blob.to_vec(),
                    });
                    rest = after;
                }
                _ => {
                    out.push(protocol_error(
                        id,
                        format!(
                            "the worker's answer names a blob of {len} bytes, but only {} \
                             are left in its frame",
                            rest.len()
                        ),
                    ));
                    rest = &[];
                }
            }
            continue;
        }
        match protocol::parse_from_worker(line) {
            Ok(msg) => out.push(msg),
            Err(e) => eprintln!("caiclust: unreadable message from a worker: {e}"),
        }
    }
    if !rest.is_empty() {
        eprintln!(
            "caiclust: {} bytes at the end of a worker's frame belong to no answer",
            rest.len()
        );
    }
}

/// One frame's messages when its blobs were read into a vector of their
/// own: a frame that carries a single blob answer (a pickled result, which
/// a worker sends alone) hands over that vector as the answer's bytes,
/// without a copy.
fn parse_frame_owned(text: &[u8], blobs: Vec<u8>, out: &mut Vec<ToParent>) {
    let mut lines = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    if let (Some(line), None) = (lines.next(), lines.next()) {
        if let Some((id, len)) = blob_ref(line) {
            if len == blobs.len() {
                out.push(ToParent::Bytes { id, bytes: blobs });
                return;
            }
        }
    }
    parse_frame(text, &blobs, out);
}

/// Reads a worker's frames, parsing every complete one that is already in
/// its buffer.
pub(crate) struct FrameReader<R> {
    inner: R,
    /// Bytes read are in `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: vec![0; BUF_LEN],
            start: 0,
            end: 0,
        }
    }

    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The size of the frame at `start` (header included) once its header
    /// is in.
    fn next_len(&self) -> Result<Option<usize>, FrameError> {
        match self.buf.get(self.start..self.start + HEADER_LEN) {
            Some(h) if self.end - self.start >= HEADER_LEN => {
                let mut header = [0; HEADER_LEN];
                header.copy_from_slice(h);
                parse_header(&header).map(|(len, _)| Some(len))
            }
            _ => Ok(None),
        }
    }

    /// Parse the frame at `start` if it is all in; false if not.
    fn take_frame(&mut self, out: &mut Vec<ToParent>) -> Result<bool, FrameError> {
        let Some(len) = self.next_len()? else {
            return Ok(false);
        };
        if self.end - self.start < len {
            return Ok(false);
        }
        let frame = &self.buf[self.start..self.start + len];
        let mut header = [0; HEADER_LEN];
        header.copy_from_slice(&frame[..HEADER_LEN]);
        let (_, text_len) = parse_header(&header)?;
        let (text, blobs) = frame[HEADER_LEN..].split_at(text_len);
        parse_frame(text, blobs, out);
        self.start += len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > BUF_LEN {
                // A large frame is over: give its memory back.
                self.buf.truncate(BUF_LEN);
                self.buf.shrink_to_fit();
            }
        }
        Ok(true)
    }

    /// A frame larger than the buffer whose text is in: its blobs are read
    /// straight into a vector of their own (no growing, no zeroing, no
    /// copy out), which becomes the answer's bytes when the frame carries
    /// one blob. True when it took one.
    fn take_large(&mut self, out: &mut Vec<ToParent>) -> Result<bool, FrameError> {
        let Some(len) = self.next_len()? else {
            return Ok(false);
        };
        if len <= BUF_LEN || self.end - self.start >= len {
            return Ok(false);
        }
        let mut header = [0; HEADER_LEN];
        header.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let (_, text_len) = parse_header(&header)?;
        let blobs_start = self.start + HEADER_LEN + text_len;
        if self.end < blobs_start {
            return Ok(false);
        }
        // Everything after the text that is in belongs to this frame (the
        // frame is not all in).
        let text = self.buf[self.start + HEADER_LEN..blobs_start].to_vec();
        let blob_len = len - HEADER_LEN - text_len;
        let mut blobs = Vec::with_capacity(blob_len);
        blobs.extend_from_slice(&self.buf[blobs_start..self.end]);
        self.start = 0;
        self.end = 0;
        let rest = (blob_len - blobs.len()) as u64;
        (&mut self.inner).take(rest).read_to_end(&mut blobs)?;
        if blobs.len() < blob_len {
            return Err(FrameError::Truncated {
                got: HEADER_LEN + text_len + blobs.len(),
                want: len,
            });
        }
        parse_frame_owned(&text, blobs, out);
        Ok(true)
    }

    /// Make room for the rest of the next frame (growing with what has
    /// arrived, never to a size only a header claims), then read once.
    /// False at EOF.
    fn fill(&mut self) -> Result<bool, FrameError> {
        let need = self.next_len()?.unwrap_or(HEADER_LEN);
        if self.start > 0 && self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Full, and the frame is not all in (so `need` is larger):
            // grow by what arrived so far, or to the frame if it is small.
            let grown = need.min((2 * self.buf.len()).max(GROW_STEP));
            self.buf.resize(grown, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Messages of complete frames read in, at least one frame's (waiting
    /// for it); `None` at EOF between frames.
    fn read_until(&mut self, all: bool) -> Result<Option<Vec<ToParent>>, FrameError> {
        let mut group = Vec::new();
        loop {
            let mut took = false;
            while self.take_frame(&mut group)? {
                took = true;
                if !all {
                    break;
                }
            }
            if took && !group.is_empty() {
                return Ok(Some(group));
            }
            if self.take_large(&mut group)? {
                if !group.is_empty() {
                    return Ok(Some(group));
                }
                continue;
            }
            if !self.fill()? {
                let got = self.end - self.start;
                if got == 0 {
                    return Ok(None);
                }
                let want = self.next_len()?.unwrap_or(HEADER_LEN);
                return Err(FrameError::Truncated { got, want });
            }
        }
    }

    /// The messages of the next frame; `None` at EOF.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn next_frame(&mut self) -> Result<Option<Vec<ToParent>>, FrameError> {
        self.read_until(false)
    }

    /// The messages of every complete frame already read in (waiting for
    /// one when there are none): answers written together arrive
    /// together. `None` at EOF.
    pub fn next_group(&mut self) -> Result<Option<Vec<ToParent>>, FrameError> {
        self.read_until(true)
    }

    /// Hand `deliver` each group of messages until EOF or until it returns
    /// false. A broken stream is reported and ends the reading.
    pub fn read_groups(mut self, mut deliver: impl FnMut(Vec<ToParent>) -> bool) {
        loop {
            match self.next_group() {
                Ok(Some(group)) => {
                    if !deliver(group) {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    eprintln!("caiclust: a worker's channel is unreadable: {e}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
