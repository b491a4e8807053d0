//! The scan cache on real files: a site-packages tree of tiny ELF
//! libraries in a temporary folder, the cache in another. Stamps are made
//! old by setting mtimes, never by waiting.

use std::fs::{File, FileTimes};
use std::os::unix::fs::symlink;
use std::process::Command;

use super::*;
use crate::facts::OsFamily;

/// A minimal ELF64 little-endian shared object for x86-64: a `PT_LOAD`
/// over the whole file, a `PT_DYNAMIC` with the SONAME, the NEEDED
/// entries and an optional RUNPATH, then `pad` zero bytes.
fn tiny_elf(soname: &str, needed: &[&str], runpath: Option<&str>, pad: usize) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let mut strtab = vec![0u8];
    let mut string = |s: &str| {
        let offset = strtab.len() as u64;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        offset
    };
    let mut dyns: Vec<(u64, u64)> = needed.iter().map(|n| (1, string(n))).collect();
    dyns.push((14, string(soname)));
    if let Some(r) = runpath {
        dyns.push((29, string(r)));
    }
    let dyn_off = EHDR + 2 * PHDR;
    let dyn_size = (dyns.len() + 3) * 16; // and DT_STRTAB, DT_STRSZ, DT_NULL
    let str_off = dyn_off + dyn_size;
    dyns.extend([(5, str_off as u64), (10, strtab.len() as u64), (0, 0)]);
    let total = str_off + strtab.len() + pad;

    let mut out = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    out.extend(3u16.to_le_bytes()); // ET_DYN
    out.extend(62u16.to_le_bytes()); // EM_X86_64
    out.extend(1u32.to_le_bytes());
    out.extend(0u64.to_le_bytes()); // entry
    out.extend((EHDR as u64).to_le_bytes()); // program headers
    out.extend(0u64.to_le_bytes()); // no section headers
    out.extend(0u32.to_le_bytes());
    for v in [EHDR as u16, PHDR as u16, 2, 64, 0, 0] {
        out.extend(v.to_le_bytes());
    }
    for (kind, offset, size) in [
        (1u32, 0u64, total as u64),
        (2, dyn_off as u64, dyn_size as u64),
    ] {
        out.extend(kind.to_le_bytes());
        out.extend(4u32.to_le_bytes()); // PF_R
        for v in [offset, offset, offset, size, size, 8] {
            out.extend(v.to_le_bytes());
        }
    }
    for (tag, value) in dyns {
        out.extend(tag.to_le_bytes());
        out.extend(value.to_le_bytes());
    }
    out.extend(strtab);
    out.resize(total, 0);
    out
}

const MODULE: &str = "numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so";
const OTHER_MODULE: &str = "numpy/linalg/_umath_linalg.cpython-312-x86_64-linux-gnu.so";
const OPENBLAS: &str = "numpy.libs/libopenblas.so.0";

/// A site-packages tree in `root`:
///
/// ```text
/// site-packages/numpy/_core/_multiarray_umath….so  NEEDED libopenblas.so.0,
///                                                  RUNPATH $ORIGIN/../../numpy.libs
/// site-packages/numpy/linalg/_umath_linalg….so     NEEDED libopenblas.so.0, same RUNPATH
/// site-packages/numpy.libs/libopenblas.so.0        NEEDED libgomp.so.1 (not found)
/// extra/                                           LD_LIBRARY_PATH, empty
/// sys/                                             the default folder, missing
/// ld.so.cache                                      the loader's cache file
/// ```
struct Site {
    _tmp: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl Site {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let sp = root.join("site-packages");
        let runpath = Some("$ORIGIN/../../numpy.libs");
        write(
            &sp.join(MODULE),
            &tiny_elf("m.so", &["libopenblas.so.0"], runpath, 0),
        );
        write(
            &sp.join(OTHER_MODULE),
            &tiny_elf("l.so", &["libopenblas.so.0"], runpath, 0),
        );
        write(&sp.join("numpy/__init__.py"), b"");
        write(
            &sp.join(OPENBLAS),
            &tiny_elf("libopenblas.so.0", &["libgomp.so.1"], None, 0),
        );
        fs::create_dir_all(sp.join("numpy-2.0.0.dist-info")).expect("mkdir");
        fs::create_dir_all(root.join("extra")).expect("mkdir");
        write(&root.join("ld.so.cache"), b"not parsed here");
        Self {
            _tmp: Some(tmp),
            root,
        }
    }

    /// The tree another process made (the child of a test).
    fn at(root: PathBuf) -> Self {
        Self { _tmp: None, root }
    }

    fn sp(&self) -> PathBuf {
        self.root.join("site-packages")
    }

    fn request_with(&self, ld_library_path: Vec<PathBuf>) -> ScanRequest {
        ScanRequest {
            roots: vec![self.sp()],
            mode: ScanMode::SitePackages,
            loader: Loader {
                target: Some(OsFamily::Linux),
                ld_library_path,
                default_dirs: vec![self.root.join("sys")],
                ld_cache_file: Some(self.root.join("ld.so.cache")),
                ..Loader::default()
            },
            runtime_dirs: vec![self.root.join("prefix/lib")],
        }
    }

    fn request(&self) -> ScanRequest {
        self.request_with(vec![self.root.join("extra")])
    }

    /// Set every file's and folder's mtime an hour back.
    fn age(&self) {
        age_tree(&self.root, SystemTime::now() - Duration::from_secs(3600));
    }
}

/// A cache folder and the scans made with it.
struct Cache {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Cache {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("cache");
        Self { _tmp: tmp, dir }
    }

    fn scan(&self, request: ScanRequest) -> ScanResult {
        scan_cached_in(request, Some(&self.dir))
    }

    /// The entries written.
    fn entries(&self) -> Vec<PathBuf> {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = read.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        files
    }

    fn only_entry(&self) -> PathBuf {
        let entries = self.entries();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries[0].clone()
    }
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, bytes).expect("write");
}

fn set_mtime(path: &Path, when: SystemTime) {
    File::open(path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(when)))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

fn age_tree(path: &Path, when: SystemTime) {
    let meta = fs::symlink_metadata(path).expect("lstat");
    if meta.file_type().is_symlink() {
        return;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path).expect("ls") {
            age_tree(&entry.expect("entry").path(), when);
        }
    }
    set_mtime(path, when);
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

/// Unresolved dependency names of a result.
fn unresolved(result: &ScanResult) -> Vec<&str> {
    result
        .summary
        .unresolved
        .iter()
        .map(|u| u.name.as_str())
        .collect()
}

/// A result as JSON without what differs between a scan and a cache hit.
fn comparable(result: &ScanResult) -> serde_json::Value {
    let mut r = result.clone();
    r.summary.elapsed_ms = 0;
    r.summary.from_cache = false;
    serde_json::to_value(r).expect("json")
}

/// The tree after `age`: a first scan stores, a second hits.
fn cached_site() -> (Site, Cache, ScanResult) {
    let site = Site::new();
    site.age();
    let cache = Cache::new();
    let first = cache.scan(site.request());
    assert!(!first.summary.from_cache, "nothing cached yet");
    cache.only_entry();
    let second = cache.scan(site.request());
    assert!(second.summary.from_cache, "unchanged tree: a hit");
    (site, cache, first)
}

#[test]
fn tiny_elf_parses() {
    let info = crate::binary::parse_binary(&tiny_elf("a.so", &["b.so"], Some("$ORIGIN"), 9))
        .expect("parse");
    assert_eq!(info.soname.as_deref(), Some("a.so"));
    assert_eq!(info.needed, ["b.so"]);
    assert_eq!(info.runpath, ["$ORIGIN"]);
}

#[test]
fn hit_on_an_unchanged_tree_gives_the_same_result() {
    let (site, cache, fresh) = cached_site();
    assert_eq!(fresh.summary.binaries_read, 3);
    assert_eq!(unresolved(&fresh), ["libgomp.so.1"]);
    assert!(fresh
        .libraries
        .iter()
        .any(|l| l.path.ends_with("libopenblas.so.0")));
    let hit = cache.scan(site.request());
    assert!(hit.summary.from_cache);
    assert_eq!(comparable(&hit), comparable(&fresh));
    // What a cold scan finds now is what the cache says.
    assert_eq!(comparable(&scan(site.request())), comparable(&hit));
}

#[test]
fn witnesses_cover_what_the_scan_looked_at() {
    let (site, cache, _) = cached_site();
    let entry = read_entry(&cache.only_entry(), MAX_ENTRY).expect("entry");
    let stamp = |p: PathBuf| {
        entry
            .witnesses
            .iter()
            .find(|w| w.path == p)
            .unwrap_or_else(|| panic!("{} not witnessed", p.display()))
            .stamp
    };
    let sp = site.sp();
    for folder in [
        sp.clone(),
        sp.join("numpy"),
        sp.join("numpy/_core"),
        sp.join("numpy.libs"),
        site.root.join("extra"),
    ] {
        assert!(stamp(folder).is_some_and(|s| s.dir));
    }
    for file in [
        sp.join(MODULE),
        sp.join(OPENBLAS),
        site.root.join("ld.so.cache"),
    ] {
        let real = crate::canon::canonicalize(&file).expect("canonical");
        assert!(stamp(real).is_some_and(|s| !s.dir && s.size > 0));
    }
    assert_eq!(stamp(site.root.join("sys")), None, "missing: stamped so");
    assert_eq!(stamp(site.root.join("prefix/lib")), None);
}

#[test]
fn miss_after_adding_a_binary_to_a_walked_folder() {
    let (site, cache, _) = cached_site();
    write(
        &site
            .sp()
            .join("numpy/_core/_new.cpython-312-x86_64-linux-gnu.so"),
        &tiny_elf("n.so", &[], None, 0),
    );
    let after = cache.scan(site.request());
    assert!(!after.summary.from_cache);
    assert_eq!(after.summary.binaries_read, 4);
}

#[test]
fn miss_after_replacing_a_binary_in_place() {
    let (site, cache, _) = cached_site();
    let path = site.sp().join(OPENBLAS);
    let old = mtime(&path);
    // Same path and inode, new content and size, the old mtime put back:
    // only the size (and ctime) tell.
    fs::write(
        &path,
        tiny_elf("libopenblas.so.0", &["libgomp.so.1"], None, 64),
    )
    .expect("rewrite");
    set_mtime(&path, old);
    set_mtime(path.parent().expect("folder"), old);
    let after = cache.scan(site.request());
    assert!(!after.summary.from_cache, "a rewritten binary is a miss");
}

#[test]
fn miss_after_deleting_a_binary() {
    let (site, cache, _) = cached_site();
    fs::remove_file(site.sp().join(OTHER_MODULE)).expect("rm");
    let after = cache.scan(site.request());
    assert!(!after.summary.from_cache);
    assert_eq!(after.summary.binaries_read, 2);
}

#[test]
fn miss_when_a_library_appears_in_a_search_folder() {
    // `extra` (LD_LIBRARY_PATH) exists and was looked in; `sys` (the
    // default folder) did not even exist.
    for folder in ["extra", "sys"] {
        let (site, cache, before) = cached_site();
        assert_eq!(unresolved(&before), ["libgomp.so.1"]);
        write(
            &site.root.join(folder).join("libgomp.so.1"),
            &tiny_elf("libgomp.so.1", &[], None, 0),
        );
        let after = cache.scan(site.request());
        assert!(!after.summary.from_cache, "libgomp.so.1 in {folder}");
        assert!(unresolved(&after).is_empty(), "{folder}: now resolved");
        assert!(after
            .libraries
            .iter()
            .any(|l| l.path.ends_with("libgomp.so.1")));
    }
}

#[test]
fn miss_when_a_followed_symlink_is_retargeted() {
    // extra/libgomp.so.1 → alt/libgomp.so.1 → impl-a/libgomp.so.1, as
    // Debian's /etc/alternatives; then alt's link moves to impl-b.
    let site = Site::new();
    for (folder, pad) in [("impl-a", 0), ("impl-b", 32)] {
        write(
            &site.root.join(folder).join("libgomp.so.1"),
            &tiny_elf("libgomp.so.1", &[], None, pad),
        );
    }
    fs::create_dir_all(site.root.join("alt")).expect("mkdir");
    let alt = site.root.join("alt/libgomp.so.1");
    symlink("../impl-a/libgomp.so.1", &alt).expect("ln");
    symlink("../alt/libgomp.so.1", site.root.join("extra/libgomp.so.1")).expect("ln");
    site.age();
    let cache = Cache::new();
    let first = cache.scan(site.request());
    let gomp = |r: &ScanResult| {
        r.libraries
            .iter()
            .find(|l| l.path.ends_with("libgomp.so.1"))
            .map(|l| l.path.clone())
            .expect("libgomp found")
    };
    assert!(gomp(&first)
        .starts_with(crate::canon::canonicalize(site.root.join("impl-a")).expect("real")));
    assert!(cache.scan(site.request()).summary.from_cache);

    fs::remove_file(&alt).expect("rm");
    symlink("../impl-b/libgomp.so.1", &alt).expect("ln");
    let after = cache.scan(site.request());
    assert!(!after.summary.from_cache, "the link changed");
    assert!(gomp(&after)
        .starts_with(crate::canon::canonicalize(site.root.join("impl-b")).expect("real")));
}

#[test]
fn miss_after_changing_ld_library_path() {
    let (site, cache, _) = cached_site();
    let other = vec![site.root.join("extra"), site.root.join("more")];
    let after = cache.scan(site.request_with(other.clone()));
    assert!(!after.summary.from_cache, "another loader configuration");
    assert_eq!(cache.entries().len(), 2, "one entry per key");
    assert!(cache.scan(site.request_with(other)).summary.from_cache);
    assert!(cache.scan(site.request()).summary.from_cache, "kept");
}

#[test]
fn miss_after_the_ld_so_cache_changes() {
    let (site, cache, _) = cached_site();
    write(&site.root.join("ld.so.cache"), b"rebuilt by ldconfig");
    assert!(!cache.scan(site.request()).summary.from_cache);
}

#[test]
fn racy_stamps_are_not_trusted() {
    // Just written: every stamp is in the scan's own tick.
    let site = Site::new();
    let cache = Cache::new();
    let first = cache.scan(site.request());
    assert!(!first.summary.from_cache);
    assert!(cache.entries().is_empty(), "racy: nothing written");
    assert!(!cache.scan(site.request()).summary.from_cache);

    // One witness modified a second before the scan: still racy.
    site.age();
    set_mtime(
        &site.sp().join(OPENBLAS),
        SystemTime::now() - Duration::from_secs(1),
    );
    assert!(!cache.scan(site.request()).summary.from_cache);
    assert!(cache.entries().is_empty(), "one racy witness is enough");

    // Older than the window: written, then trusted.
    set_mtime(
        &site.sp().join(OPENBLAS),
        SystemTime::now() - RACY_WINDOW - Duration::from_secs(1),
    );
    assert!(!cache.scan(site.request()).summary.from_cache);
    cache.only_entry();
    assert!(cache.scan(site.request()).summary.from_cache);
}

#[test]
fn a_change_during_the_scan_is_racy() {
    // A stamp dated after the scan started (a file rewritten while it was
    // read) is as racy as one just before.
    let site = Site::new();
    site.age();
    set_mtime(
        &site.sp().join(MODULE),
        SystemTime::now() + Duration::from_secs(5),
    );
    let cache = Cache::new();
    cache.scan(site.request());
    assert!(cache.entries().is_empty());
}

#[test]
fn corrupt_truncated_or_oversized_entries_are_misses() {
    let (site, cache, fresh) = cached_site();
    let file = cache.only_entry();
    let good = fs::read(&file).expect("read");
    let key = key_of(&site.request()).expect("key");
    assert!(load(&file, &key, good.len() as u64).is_some());
    assert!(
        load(&file, &key, good.len() as u64 - 1).is_none(),
        "over the cap"
    );

    for bad in [&b"{not json"[..], &good[..good.len() / 2], b"", b"{}"] {
        fs::write(&file, bad).expect("corrupt");
        let after = cache.scan(site.request());
        assert!(!after.summary.from_cache);
        assert_eq!(comparable(&after), comparable(&fresh));
        // The fresh result replaced the bad entry.
        assert!(cache.scan(site.request()).summary.from_cache);
    }
}

#[test]
fn an_entry_of_another_build_never_hits() {
    let (site, cache, _) = cached_site();
    let key = key_of(&site.request()).expect("key");
    assert_eq!(key["source"], SOURCE_HASH);
    assert_eq!(SOURCE_HASH.len(), 16, "{SOURCE_HASH}");
    let file = cache.only_entry();
    let mut entry: serde_json::Value =
        serde_json::from_slice(&fs::read(&file).expect("read")).expect("json");
    entry["key"]["source"] = "0000000000000000".into();
    fs::write(&file, serde_json::to_vec(&entry).expect("json")).expect("write");
    assert!(!cache.scan(site.request()).summary.from_cache);
    assert_eq!(
        cache.only_entry(),
        file,
        "the new build's entry replaced it"
    );
    assert!(cache.scan(site.request()).summary.from_cache);
}

#[test]
fn an_unusable_cache_folder_is_a_miss_not_an_error() {
    let site = Site::new();
    site.age();
    let not_a_folder = site.root.join("a-file");
    fs::write(&not_a_folder, "").expect("write");
    for _ in 0..2 {
        let result = scan_cached_in(site.request(), Some(&not_a_folder));
        assert!(!result.summary.from_cache);
        assert_eq!(result.summary.binaries_read, 3);
    }
}

#[test]
fn only_site_packages_scans_are_cached() {
    let site = Site::new();
    site.age();
    let cache = Cache::new();
    let mut request = site.request();
    request.mode = ScanMode::Tree;
    cache.scan(request);
    assert!(cache.entries().is_empty());
}

/// The variable that makes the next test run as a child process.
const CHILD_TREE: &str = "CAICLUST_TEST_SCAN_CACHE_TREE";

/// Runs only as the child of `no_cache_variable_is_respected`, with its
/// environment: a scan with the default cache folder.
#[test]
fn child_scan_with_the_default_cache() {
    let Some(root) = std::env::var_os(CHILD_TREE) else {
        return;
    };
    let result = scan_cached(Site::at(PathBuf::from(root)).request());
    assert_eq!(result.summary.binaries_read, 3);
}

#[test]
fn no_cache_variable_is_respected() {
    let site = Site::new();
    site.age();
    let xdg = tempfile::tempdir().expect("tempdir");
    let cache = xdg.path().join("caiclust");
    let run = |no_cache: &str| {
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "scan::cache::tests::child_scan_with_the_default_cache",
                "--test-threads=1",
            ])
            .env(CHILD_TREE, &site.root)
            .env("XDG_CACHE_HOME", xdg.path())
            // (A suite's own folder would take precedence.)
            .env_remove("CAICLUST_CACHE_DIR")
            .env("CAICLUST_NO_CACHE", no_cache)
            .output()
            .expect("run the child");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child test ran: {text}");
    };
    let scan_entries = || {
        fs::read_dir(&cache).map_or(0, |r| {
            r.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("scan-"))
                .count()
        })
    };
    run("1");
    assert_eq!(scan_entries(), 0, "CAICLUST_NO_CACHE=1: nothing written");
    run("");
    assert_eq!(scan_entries(), 1, "empty CAICLUST_NO_CACHE: cached");
}
