//! GNU parallel's job log, read and written: a header, then one
//! tab-separated line per finished job,
//!
//! ```text
//! Seq  Host  Starttime       JobRuntime  Send  Receive  Exitval  Signal  Command
//! 1    :     1700000000.123       0.052  0     42       0        0       echo a
//! ```
//!
//! Start time in epoch seconds and run time (right-aligned in ten columns)
//! with three decimals, as GNU parallel writes them; `Exitval` -1 for a job
//! that was stopped (timeout), `Signal` the signal that ended it. A newline
//! in a command is written as a NUL byte, as GNU parallel does. Lines are
//! appended and flushed one job at a time, so a log survives the run being
//! killed; `--resume` skips the jobs it lists, `--resume-failed` only those
//! that succeeded.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The first line of every job log.
pub const HEADER: &str =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand";

/// A job log that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JoblogError {
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// One finished job.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub host: String,
    /// Epoch seconds.
    pub starttime: f64,
    /// Seconds.
    pub runtime: f64,
    pub send: u64,
    pub receive: u64,
    pub exitval: i64,
    pub signal: i64,
    pub command: String,
}

impl Entry {
    /// Did the job succeed (exit value and signal both 0)?
    pub fn succeeded(&self) -> bool {
        self.exitval == 0 && self.signal == 0
    }

    /// The line as written, with its newline.
    pub fn line(&self) -> String {
        format!(
            "{}\t{}\t{:.3}\t{:10.3}\t{}\t{}\t{}\t{}\t{}\n",
            self.seq,
            self.host,
            self.starttime,
            self.runtime,
            self.send,
            self.receive,
            self.exitval,
            self.signal,
            self.command.replace('\n', "\0")
        )
    }

    /// Parse one line (without its newline).
    pub fn parse(line: &str) -> Result<Entry, String> {
        let fields: Vec<&str> = line.splitn(9, '\t').collect();
        if fields.len() < 9 {
            return Err(format!(
                "expected 9 tab-separated fields (Seq, Host, Starttime, JobRuntime, Send, Receive, Exitval, Signal, Command), found {}",
                fields.len()
            ));
        }
        fn num<T: std::str::FromStr>(name: &str, s: &str) -> Result<T, String> {
            s.trim()
                .parse()
                .map_err(|_| format!("{name} is '{s}', not a number"))
        }
        let seq: u64 = num("Seq", fields[0])?;
        if seq == 0 {
            return Err("Seq is 0; job numbers start at 1".into());
        }
        let starttime: f64 = num("Starttime", fields[2])?;
        let runtime: f64 = num("JobRuntime", fields[3])?;
        if !starttime.is_finite() || !runtime.is_finite() {
            return Err("Starttime and JobRuntime must be finite numbers".into());
        }
        Ok(Entry {
            seq,
            host: fields[1].to_string(),
            starttime,
            runtime,
            send: num("Send", fields[4])?,
            receive: num("Receive", fields[5])?,
            exitval: num("Exitval", fields[6])?,
            signal: num("Signal", fields[7])?,
            command: fields[8].replace('\0', "\n"),
        })
    }

    /// Seconds since the epoch, as GNU parallel logs them.
    pub fn epoch_seconds(t: SystemTime) -> f64 {
        t.duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// A job log read back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Joblog {
    /// Every entry, with its line number (1-based; the header is line 1).
    pub entries: Vec<(usize, Entry)>,
    /// Bytes of the file up to the end of its last complete line.
    pub complete_len: u64,
    /// A last line cut short (no newline, not a whole entry), e.g. by a
    /// full disk: its line number. Appending drops it.
    pub torn_line: Option<usize>,
}

impl Joblog {
    /// Read `path`. A missing or empty file is an empty log (`Ok(None)`),
    /// as in GNU parallel.
    pub fn read(path: &Path) -> Result<Option<Joblog>, JoblogError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(JoblogError::Io {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        if bytes.is_empty() {
            return Ok(None);
        }
        let malformed = |line: usize, message: String| JoblogError::Malformed {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut log = Joblog::default();
        let mut offset = 0usize;
        let mut number = 0usize;
        while offset < bytes.len() {
            number += 1;
            let (raw, complete) = match bytes[offset..].iter().position(|&b| b == b'\n') {
                Some(n) => (&bytes[offset..offset + n], true),
                None => (&bytes[offset..], false),
            };
            let next = offset + raw.len() + usize::from(complete);
            let text =
                std::str::from_utf8(raw).map_err(|_| malformed(number, "not UTF-8 text".into()));
            let text = text.map(|t| t.strip_suffix('\r').unwrap_or(t));
            if number == 1 {
                match text {
                    Ok(t) if t == HEADER => {}
                    Ok(_) if !complete => {
                        // The header itself was cut short.
                        log.torn_line = Some(1);
                        return Ok(Some(log));
                    }
                    _ => {
                        return Err(malformed(
                            1,
                            "not a job log: the first line must be GNU parallel's header (Seq, Host, Starttime, JobRuntime, Send, Receive, Exitval, Signal, Command, separated by tabs)".into(),
                        ))
                    }
                }
                log.complete_len = next as u64;
                offset = next;
                continue;
            }
            match text.and_then(|t| Entry::parse(t).map_err(|m| malformed(number, m))) {
                Ok(entry) => {
                    log.entries.push((number, entry));
                    if complete {
                        log.complete_len = next as u64;
                    }
                }
                Err(_) if !complete => log.torn_line = Some(number),
                Err(e) => return Err(e),
            }
            offset = next;
        }
        Ok(Some(log))
    }

    /// The jobs to skip: every one logged (`--resume`), or only those
    /// logged as succeeded (`--resume-failed`).
    pub fn done(&self, only_succeeded: bool) -> BTreeSet<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| !only_succeeded || e.succeeded())
            .map(|(_, e)| e.seq)
            .collect()
    }

    /// The command each job ran, last line wins, with its line number.
    pub fn commands(&self) -> std::collections::BTreeMap<u64, (usize, &str)> {
        self.entries
            .iter()
            .map(|(n, e)| (e.seq, (*n, e.command.as_str())))
            .collect()
    }
}

/// Appends entries, one flushed write per job.
#[derive(Debug)]
pub struct Writer {
    file: File,
    path: PathBuf,
}

impl Writer {
    /// Start a new log at `path` (replacing any), with the header.
    pub fn create(path: &Path) -> Result<Writer, JoblogError> {
        let io = |error| JoblogError::Io {
            path: path.to_path_buf(),
            error,
        };
        let mut file = File::create(path).map_err(io)?;
        file.write_all(format!("{HEADER}\n").as_bytes())
            .map_err(io)?;
        Ok(Writer {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Continue the log read as `log` (a torn last line is cut off; a last
    /// entry without its newline gets one).
    pub fn append(path: &Path, log: &Joblog) -> Result<Writer, JoblogError> {
        let io = |error| JoblogError::Io {
            path: path.to_path_buf(),
            error,
        };
        if log.torn_line == Some(1) {
            return Writer::create(path);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if log.torn_line.is_some() {
            file.set_len(log.complete_len).map_err(io)?;
        }
        let end = file.seek(SeekFrom::End(0)).map_err(io)?;
        if log.torn_line.is_none() && end == len && end > log.complete_len {
            // The last entry is whole but lacks its newline.
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(Writer {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Write one entry and hand it to the system at once.
    pub fn write(&mut self, e: &Entry) -> Result<(), JoblogError> {
        self.file
            .write_all(e.line().as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|error| JoblogError::Io {
                path: self.path.clone(),
                error,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, exitval: i64, signal: i64) -> Entry {
        Entry {
            seq,
            host: ":".into(),
            starttime: 1_700_000_000.123_4,
            runtime: 0.0456,
            send: 0,
            receive: 12,
            exitval,
            signal,
            command: "echo 'a b'".into(),
        }
    }

    #[test]
    fn lines_have_gnu_parallels_layout() {
        assert_eq!(
            entry(3, 0, 0).line(),
            "3\t:\t1700000000.123\t     0.046\t0\t12\t0\t0\techo 'a b'\n"
        );
        let back = Entry::parse(entry(3, -1, 15).line().trim_end_matches('\n')).unwrap();
        assert_eq!((back.seq, back.exitval, back.signal), (3, -1, 15));
        assert!(!back.succeeded());
        let nl = Entry {
            command: "printf 'a\nb'".into(),
            ..entry(1, 0, 0)
        };
        assert!(!nl.line().trim_end_matches('\n').contains('\n'));
        assert_eq!(
            Entry::parse(nl.line().trim_end_matches('\n'))
                .unwrap()
                .command,
            "printf 'a\nb'"
        );
    }

    #[test]
    fn resume_sets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut w = Writer::create(&p).unwrap();
        for e in [
            entry(1, 0, 0),
            entry(2, 1, 0),
            entry(3, 0, 9),
            entry(2, 0, 0),
        ] {
            w.write(&e).unwrap();
        }
        let log = Joblog::read(&p).unwrap().unwrap();
        assert_eq!(log.done(false).into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(log.done(true).into_iter().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(log.entries[1].0, 3, "line numbers count the header");
    }

    #[test]
    fn malformed_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(
            &p,
            format!("{HEADER}\n1\t:\t1.0\t2.0\t0\t0\t0\t0\tok\n2\t:\tsoon\t1\t0\t0\t0\t0\tx\n"),
        )
        .unwrap();
        let e = Joblog::read(&p).unwrap_err().to_string();
        assert!(
            e.contains(":3:") && e.contains("Starttime") && e.contains("soon"),
            "{e}"
        );
        std::fs::write(&p, "hello\n").unwrap();
        let e = Joblog::read(&p).unwrap_err().to_string();
        assert!(e.contains(":1:") && e.contains("header"), "{e}");
        std::fs::write(
            &p,
            format!("{HEADER}\n1\t:\t1.0\n2\t:\t1.0\t2.0\t0\t0\t0\t0\tx\n"),
        )
        .unwrap();
        let e = Joblog::read(&p).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("9 tab-separated"), "{e}");
    }

    #[test]
    fn torn_last_line_is_dropped_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(
            &p,
            format!("{HEADER}\n1\t:\t1.0\t2.0\t0\t0\t0\t0\tok\n2\t:\t1.5"),
        )
        .unwrap();
        let log = Joblog::read(&p).unwrap().unwrap();
        assert_eq!(log.torn_line, Some(3));
        assert_eq!(log.done(false).into_iter().collect::<Vec<_>>(), [1]);
        let mut w = Writer::append(&p, &log).unwrap();
        w.write(&entry(2, 0, 0)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(Joblog::read(&p).unwrap().unwrap().torn_line.is_none());

        // A whole last entry without its newline is kept, and continued.
        std::fs::write(&p, format!("{HEADER}\n1\t:\t1.0\t2.0\t0\t0\t0\t0\tok")).unwrap();
        let log = Joblog::read(&p).unwrap().unwrap();
        assert_eq!(log.done(false).len(), 1);
        let mut w = Writer::append(&p, &log).unwrap();
        w.write(&entry(2, 0, 0)).unwrap();
        let log = Joblog::read(&p).unwrap().unwrap();
        assert_eq!(log.done(false).into_iter().collect::<Vec<_>>(), [1, 2]);
    }
}
