//! An on-disk cache of site-packages scans, so that probing an unchanged
//! environment again (every pool start) costs a few hundred `stat` calls
//! instead of parsing every binary.
//!
//! While it runs, the scan records its *witnesses*: every folder it listed
//! or looked in (walked folders, the folder of each path the loader tried,
//! found or not: a new file there changes the folder's mtime), every file
//! it read, the folders of the symlinks it followed (a retargeted
//! `/etc/alternatives` link changes its folder) and the loader's
//! `/etc/ld.so.cache`. Each is stamped before use: size, mtime with
//! nanoseconds and, on Unix, inode and ctime; a path that was missing is
//! stamped as missing.
//!
//! A cached result is used only when the request is the same (roots,
//! runtime folders, mode, the loader's configuration, the host, and the
//! build of this code: `CAICLUST_PROBE_SOURCE_HASH` from `build.rs`) and
//! every witness still has its stamp. Anything else is a miss, and the
//! fresh result replaces the entry.
//!
//! File systems stamp times at coarse ticks, so a change in the tick in
//! which a witness was stamped is invisible (git's "racily clean" entries).
//! A result whose witnesses include an mtime less than [`RACY_WINDOW`]
//! before the scan started (or later) is therefore not written.
//!
//! One file per key, `scan-<hash of the key>.json` in the cache folder of
//! [`crate::cache_dir`], holding the key, the witnesses and the result;
//! written beside and renamed. Cache failures never fail a scan: an
//! unreadable, corrupt, oversized or unwritable cache is a miss.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{scan, scan_witnessed, ScanMode, ScanRequest, ScanResult};
use crate::python::fnv1a64;
use crate::resolve::Loader;

/// Version of the entry layout.
const CACHE_FORMAT: u32 = 1;
/// Fingerprint of the scanner's source (see `build.rs`).
const SOURCE_HASH: &str = env!("CAICLUST_PROBE_SOURCE_HASH");
/// Largest entry read or written; anything larger is not ours.
const MAX_ENTRY: u64 = 64 << 20;
/// Stamps this close to the scan's start (or later) are not trusted.
pub(crate) const RACY_WINDOW: Duration = Duration::from_secs(2);
/// Most symlinks followed from one path (as the kernel's limit).
const MAX_LINKS: usize = 40;

/// What a path looked like: enough to notice a replaced, rewritten or
/// retouched file or a folder with entries added or removed. Stored as a
/// JSON array (hundreds of them are parsed on every hit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StampRepr", into = "StampRepr")]
pub(crate) struct Stamp {
    dir: bool,
    size: u64,
    mtime_s: i64,
    mtime_ns: u32,
    /// Inode number (Unix; 0 elsewhere).
    ino: u64,
    /// Status-change time (Unix; 0 elsewhere): moves even when a tool
    /// restores the mtime after rewriting a file in place.
    ctime_s: i64,
    ctime_ns: u32,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        let (mtime_s, mtime_ns) = meta.modified().map_or((0, 0), since_epoch);
        let (ino, ctime_s, ctime_ns) = identity(meta);
        Self {
            dir: meta.is_dir(),
            size: meta.len(),
            mtime_s,
            mtime_ns,
            ino,
            ctime_s,
            ctime_ns,
        }
    }

    /// The stamp of `path` now (symlinks followed), `None` when missing.
    fn now(path: &Path) -> Option<Self> {
        fs::metadata(path).ok().map(|m| Self::of(&m))
    }

    /// Modified at or after `threshold` (seconds, nanoseconds).
    fn modified_since(&self, threshold: (i64, u32)) -> bool {
        (self.mtime_s, self.mtime_ns) >= threshold
    }
}

/// [`Stamp`] on disk: its fields in order.
#[derive(Serialize, Deserialize)]
struct StampRepr(bool, u64, i64, u32, u64, i64, u32);

impl From<Stamp> for StampRepr {
    fn from(s: Stamp) -> Self {
        Self(
            s.dir, s.size, s.mtime_s, s.mtime_ns, s.ino, s.ctime_s, s.ctime_ns,
        )
    }
}

impl From<StampRepr> for Stamp {
    fn from(StampRepr(dir, size, mtime_s, mtime_ns, ino, ctime_s, ctime_ns): StampRepr) -> Self {
        Self {
            dir,
            size,
            mtime_s,
            mtime_ns,
            ino,
            ctime_s,
            ctime_ns,
        }
    }
}

/// Seconds and nanoseconds since 1970 (negative seconds before).
fn since_epoch(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            (
                -i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            )
        }
    }
}

/// Inode and ctime.
#[cfg(unix)]
fn identity(meta: &fs::Metadata) -> (u64, i64, u32) {
    use std::os::unix::fs::MetadataExt;
    let ctime_ns = u32::try_from(meta.ctime_nsec()).unwrap_or(0);
    (meta.ino(), meta.ctime(), ctime_ns)
}

/// No inode or ctime in std's metadata here.
#[cfg(not(unix))]
fn identity(_meta: &fs::Metadata) -> (u64, i64, u32) {
    (0, 0, 0)
}

/// One path the scan looked at and its stamp (`None`: missing); on disk
/// `[path, stamp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "(PathBuf, Option<Stamp>)", into = "(PathBuf, Option<Stamp>)")]
struct Witness {
    path: PathBuf,
    stamp: Option<Stamp>,
}

impl From<Witness> for (PathBuf, Option<Stamp>) {
    fn from(w: Witness) -> Self {
        (w.path, w.stamp)
    }
}

impl From<(PathBuf, Option<Stamp>)> for Witness {
    fn from((path, stamp): (PathBuf, Option<Stamp>)) -> Self {
        Self { path, stamp }
    }
}

impl Witness {
    fn unchanged(&self) -> bool {
        Stamp::now(&self.path) == self.stamp
    }
}

/// The paths a scan looks at, each stamped when first met. A default
/// (not recording) set notes nothing and costs nothing. (A hash map: the
/// loader asks about the same few folders thousands of times, and paths
/// compare slowly, component by component.)
#[derive(Debug, Default)]
pub(crate) struct Witnesses {
    recording: bool,
    seen: HashMap<PathBuf, Option<Stamp>>,
}

impl Witnesses {
    pub(crate) fn recording() -> Self {
        Self {
            recording: true,
            seen: HashMap::new(),
        }
    }

    /// `path` as it is now, unless already stamped.
    pub(crate) fn path(&mut self, path: &Path) {
        if self.recording && !self.seen.contains_key(path) {
            self.seen.insert(path.to_path_buf(), Stamp::now(path));
        }
    }

    /// `path` with its metadata already read (`None`: could not be).
    pub(crate) fn path_with(&mut self, path: &Path, meta: Option<&fs::Metadata>) {
        if self.recording && !self.seen.contains_key(path) {
            self.seen.insert(path.to_path_buf(), meta.map(Stamp::of));
        }
    }

    /// The folder in which `candidate` is looked for.
    pub(crate) fn folder_of(&mut self, candidate: &Path) {
        if let Some(dir) = candidate.parent().filter(|d| !d.as_os_str().is_empty()) {
            self.path(dir);
        }
    }

    /// The folders holding each symlink met following `path`'s last
    /// component and the final target's folder: retargeting a link (or
    /// creating a dangling link's target) changes one of them.
    pub(crate) fn links(&mut self, path: &Path) {
        if !self.recording {
            return;
        }
        let mut current = path.to_path_buf();
        for _ in 0..MAX_LINKS {
            let Ok(target) = fs::read_link(&current) else {
                return;
            };
            let next = match current.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
            self.folder_of(&next);
            current = next;
        }
    }

    /// Any stamp modified less than [`RACY_WINDOW`] before `started`?
    /// Only mtimes count: a ctime cannot be set back, so a tree just
    /// copied or touched could never be cached; ctime stays an extra
    /// check on equality.
    fn any_racy(&self, started: SystemTime) -> bool {
        let Some(threshold) = started.checked_sub(RACY_WINDOW).map(since_epoch) else {
            return true;
        };
        self.seen
            .values()
            .flatten()
            .any(|s| s.modified_since(threshold))
    }

    /// The witnesses in a stable order.
    fn into_list(self) -> Vec<Witness> {
        let mut list: Vec<Witness> = self
            .seen
            .into_iter()
            .map(|(path, stamp)| Witness { path, stamp })
            .collect();
        list.sort_unstable_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
        list
    }
}

/// The fields of [`KeyView`] that name the build rather than the scan.
const BUILD_FIELDS: &[&str] = &["format", "source", "version"];

/// Everything a scan's result depends on apart from the disk: serialised
/// to JSON (object keys sorted), it is the entry's key.
#[derive(Serialize)]
struct KeyView<'a> {
    format: u32,
    source: &'static str,
    version: &'static str,
    arch: &'static str,
    host: Option<String>,
    mode: ScanMode,
    roots: &'a [PathBuf],
    runtime_dirs: &'a [PathBuf],
    loader: &'a Loader,
}

/// The key of `request`, `None` when it cannot be serialised (a path
/// that is not UTF-8).
fn key_of(request: &ScanRequest) -> Option<serde_json::Value> {
    serde_json::to_value(KeyView {
        format: CACHE_FORMAT,
        source: SOURCE_HASH,
        version: env!("CARGO_PKG_VERSION"),
        arch: std::env::consts::ARCH,
        host: sysinfo::System::host_name().ok(),
        mode: request.mode,
        roots: &request.roots,
        runtime_dirs: &request.runtime_dirs,
        loader: &request.loader,
    })
    .ok()
}

/// `scan-<FNV-1a of the key's JSON>.json`, the key taken without the
/// build's fields: a new build replaces the old build's entries instead
/// of adding files beside them.
fn file_for(dir: &Path, key: &serde_json::Value) -> PathBuf {
    let mut named = key.clone();
    if let Some(fields) = named.as_object_mut() {
        for field in BUILD_FIELDS {
            fields.remove(*field);
        }
    }
    let text = named.to_string();
    dir.join(format!("scan-{:016x}.json", fnv1a64(text.as_bytes())))
}

/// The file on disk.
#[derive(Deserialize)]
struct Entry {
    key: serde_json::Value,
    witnesses: Vec<Witness>,
    result: ScanResult,
}

/// The same, borrowed, for writing.
#[derive(Serialize)]
struct EntryRef<'a> {
    key: &'a serde_json::Value,
    witnesses: &'a [Witness],
    result: &'a ScanResult,
}

/// Scan, or reuse the cached result of the same scan when nothing it
/// looked at has changed. The cache lives in [`crate::cache_dir`]; only
/// site-packages scans are cached.
pub(crate) fn scan_cached(request: ScanRequest) -> ScanResult {
    scan_cached_in(request, crate::python::cache_dir().as_deref())
}

/// [`scan_cached`] with the cache in `dir` (`None`: no cache).
pub(crate) fn scan_cached_in(request: ScanRequest, dir: Option<&Path>) -> ScanResult {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let cacheable = dir.filter(|_| request.mode == ScanMode::SitePackages);
    let Some((dir, key)) = cacheable.and_then(|d| Some((d, key_of(&request)?))) else {
        return scan(request);
    };
    let file = file_for(dir, &key);
    if let Some(mut result) = load(&file, &key, MAX_ENTRY) {
        result.summary.from_cache = true;
        result.summary.elapsed_ms = elapsed_ms(started);
        return result;
    }
    let (mut result, witnesses) = scan_witnessed(request, Witnesses::recording());
    if !witnesses.any_racy(started_at) {
        store(dir, &file, &key, &witnesses.into_list(), &result);
    }
    result.summary.elapsed_ms = elapsed_ms(started);
    result
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The result cached in `file` for `key`, when every witness still holds.
fn load(file: &Path, key: &serde_json::Value, cap: u64) -> Option<ScanResult> {
    let entry = read_entry(file, cap)?;
    if entry.key != *key || !all_unchanged(&entry.witnesses) {
        return None;
    }
    Some(entry.result)
}

/// Whether every witness still holds: a `stat` each, stopping at the
/// first change. (Splitting them between threads measured no faster.)
fn all_unchanged(witnesses: &[Witness]) -> bool {
    witnesses.iter().all(Witness::unchanged)
}

/// The entry in `file`, if it is one and no larger than `cap` bytes.
fn read_entry(file: &Path, cap: u64) -> Option<Entry> {
    let mut bytes = Vec::new();
    fs::File::open(file)
        .ok()?
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > cap {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// Write the entry beside `file`, then rename it into place. Errors are
/// ignored: the cache is an optimisation.
fn store(
    dir: &Path,
    file: &Path,
    key: &serde_json::Value,
    witnesses: &[Witness],
    result: &ScanResult,
) {
    let entry = EntryRef {
        key,
        witnesses,
        result,
    };
    let Ok(bytes) = serde_json::to_vec(&entry) else {
        return;
    };
    if bytes.len() as u64 > MAX_ENTRY || fs::create_dir_all(dir).is_err() {
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let tmp = file.with_extension(format!("tmp{}-{nanos}", std::process::id()));
    if fs::write(&tmp, bytes).is_err() || fs::rename(&tmp, file).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

#[cfg(all(test, unix))]
mod tests;
