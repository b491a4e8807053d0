//! The query functions of each vendor, and how their answers are read.
//!
//! Runs in the query child only, after the library was loaded. Names,
//! order and interpretation follow threadpoolctl (3.8) so that the answers
//! can be compared with it: the version is read first, then the threading
//! layer and architecture, then the thread count. Every function is
//! announced before it is called, so that a crash or hang is attributed to
//! it.

use std::ffi::{c_char, c_int, CStr};

use libloading::Library;

use super::RuntimeQuery;
use crate::facts::{RuntimeAnswer, ThreadingLayer, Vendor};

/// Symbol prefixes tried after the given one (threadpoolctl's
/// `_symbol_prefixes`).
const PREFIXES: [&str; 2] = ["", "scipy_"];
/// Symbol suffixes tried after the given one (threadpoolctl's
/// `_symbol_suffixes`).
const SUFFIXES: [&str; 3] = ["", "64_", "_64"];

/// Size of the buffers handed to `MKL_Get_Version_String` (threadpoolctl
/// uses 200) and to FlexiBLAS's name functions (threadpoolctl uses 1024).
const MKL_VERSION_BUFFER: usize = 200;
const FLEXIBLAS_NAME_BUFFER: usize = 1024;

type IntFn = unsafe extern "C" fn() -> c_int;
type StrFn = unsafe extern "C" fn() -> *const c_char;
type IntToIntFn = unsafe extern "C" fn(c_int) -> c_int;
type IntToStrFn = unsafe extern "C" fn(c_int) -> *const c_char;
/// `void MKL_Get_Version_String(char *buffer, int len)`.
type MklVersionFn = unsafe extern "C" fn(*mut c_char, c_int);
/// `int flexiblas_current_backend(char *name, size_t len)`.
type FlexiblasBackendFn = unsafe extern "C" fn(*mut c_char, usize) -> c_int;
/// `int flexiblas_list_loaded(char *name, size_t len, int pos)`; FlexiBLAS
/// 3.4 widened `pos` and the result to `ssize_t`. Passing an `isize` and
/// reading a `c_int` works with both in the x86-64 and AArch64 calling
/// conventions (the low half of the register).
type FlexiblasListFn = unsafe extern "C" fn(*mut c_char, usize, isize) -> c_int;
/// `void flexiblas_get_version(int *major, int *minor, int *patch)`.
type FlexiblasVersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int, *mut c_int);

/// Functions whose presence (under some affixes) marks the library as
/// queryable; the first affixes under which any resolves are used for all.
fn anchors(vendor: Vendor) -> &'static [&'static str] {
    match vendor {
        // threadpoolctl finds the affixes with openblas_get_num_threads.
        Vendor::Openblas => &[
            "openblas_get_num_threads",
            "openblas_get_config",
            "openblas_get_parallel",
            "openblas_get_corename",
        ],
        Vendor::Mkl => &[
            "MKL_Get_Max_Threads",
            "MKL_Get_Version_String",
            "MKL_Set_Threading_Layer",
        ],
        Vendor::Blis => &[
            "bli_thread_get_num_threads",
            "bli_info_get_version_str",
            "bli_info_get_enable_openmp",
            "bli_info_get_enable_pthreads",
        ],
        Vendor::Flexiblas => &[
            "flexiblas_get_num_threads",
            "flexiblas_current_backend",
            "flexiblas_list_loaded",
            "flexiblas_get_version",
        ],
        v if v.is_openmp() => &["omp_get_max_threads"],
        _ => &[],
    }
}

/// Is there a runtime query for `vendor`?
pub(super) fn is_supported(vendor: Vendor) -> bool {
    !anchors(vendor).is_empty()
}

/// Affixes for a message, each once, in the order tried: `no prefix or
/// scipy_`.
fn affix_list<'a>(what: &str, affixes: impl Iterator<Item = &'a str>) -> String {
    let mut words: Vec<String> = Vec::new();
    for a in affixes {
        let word = if a.is_empty() {
            format!("no {what}")
        } else {
            a.to_owned()
        };
        if !words.contains(&word) {
            words.push(word);
        }
    }
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.concat(),
    }
}

/// The (prefix, suffix) pairs to try, the given ones first.
pub(super) fn affixes(query: &RuntimeQuery) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if query.symbol_prefix.is_some() || query.symbol_suffix.is_some() {
        pairs.push((
            query.symbol_prefix.clone().unwrap_or_default(),
            query.symbol_suffix.clone().unwrap_or_default(),
        ));
    }
    for prefix in PREFIXES {
        for suffix in SUFFIXES {
            let pair = (prefix.to_owned(), suffix.to_owned());
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
    }
    pairs
}

/// Ask the loaded `lib` everything its vendor can tell. `announce` is
/// called with each function's name just before the call.
pub(super) fn ask(
    lib: &Library,
    query: &RuntimeQuery,
    announce: &mut dyn FnMut(&str),
) -> RuntimeAnswer {
    let anchors = anchors(query.vendor);
    if anchors.is_empty() {
        return RuntimeAnswer {
            error: Some(format!(
                "no runtime query is defined for {} libraries",
                query.vendor
            )),
            ..RuntimeAnswer::default()
        };
    }
    let tried = affixes(query);
    let found = tried.iter().find(|(prefix, suffix)| {
        anchors
            .iter()
            .any(|name| exported(lib, &format!("{prefix}{name}{suffix}")))
    });
    let Some((prefix, suffix)) = found else {
        return RuntimeAnswer {
            error: Some(format!(
                "the library exports none of the query functions ({}, tried with {} \
                 and with {})",
                anchors.join(", "),
                affix_list("prefix", tried.iter().map(|(p, _)| p.as_str())),
                affix_list("suffix", tried.iter().map(|(_, s)| s.as_str())),
            )),
            ..RuntimeAnswer::default()
        };
    };
    let mut s = Session {
        lib,
        prefix,
        suffix,
        announce,
        answer: RuntimeAnswer::default(),
    };
    match query.vendor {
        Vendor::Openblas => openblas(&mut s),
        Vendor::Mkl => mkl(&mut s),
        Vendor::Blis => blis(&mut s),
        Vendor::Flexiblas => flexiblas(&mut s),
        _ => openmp(&mut s),
    }
    s.answer
}

/// Does `lib` export `name`? Looking up a symbol runs no library code.
fn exported(lib: &Library, name: &str) -> bool {
    // SAFETY: only the address is looked up; it is not used as a `*const u8`
    // for anything but the existence check.
    unsafe { lib.get::<*const u8>(name).is_ok() }
}

/// One library being asked, with the affixes chosen for it.
struct Session<'a> {
    lib: &'a Library,
    prefix: &'a str,
    suffix: &'a str,
    announce: &'a mut dyn FnMut(&str),
    answer: RuntimeAnswer,
}

impl Session<'_> {
    /// `base` with the chosen affixes.
    fn name(&self, base: &str) -> String {
        format!("{}{base}{}", self.prefix, self.suffix)
    }

    /// Resolve the exact symbol `name` as a function of type `F`, and if it
    /// exists, announce it and record it in `calls`.
    ///
    /// # Safety
    ///
    /// `F` must be the function's real C signature.
    unsafe fn prepare<F: Copy>(&mut self, name: &str) -> Option<F> {
        // SAFETY: the caller guarantees that `F` is the symbol's type; the
        // library stays loaded until the process ends (it is never dropped
        // before `_exit`), so the copied function pointer stays valid.
        let f = unsafe { self.lib.get::<F>(name) }.ok().map(|sym| *sym)?;
        (self.announce)(name);
        self.answer.calls.push(name.to_owned());
        Some(f)
    }

    /// Call `int name(void)` (exact name).
    fn int_exact(&mut self, name: &str) -> Option<c_int> {
        // SAFETY: every name passed here is a documented query function
        // taking no argument and returning `int`.
        let f = unsafe { self.prepare::<IntFn>(name) }?;
        // SAFETY: as above; these functions only read library state.
        Some(unsafe { f() })
    }

    /// Call `int base(void)` with the chosen affixes.
    fn int(&mut self, base: &str) -> Option<c_int> {
        self.int_exact(&self.name(base))
    }

    /// Call `const char *base(void)` with the chosen affixes.
    fn string(&mut self, base: &str) -> Option<String> {
        let name = self.name(base);
        // SAFETY: every name passed here is a documented query function
        // taking no argument and returning a pointer to a static,
        // NUL-terminated string (or NULL).
        let f = unsafe { self.prepare::<StrFn>(&name) }?;
        // SAFETY: as above.
        let p = unsafe { f() };
        // SAFETY: non-NULL results point to NUL-terminated static strings.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

/// The text of a NUL-terminated buffer the library filled.
fn buffer_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A non-negative thread count.
fn count(n: c_int) -> Option<usize> {
    usize::try_from(n).ok()
}

fn openblas(s: &mut Session<'_>) {
    if let Some(config) = s.string("openblas_get_config") {
        s.answer.version = openblas_version(&config);
        s.answer.config = Some(config.trim_end().to_owned());
    }
    if let Some(parallel) = s.int("openblas_get_parallel") {
        s.answer.threading_layer = Some(openblas_layer(parallel));
    }
    s.answer.corename = s.string("openblas_get_corename");
    // threadpoolctl 3.8: the OpenMP build's pool follows the OpenMP
    // runtime, so ask that (found through the library's dependencies).
    let mut threads = None;
    if s.answer.threading_layer == Some(ThreadingLayer::Openmp) {
        threads = s.int_exact("omp_get_max_threads");
    }
    if threads.is_none() {
        threads = s.int("openblas_get_num_threads");
    }
    s.answer.num_threads = threads.and_then(count);
}

/// The version in an OpenBLAS config string, as threadpoolctl reads it:
/// the second word when the first is `OpenBLAS` (`OpenBLAS 0.3.21
/// DYNAMIC_ARCH ...` → `0.3.21`).
pub(super) fn openblas_version(config: &str) -> Option<String> {
    let mut words = config.split_ascii_whitespace();
    if words.next()? != "OpenBLAS" {
        return None;
    }
    words.next().map(str::to_owned)
}

/// `openblas_get_parallel()`: 0 none, 1 pthreads, 2 OpenMP (threadpoolctl
/// reads anything else as "disabled" too).
pub(super) fn openblas_layer(parallel: c_int) -> ThreadingLayer {
    match parallel {
        2 => ThreadingLayer::Openmp,
        1 => ThreadingLayer::Pthreads,
        _ => ThreadingLayer::Disabled,
    }
}

fn mkl(s: &mut Session<'_>) {
    let name = s.name("MKL_Get_Version_String");
    // SAFETY: `void MKL_Get_Version_String(char *buffer, int len)`.
    if let Some(f) = unsafe { s.prepare::<MklVersionFn>(&name) } {
        let mut buf = [0u8; MKL_VERSION_BUFFER];
        // SAFETY: MKL writes at most `len` bytes, NUL included, into the
        // buffer, which is that long.
        unsafe { f(buf.as_mut_ptr().cast(), MKL_VERSION_BUFFER as c_int) };
        let text = buffer_text(&buf);
        s.answer.version = Some(mkl_version(&text));
        s.answer.config = Some(text.trim().to_owned());
    }
    let name = s.name("MKL_Set_Threading_Layer");
    // SAFETY: `int MKL_Set_Threading_Layer(int code)`.
    if let Some(f) = unsafe { s.prepare::<IntToIntFn>(&name) } {
        // SAFETY: an invalid code (-1) changes nothing and returns the
        // current layer; threadpoolctl relies on the same.
        let layer = unsafe { f(-1) };
        s.answer.threading_layer = mkl_layer(layer);
    }
    s.answer.num_threads = s.int("MKL_Get_Max_Threads").and_then(count);
}

/// The version in MKL's version string, as threadpoolctl reads it: the
/// first `Version ([^ ]+) ` match, else the whole string; stripped.
/// (`Intel(R) oneAPI Math Kernel Library Version 2024.0-Product Build ...`
/// → `2024.0-Product`.)
pub(super) fn mkl_version(text: &str) -> String {
    const MARK: &str = "Version ";
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        match after.find(' ') {
            Some(end) if end > 0 => return after[..end].trim().to_owned(),
            _ => rest = &rest[at + 1..],
        }
    }
    text.trim().to_owned()
}

/// `MKL_Set_Threading_Layer(-1)`: 0 INTEL, 1 SEQUENTIAL, 2 PGI, 3 GNU,
/// 4 TBB. PGI has no [`ThreadingLayer`] and -1 means "not specified": both
/// are `None`.
pub(super) fn mkl_layer(layer: c_int) -> Option<ThreadingLayer> {
    match layer {
        0 => Some(ThreadingLayer::Intel),
        1 => Some(ThreadingLayer::Sequential),
        3 => Some(ThreadingLayer::Gnu),
        4 => Some(ThreadingLayer::Tbb),
        _ => None,
    }
}

fn blis(s: &mut Session<'_>) {
    s.answer.version = s.string("bli_info_get_version_str");
    s.answer.threading_layer = Some(if s.int("bli_info_get_enable_openmp").unwrap_or(0) != 0 {
        ThreadingLayer::Openmp
    } else if s.int("bli_info_get_enable_pthreads").unwrap_or(0) != 0 {
        ThreadingLayer::Pthreads
    } else {
        ThreadingLayer::Disabled
    });
    // threadpoolctl's architecture: bli_arch_string(bli_arch_query_id()).
    let (query_id, string) = (s.name("bli_arch_query_id"), s.name("bli_arch_string"));
    // SAFETY: only existence is checked here.
    let both = unsafe {
        s.lib.get::<IntFn>(&query_id).is_ok() && s.lib.get::<IntToStrFn>(&string).is_ok()
    };
    if both {
        if let Some(id) = s.int_exact(&query_id) {
            // SAFETY: `const char *bli_arch_string(arch_t id)`, arch_t an
            // enum passed as int.
            if let Some(f) = unsafe { s.prepare::<IntToStrFn>(&string) } {
                // SAFETY: `id` came from bli_arch_query_id, so it is valid.
                let p = unsafe { f(id) };
                // SAFETY: a static NUL-terminated architecture name.
                s.answer.corename = (!p.is_null())
                    .then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
            }
        }
    }
    // BLIS answers -1 when no thread count was set; threadpoolctl reports 1.
    s.answer.num_threads = s
        .int("bli_thread_get_num_threads")
        .map(|n| if n == -1 { 1 } else { n })
        .and_then(count);
}

fn flexiblas(s: &mut Session<'_>) {
    let mut config = Vec::new();
    let name = s.name("flexiblas_get_version");
    // SAFETY: `void flexiblas_get_version(int *major, int *minor, int *patch)`.
    if let Some(f) = unsafe { s.prepare::<FlexiblasVersionFn>(&name) } {
        let (mut major, mut minor, mut patch) = (0, 0, 0);
        // SAFETY: three valid `int` out-pointers.
        unsafe { f(&mut major, &mut minor, &mut patch) };
        let version = format!("{major}.{minor}.{patch}");
        config.push(format!("FlexiBLAS {version}"));
        s.answer.version = Some(version);
    }
    s.answer.threading_layer = Some(ThreadingLayer::RuntimeSelected);
    let name = s.name("flexiblas_current_backend");
    // SAFETY: `int flexiblas_current_backend(char *name, size_t len)`.
    if let Some(f) = unsafe { s.prepare::<FlexiblasBackendFn>(&name) } {
        let mut buf = vec![0u8; FLEXIBLAS_NAME_BUFFER];
        // SAFETY: FlexiBLAS writes at most `len` bytes, NUL included.
        unsafe { f(buf.as_mut_ptr().cast(), buf.len()) };
        let backend = buffer_text(&buf);
        config.push(format!("current backend {backend}"));
        s.answer.corename = Some(backend);
    }
    let name = s.name("flexiblas_list_loaded");
    // SAFETY: see [`FlexiblasListFn`].
    if let Some(f) = unsafe { s.prepare::<FlexiblasListFn>(&name) } {
        // SAFETY: with a NULL buffer it only returns the count.
        let n = unsafe { f(std::ptr::null_mut(), 0, 0) };
        let mut loaded = Vec::new();
        for pos in 0..n.clamp(0, 64) {
            let mut buf = vec![0u8; FLEXIBLAS_NAME_BUFFER];
            // SAFETY: a buffer of `len` bytes and a position below the count.
            unsafe { f(buf.as_mut_ptr().cast(), buf.len(), pos as isize) };
            let backend = buffer_text(&buf);
            // threadpoolctl leaves out this pseudo-backend too.
            if backend != "__FALLBACK__" {
                loaded.push(backend);
            }
        }
        config.push(format!("loaded backends {}", loaded.join(", ")));
    }
    if !config.is_empty() {
        s.answer.config = Some(config.join("; "));
    }
    // As for BLIS, threadpoolctl maps -1 to 1.
    s.answer.num_threads = s
        .int("flexiblas_get_num_threads")
        .map(|n| if n == -1 { 1 } else { n })
        .and_then(count);
}

fn openmp(s: &mut Session<'_>) {
    s.answer.num_threads = s.int("omp_get_max_threads").and_then(count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openblas_version_is_the_second_word_after_openblas() {
        let debian = "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64";
        assert_eq!(openblas_version(debian).as_deref(), Some("0.3.21"));
        assert_eq!(
            openblas_version("OpenBLAS 0.3.31.188.0  USE64BITINT DYNAMIC_ARCH").as_deref(),
            Some("0.3.31.188.0")
        );
        assert_eq!(openblas_version("GotoBLAS 1.0"), None);
        assert_eq!(openblas_version("OpenBLAS"), None);
        assert_eq!(openblas_version(""), None);
    }

    #[test]
    fn openblas_layers_follow_threadpoolctl() {
        assert_eq!(openblas_layer(0), ThreadingLayer::Disabled);
        assert_eq!(openblas_layer(1), ThreadingLayer::Pthreads);
        assert_eq!(openblas_layer(2), ThreadingLayer::Openmp);
        assert_eq!(openblas_layer(7), ThreadingLayer::Disabled);
    }

    #[test]
    fn mkl_version_follows_threadpoolctl_regex() {
        let s = "Intel(R) oneAPI Math Kernel Library Version 2024.0-Product Build 20231011 \
                 for Intel(R) 64 architecture applications";
        assert_eq!(mkl_version(s), "2024.0-Product");
        assert_eq!(
            mkl_version("Intel(R) Math Kernel Library Version 2019.0.4 Product Build 20190411"),
            "2019.0.4"
        );
        // No space after the version: no match, the whole string stripped.
        assert_eq!(mkl_version("  MKL Version 2025.1\n"), "MKL Version 2025.1");
        // A "Version " not followed by a word does not match; a later one does.
        assert_eq!(mkl_version("Version  x Version 3 y"), "3");
    }

    #[test]
    fn mkl_layers_follow_threadpoolctl() {
        assert_eq!(mkl_layer(0), Some(ThreadingLayer::Intel));
        assert_eq!(mkl_layer(1), Some(ThreadingLayer::Sequential));
        assert_eq!(mkl_layer(2), None); // pgi
        assert_eq!(mkl_layer(3), Some(ThreadingLayer::Gnu));
        assert_eq!(mkl_layer(4), Some(ThreadingLayer::Tbb));
        assert_eq!(mkl_layer(-1), None); // not specified
    }

    #[test]
    fn given_affixes_come_first_then_all_combinations() {
        let mut q = RuntimeQuery::new("/x", Vendor::Openblas);
        let plain = affixes(&q);
        assert_eq!(plain.len(), 6);
        assert_eq!(plain[0], (String::new(), String::new()));
        assert!(plain.contains(&("scipy_".into(), "_64".into())));
        q.symbol_prefix = Some("scipy_".into());
        q.symbol_suffix = Some("64_".into());
        let given = affixes(&q);
        assert_eq!(given.len(), 6);
        assert_eq!(given[0], ("scipy_".into(), "64_".into()));
        q.symbol_prefix = Some("weird_".into());
        q.symbol_suffix = None;
        let odd = affixes(&q);
        assert_eq!(odd.len(), 7);
        assert_eq!(odd[0], ("weird_".into(), String::new()));
    }

    #[test]
    fn affixes_are_listed_in_words() {
        let q = RuntimeQuery::new("/x", Vendor::Openblas);
        let tried = affixes(&q);
        assert_eq!(
            affix_list("prefix", tried.iter().map(|(p, _)| p.as_str())),
            "no prefix or scipy_"
        );
        assert_eq!(
            affix_list("suffix", tried.iter().map(|(_, s)| s.as_str())),
            "no suffix, 64_ or _64"
        );
        assert_eq!(affix_list("prefix", ["x_"].into_iter()), "x_");
    }

    #[test]
    fn supported_vendors() {
        for v in [
            Vendor::Openblas,
            Vendor::Mkl,
            Vendor::Blis,
            Vendor::Flexiblas,
            Vendor::GnuOpenmp,
            Vendor::LlvmOpenmp,
            Vendor::IntelOpenmp,
            Vendor::MsvcOpenmp,
        ] {
            assert!(is_supported(v), "{v:?}");
        }
        for v in [
            Vendor::Accelerate,
            Vendor::Tbb,
            Vendor::Opencv,
            Vendor::Unknown,
        ] {
            assert!(!is_supported(v), "{v:?}");
        }
    }

    #[test]
    fn buffers_stop_at_nul() {
        assert_eq!(buffer_text(b"OPENBLAS\0junk"), "OPENBLAS");
        assert_eq!(buffer_text(b"full"), "full");
    }
}
