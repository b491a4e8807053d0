//! # caiclust-probe
//!
//! Facts about a machine and a Python environment, read without importing
//! anything: the host's usable CPUs (affinity, cgroup quota, Slurm), the
//! Python interpreter, and every BLAS, LAPACK, OpenMP, TBB and OpenCV runtime
//! that the environment's extension modules will load, each with its
//! vendor, version, threading layer and the evidence for every conclusion.
//!
//! The entry points are [`probe_python`] (a Python environment) and
//! [`probe_tree`] (a folder of unpacked wheels, from any OS). Both return a
//! [`Facts`] document that serialises with serde.
//!
//! ```no_run
//! use caiclust_probe::{probe_python, ProbeOptions};
//! let facts = probe_python(&ProbeOptions::default()).expect("probe");
//! for lib in &facts.libraries {
//!     println!("{} {}", lib.path.display(), lib.vendor.value);
//! }
//! ```
//!
//! Static reading parses binaries with `goblin`, never loading them.
//! Live probing ([`probe_pid`], [`probe_python_imports`]) reads a running
//! process from outside and asks each runtime about itself with
//! [`query_runtime`], always in a throw-away child process: programs that
//! use it call [`serve_runtime_query_if_requested`] first in `main`.

mod binary;
mod canon;
mod dpkg;
mod env;
mod error;
mod facts;
mod fingerprint;
mod host;
mod live;
mod probe;
mod process;
mod python;
mod resolve;
mod runtime;
mod scan;
mod spawn;

pub use binary::{
    claim_parser_panic, parse_binary, read_binary, sniff_format, BinaryInfo, MAX_BINARY_SIZE,
};
pub use canon::canonicalize;
pub use env::{relevant_env, RELEVANT_ENV_PREFIXES, RELEVANT_ENV_VARS};
pub use error::{BinaryError, ProbeError};
pub use facts::*;
pub use fingerprint::{fingerprint, Fingerprint};
pub use host::collect_host;
pub use live::{probe_pid, probe_python_imports, LiveOptions};
pub use probe::{probe_python, probe_tree, ProbeOptions};
pub use process::{loaded_libraries_of_this_process, read_process};
pub use python::{cache_dir, discover_python, query_python};
pub use runtime::*;
