//! Errors of the probe. Findings about the environment are data in
//! [`crate::Facts`]; these are failures to collect facts at all.

use std::path::PathBuf;

/// A failure to collect facts.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No Python interpreter could be found.
    #[error("no Python interpreter found: {0}")]
    PythonNotFound(String),
    /// The interpreter could not be started or its answer was unusable.
    #[error("querying the Python interpreter {path} failed: {reason}")]
    PythonQuery { path: PathBuf, reason: String },
    /// A folder given to scan does not exist or cannot be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    /// A facts document is malformed.
    #[error("malformed facts document: {0}")]
    FactsJson(String),
    /// A facts document comes from a newer caiclust.
    #[error("facts schema version {found} is newer than the supported version {supported}; upgrade caiclust")]
    FactsSchema { found: u32, supported: u32 },
    /// No process has this pid (`path` is its missing `/proc/PID`).
    #[error("no process with pid {pid} ({} does not exist)", path.display())]
    NoSuchProcess { pid: u32, path: PathBuf },
    /// The process was there when reading began and vanished (or became a
    /// zombie, or its pid was reused) before it was read completely.
    #[error("process {pid} exited while it was being read ({}: {reason})", path.display())]
    ProcessExited {
        pid: u32,
        path: PathBuf,
        reason: String,
    },
    /// The OS refused to show the process's files to this user.
    #[error("cannot read {}: permission denied ({hint})", path.display())]
    ProcessPermissionDenied {
        pid: u32,
        path: PathBuf,
        /// Whose process it is and what to do about it.
        hint: String,
    },
    /// Any other failure to read one of the process's files.
    #[error("cannot read {} of process {pid}: {reason}", path.display())]
    ProcessRead {
        pid: u32,
        path: PathBuf,
        reason: String,
    },
    /// Reading other processes is not implemented on this OS.
    #[error("reading process {pid} is not supported on {os} yet (only the current process can be read there)")]
    ProcessUnsupported { pid: u32, os: &'static str },
    /// The libraries loaded in the current process could not be listed.
    #[error("cannot list the libraries loaded in this process: {0}")]
    LoadedLibraries(String),
}

/// Why one binary could not be read. The scan records these as skipped
/// files and carries on.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BinaryError {
    #[error("cannot open: {0}")]
    Io(String),
    #[error("not a binary (no ELF, Mach-O or PE signature)")]
    NotBinary,
    #[error("empty file")]
    Empty,
    #[error("larger than the {limit}-byte limit ({size} bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error("malformed {format}: {reason}")]
    Malformed {
        /// The format the file claims to be (shown as `ELF`, `Mach-O`, `PE`).
        format: crate::facts::BinaryFormat,
        reason: String,
    },
    #[error("not a regular file")]
    NotRegular,
    /// The parser panicked on the file (a bug, in goblin or here). The
    /// panic was contained: the file is reported with this error and the
    /// probe goes on with the others.
    #[error("the {format} parser panicked reading {}: {message}", path_or_memory(.path))]
    ParserPanic {
        format: crate::facts::BinaryFormat,
        /// The file being read; `None` for bytes given in memory.
        path: Option<PathBuf>,
        /// The panic's message and, when the program's panic hook passed
        /// it on (see [`crate::claim_parser_panic`]), where it happened.
        message: String,
    },
    /// The thread reading the file (with others) panicked outside the
    /// contained parse: a bug, reported by the panic hook as it happened.
    #[error("the thread reading it panicked ({0})")]
    ReaderPanic(String),
}

fn path_or_memory(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "bytes in memory".to_owned(),
    }
}
