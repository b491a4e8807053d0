//! Reading one binary (ELF, Mach-O including fat, PE) into the facts the
//! loader emulation and the fingerprints need. Nothing is loaded or run.
//!
//! Files are memory-mapped, so a large or sparse file costs only the pages
//! actually read. Parsing is defensive: any malformed input becomes a
//! [`BinaryError`], never a panic; a panic inside the parser (a bug) is
//! contained and becomes [`BinaryError::ParserPanic`], naming the file.

mod elf;
mod macho;
mod markers;
mod pe;

use elf::*;
use macho::*;
pub(crate) use markers::IMMEDIATES_PREFIX;
use markers::*;
use pe::*;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use goblin::elf::Elf;
use goblin::mach::{Mach, MachO, SingleArch};
use goblin::pe::PE;
use memchr::memmem;
use serde::{Deserialize, Serialize};

use crate::error::BinaryError;
use crate::facts::BinaryFormat;

/// Files larger than this are not parsed (the largest real runtime
/// libraries, CUDA's, are about 1 GiB).
pub const MAX_BINARY_SIZE: u64 = 4 << 30;

/// Longest marker string kept, in bytes.
const MAX_MARKER_LEN: usize = 600;

/// Longest symbol name kept. Real names, even mangled C++ ones, are far
/// shorter; a corrupt string table can make every name megabytes long.
const MAX_SYMBOL_LEN: usize = 4096;

/// Most symbols kept per binary (the largest real libraries export a few
/// hundred thousand).
const MAX_SYMBOLS: usize = 1_000_000;

/// Most slices in a fat Mach-O file.
const MAX_FAT_SLICES: usize = 16;

/// Most bytes of a small identification section (`.comment`,
/// `.gnu_debuglink`) read; real ones are a few hundred bytes.
const MAX_ID_SECTION: usize = 64 << 10;

/// Most bytes of `.gnu.build.attributes` searched for compiler notes: the
/// notes that name the compiler come first, one per object file.
const MAX_BUILD_NOTES_SECTION: usize = 256 << 10;

/// Most bytes of a PE `.rsrc` section searched for the version resource
/// (icons and manifests make some large; the version info is small).
const MAX_RSRC_SEARCH: usize = 16 << 20;

/// Most strings kept from `.comment` or the build notes.
const MAX_ID_STRINGS: usize = 32;

/// A plausible symbol name: not empty, not absurdly long.
fn plausible_symbol(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_SYMBOL_LEN
}

/// What the loader and the fingerprints need from one binary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BinaryInfo {
    pub format: Option<BinaryFormat>,
    pub architectures: Vec<String>,
    /// ELF `DT_SONAME`, Mach-O `LC_ID_DYLIB`, PE export-directory name.
    pub soname: Option<String>,
    /// ELF `DT_NEEDED`, Mach-O `LC_LOAD_DYLIB`/weak/reexport, PE imported DLLs.
    pub needed: Vec<String>,
    /// ELF `DT_RPATH` entries; Mach-O `LC_RPATH` entries.
    pub rpath: Vec<String>,
    /// ELF `DT_RUNPATH` entries.
    pub runpath: Vec<String>,
    /// Defined, exported dynamic symbols (Mach-O names without the leading
    /// underscore).
    pub exports: Vec<String>,
    /// Imported (undefined) dynamic symbols (Mach-O names without the
    /// leading underscore).
    pub imports: Vec<String>,
    /// ELF version needs: (file, version names).
    pub version_needs: Vec<(String, Vec<String>)>,
    /// ELF version definitions.
    pub version_defs: Vec<String>,
    /// Printable strings that matter for fingerprints (OpenBLAS config,
    /// OpenCV build information, MKL version), found by needle search in
    /// the read-only data.
    pub marker_strings: Vec<String>,
    /// ELF `.comment` strings: which compilers built the objects, e.g.
    /// `GCC: (GNU) 10.2.1 20210130 (Red Hat 10.2.1-11)`. Distributions
    /// often strip the section.
    #[serde(default)]
    pub comment: Vec<String>,
    /// annobin notes that name the compiler that ran, e.g.
    /// `running gcc 8.5.0 20210514`, from the ELF `.gnu.build.attributes`
    /// section of Red Hat-family builds.
    #[serde(default)]
    pub build_notes: Vec<String>,
    /// The ELF `.gnu_debuglink` file name: Red Hat-family builds name it
    /// after the package (`libgomp.so.1.0.0-8.5.0-28.el8_10.alma.1.x86_64.debug`),
    /// Debian after the build id.
    #[serde(default)]
    pub debuglink: Option<String>,
    /// The PE file version from the `VS_FIXEDFILEINFO` version resource
    /// (`14.51.36247.0`).
    #[serde(default)]
    pub file_version: Option<String>,
    /// Exported functions whose whole body returns a constant, with it:
    /// read for the few exports that state a build option this way
    /// (OpenBLAS's `openblas_get_parallel`: 0 serial, 1 pthreads, 2
    /// OpenMP). ELF x86-64 and AArch64 only.
    #[serde(default)]
    pub constant_returns: Vec<(String, i64)>,
}

impl BinaryInfo {
    /// Does the binary export this symbol?
    pub fn exports_symbol(&self, name: &str) -> bool {
        self.exports.iter().any(|e| e == name)
    }

    /// Does the binary import this symbol?
    pub fn imports_symbol(&self, name: &str) -> bool {
        self.imports.iter().any(|e| e == name)
    }
}

/// Needles searched for in read-only data, and when to search for them.
struct Needle {
    text: &'static [u8],
    /// Search only when an export contains this, or the file name starts
    /// with `file_prefix`.
    export_contains: &'static str,
    file_prefix: &'static str,
    /// Keep the text up to the end of the line (multi-line build info) or
    /// to the end of the C string.
    to_line_end: bool,
    /// Keep only matches followed by an ASCII digit (a version number).
    then_digit: bool,
}

const NEEDLES: &[Needle] = &[
    // BLIS built as a plain libblas.so.3 (Debian's libblis4-*) exports only
    // the standard BLAS names; its own environment variable gives it away.
    Needle {
        text: b"BLIS_ARCH_TYPE",
        export_contains: "dgemm_",
        file_prefix: "libblis",
        to_line_end: false,
        then_digit: false,
    },
    Needle {
        text: b"OpenBLAS ",
        export_contains: "openblas_get_config",
        file_prefix: "\0",
        to_line_end: false,
        then_digit: true,
    },
    Needle {
        text: b"Parallel framework:",
        export_contains: "PyInit_cv2",
        file_prefix: "libopencv_core",
        to_line_end: true,
        then_digit: false,
    },
    Needle {
        text: b"General configuration for OpenCV",
        export_contains: "PyInit_cv2",
        file_prefix: "libopencv_core",
        to_line_end: true,
        then_digit: false,
    },
    Needle {
        text: b"Math Kernel Library Version",
        export_contains: "MKL_Get_Version",
        file_prefix: "\0",
        to_line_end: false,
        then_digit: false,
    },
    // TBB names its release: "oneTBB: VERSION\t\t2023.2.0" (older
    // releases: "TBB: VERSION\t\t2020.3").
    Needle {
        text: b"TBB: VERSION",
        export_contains: "TBB_runtime_interface_version",
        file_prefix: "\0",
        to_line_end: false,
        then_digit: false,
    },
    // Intel's OpenMP runtime names its own version and build date:
    // "Intel(R) OMP version: 5.0.20260828".
    Needle {
        text: b"Intel(R) OMP version: ",
        export_contains: "kmp_set_defaults",
        file_prefix: "\0",
        to_line_end: false,
        then_digit: true,
    },
    Needle {
        text: b"Intel(R) OMP",
        export_contains: "kmp_set_defaults",
        file_prefix: "\0",
        to_line_end: false,
        then_digit: false,
    },
    Needle {
        text: b"LLVM OMP",
        export_contains: "kmp_set_defaults",
        file_prefix: "\0",
        to_line_end: false,
        then_digit: false,
    },
];

/// Read and parse a binary file. `path` must be a regular file (symlinks
/// are followed).
pub fn read_binary(path: &Path) -> Result<BinaryInfo, BinaryError> {
    // Check before opening: opening a FIFO or a device named like a library
    // could block forever.
    let meta = std::fs::metadata(path).map_err(|e| BinaryError::Io(e.to_string()))?;
    if !meta.is_file() {
        return Err(BinaryError::NotRegular);
    }
    let file = File::open(path).map_err(|e| BinaryError::Io(e.to_string()))?;
    let meta = file
        .metadata()
        .map_err(|e| BinaryError::Io(e.to_string()))?;
    if !meta.is_file() {
        return Err(BinaryError::NotRegular);
    }
    let size = meta.len();
    if size == 0 {
        return Err(BinaryError::Empty);
    }
    if size > MAX_BINARY_SIZE {
        return Err(BinaryError::TooLarge {
            size,
            limit: MAX_BINARY_SIZE,
        });
    }
    // Cheap signature check before mapping anything.
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = &file;
        let n = f
            .read(&mut magic)
            .map_err(|e| BinaryError::Io(e.to_string()))?;
        if n < 4 || sniff_format(&magic).is_none() {
            return Err(BinaryError::NotBinary);
        }
    }
    // SAFETY: the map is read-only and private to this call. If another
    // process truncates the file while we read it, accessing the lost pages
    // raises SIGBUS; libraries in a Python environment are not rewritten
    // while it is being probed, and the probe is a short-lived reader. No
    // reference into the map outlives this function (all strings are copied).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| BinaryError::Io(e.to_string()))?;
    parse_binary_from(&map, Some(path))
}

/// Which container format these leading bytes announce.
pub fn sniff_format(bytes: &[u8]) -> Option<BinaryFormat> {
    match bytes.get(..4)? {
        [0x7f, b'E', b'L', b'F'] => Some(BinaryFormat::Elf),
        [0xfe, 0xed, 0xfa, 0xce | 0xcf] | [0xce | 0xcf, 0xfa, 0xed, 0xfe] => {
            Some(BinaryFormat::MachO)
        }
        // Fat Mach-O (also the Java class-file magic; goblin tells them apart).
        [0xca, 0xfe, 0xba, 0xbe | 0xbf] => Some(BinaryFormat::MachO),
        [b'M', b'Z', _, _] => Some(BinaryFormat::Pe),
        _ => None,
    }
}

/// Parse a binary from memory. Never panics on malformed input.
pub fn parse_binary(bytes: &[u8]) -> Result<BinaryInfo, BinaryError> {
    parse_binary_from(bytes, None)
}

/// Parse `bytes`, read from the file `source` (`None`: given in memory).
fn parse_binary_from(bytes: &[u8], source: Option<&Path>) -> Result<BinaryInfo, BinaryError> {
    let format = sniff_format(bytes).ok_or(BinaryError::NotBinary)?;
    // goblin returns errors for most malformed input but can still panic on
    // some (out-of-range offsets in Mach-O export tries and load commands,
    // found by fuzzing). A hostile file must not take the probe down:
    // contain the panic and report it, naming the file.
    let (mut info, rodata) = contain_panics(format, source, || match format {
        BinaryFormat::Elf => parse_elf(bytes),
        BinaryFormat::MachO => parse_mach(bytes),
        BinaryFormat::Pe => parse_pe(bytes),
    })?;
    let file_name = source
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    info.format = Some(format);
    info.marker_strings = find_markers(bytes, &rodata, &file_name, &info.exports);
    Ok(info)
}

thread_local! {
    /// Set while this thread runs a parser under [`contain_panics`].
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
    /// Where the contained panic happened (`file:line:col`), as the
    /// program's panic hook passed it to [`claim_parser_panic`].
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// For a program's panic hook: whether this panic happens inside the
/// probe's parse of one binary on this thread. If so, the probe reports it
/// as [`BinaryError::ParserPanic`] naming the file, with the panic's
/// message and the location recorded here, and goes on with the other
/// files: the hook need not print it. Any other panic: `false`, and the
/// hook should report it as usual.
///
/// ```no_run
/// let default = std::panic::take_hook();
/// std::panic::set_hook(Box::new(move |info| {
///     if !caiclust_probe::claim_parser_panic(info) {
///         default(info);
///     }
/// }));
/// ```
pub fn claim_parser_panic(info: &std::panic::PanicHookInfo<'_>) -> bool {
    if !CONTAINING.with(Cell::get) {
        return false;
    }
    let at = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
    PANIC_AT.with(|p| *p.borrow_mut() = at);
    true
}

/// Run the parser `parse` of a `format` file read from `source`; a panic
/// inside it becomes [`BinaryError::ParserPanic`] naming the file.
fn contain_panics<T>(
    format: BinaryFormat,
    source: Option<&Path>,
    parse: impl FnOnce() -> Result<T, BinaryError>,
) -> Result<T, BinaryError> {
    let outer = CONTAINING.with(|c| c.replace(true));
    PANIC_AT.with(|p| p.borrow_mut().take());
    // Unwind safety: nothing `parse` touched is used after a panic; the
    // error carries only copied text.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse));
    CONTAINING.with(|c| c.set(outer));
    let payload = match result {
        Ok(parsed) => return parsed,
        Err(payload) => payload,
    };
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    let message = match PANIC_AT.with(|p| p.borrow_mut().take()) {
        Some(at) => format!("{what} (at {at})"),
        None => what,
    };
    Err(BinaryError::ParserPanic {
        format,
        path: source.map(Path::to_path_buf),
        message,
    })
}

fn malformed(format: BinaryFormat, e: impl std::fmt::Display) -> BinaryError {
    BinaryError::Malformed {
        format,
        reason: e.to_string(),
    }
}

/// Byte ranges of read-only data worth searching for marker strings.
type Ranges = Vec<(usize, usize)>;

/// The NUL-terminated string at `offset` of a string table.
/// Strings longer than [`MAX_SYMBOL_LEN`] are refused without scanning
/// further: a corrupt table can hold megabytes without a NUL.
fn cstr_at(table: &[u8], offset: usize) -> Option<&str> {
    let rest = table.get(offset..)?;
    let rest = &rest[..rest.len().min(MAX_SYMBOL_LEN + 1)];
    let end = memchr::memchr(0, rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parser_panic_is_an_error_naming_the_file() {
        let path = Path::new("/wheels/pkg/.dylibs/libbroken.dylib");
        let r: Result<(), _> = contain_panics(BinaryFormat::MachO, Some(path), || {
            panic!("index 9 out of range for slice of length 4")
        });
        let e = r.expect_err("the panic is an error");
        assert!(
            matches!(&e, BinaryError::ParserPanic { format: BinaryFormat::MachO, path: Some(p), message }
                if p == path && message.contains("index 9 out of range")),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.starts_with(
                "the Mach-O parser panicked reading /wheels/pkg/.dylibs/libbroken.dylib: index 9"
            ),
            "{text}"
        );
        // In memory, it says so; the flag is down again afterwards.
        let r: Result<(), _> = contain_panics(BinaryFormat::Pe, None, || panic!("boom"));
        assert!(r
            .expect_err("an error")
            .to_string()
            .contains("reading bytes in memory: boom"));
        assert!(!CONTAINING.with(Cell::get));
        // A parse that does not panic is passed through.
        assert_eq!(
            contain_panics(BinaryFormat::Elf, Some(path), || Ok::<_, BinaryError>(7)),
            Ok(7)
        );
        assert_eq!(
            contain_panics(BinaryFormat::Elf, Some(path), || Err::<(), _>(
                BinaryError::Empty
            )),
            Err(BinaryError::Empty)
        );
    }

    thread_local! {
        /// What [`claim_parser_panic`] answered for this thread's last panic.
        static CLAIMED: Cell<Option<bool>> = const { Cell::new(None) };
    }

    /// A program's hook built on [`claim_parser_panic`] stays quiet about
    /// contained panics only, and the error gets the panic's location.
    #[test]
    fn the_hook_claims_only_contained_panics() {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let claimed = claim_parser_panic(info);
                CLAIMED.with(|c| c.set(Some(claimed)));
                if !claimed {
                    default(info);
                }
            }));
        });
        let path = Path::new("/lib/libbad.so");
        let r: Result<(), _> =
            contain_panics(BinaryFormat::Elf, Some(path), || panic!("bad offset"));
        assert_eq!(CLAIMED.with(Cell::get), Some(true));
        let text = r.expect_err("an error").to_string();
        assert!(
            text.contains("/lib/libbad.so: bad offset (at ") && text.contains("binary/mod.rs:"),
            "{text}"
        );
        // Outside the parser: not claimed, reported by the default hook.
        let outside = std::panic::catch_unwind(|| panic!("not the parser's"));
        assert!(outside.is_err());
        assert_eq!(CLAIMED.with(Cell::get), Some(false));
    }

    #[test]
    fn sniffs_formats() {
        assert_eq!(sniff_format(b"\x7fELF\x02"), Some(BinaryFormat::Elf));
        assert_eq!(sniff_format(b"MZ\x90\x00"), Some(BinaryFormat::Pe));
        assert_eq!(
            sniff_format(&[0xcf, 0xfa, 0xed, 0xfe]),
            Some(BinaryFormat::MachO)
        );
        assert_eq!(
            sniff_format(&[0xca, 0xfe, 0xba, 0xbe]),
            Some(BinaryFormat::MachO)
        );
        assert_eq!(sniff_format(b"#!/bin/sh"), None);
        assert_eq!(sniff_format(b"\x7fEL"), None);
    }

    #[test]
    fn reads_this_test_binary() {
        let exe = std::env::current_exe().expect("current exe");
        let info = read_binary(&exe).expect("parse own executable");
        assert_eq!(info.format, Some(BinaryFormat::current_host()));
        assert!(!info.architectures.is_empty());
    }

    #[test]
    fn truncated_and_garbage_inputs_are_errors_not_panics() {
        let exe = std::env::current_exe().expect("current exe");
        let bytes = std::fs::read(exe).expect("read");
        for len in [0, 3, 4, 16, 52, 64, 200, 1000, 4096] {
            let _ = parse_binary(&bytes[..len.min(bytes.len())]);
        }
        let mut flipped = bytes[..bytes.len().min(65536)].to_vec();
        for i in (0..flipped.len()).step_by(97) {
            flipped[i] ^= 0xa5;
        }
        let _ = parse_binary(&flipped);
        assert_eq!(parse_binary(b"hello world"), Err(BinaryError::NotBinary));
        assert!(parse_binary(b"MZ").is_err());
    }

    #[test]
    fn rebuilds_config_from_movabs_immediates() {
        // As MSVC emits it in numpy's Windows OpenBLAS: movabs rax/rdx with
        // stores in between.
        let mut code = vec![0x90, 0x48, 0xb8];
        code.extend_from_slice(b"OpenBLAS");
        code.extend_from_slice(&[0x48, 0xba]);
        code.extend_from_slice(b" 0.3.31.");
        code.extend_from_slice(&[
            0x48, 0x83, 0xec, 0x40, 0x48, 0x89, 0x05, 0x8f, 0xb0, 0x0d, 0x01, 0x48, 0xb8,
        ]);
        code.extend_from_slice(b"188.0  U");
        code.extend_from_slice(&[0xc3; 40]);
        assert_eq!(
            config_from_immediates(&code).as_deref(),
            Some("OpenBLAS 0.3.31.188.0  U")
        );
        assert_eq!(
            config_from_immediates(b"xxOpenBLAS 0.3"),
            None,
            "not after a movabs"
        );
    }

    #[test]
    fn identification_sections_are_bounded_and_printable() {
        let data = b"GCC: (GNU) 10.2.1\0\0\x01\x02bad\0GCC: (GNU) 10.2.1\0Intel Corporation\0";
        assert_eq!(
            nul_separated_strings(data),
            ["GCC: (GNU) 10.2.1", "Intel Corporation"]
        );
        let long = vec![b'a'; MAX_MARKER_LEN + 1];
        assert!(nul_separated_strings(&long).is_empty());
        let many: Vec<u8> = (0..100u8)
            .flat_map(|i| format!("s{i}\0").into_bytes())
            .collect();
        assert_eq!(nul_separated_strings(&many).len(), MAX_ID_STRINGS);
        let notes =
            b"\x08\0\0\0GA$\x05running gcc 8.5.0 20210514\0GA$\x05running gcc 8.5.0 20210514\0";
        assert_eq!(compiler_notes(notes), ["running gcc 8.5.0 20210514"]);
        assert_eq!(section_bytes(b"abc", 2, 5), None);
        assert_eq!(section_bytes(b"abc", u64::MAX, 2), None);
    }

    #[test]
    fn fixed_file_version_needs_signature_and_structure_version() {
        let mut rsrc = vec![0u8; 8];
        rsrc.extend_from_slice(&0xFEEF_04BDu32.to_le_bytes());
        rsrc.extend_from_slice(&0x0001_0000u32.to_le_bytes());
        rsrc.extend_from_slice(&((14u32 << 16) | 51).to_le_bytes());
        rsrc.extend_from_slice(&(36247u32 << 16).to_le_bytes());
        assert_eq!(fixed_file_version(&rsrc).as_deref(), Some("14.51.36247.0"));
        // Truncated after the signature, or a wrong structure version.
        assert_eq!(fixed_file_version(&rsrc[..16]), None);
        let mut wrong = rsrc.clone();
        wrong[12] = 7;
        assert_eq!(fixed_file_version(&wrong), None);
    }

    #[test]
    fn export_trie_walk_survives_cycles() {
        // Root: no terminal info, one child "_f" at offset 6.
        // Node 6: terminal (size 1, flags 0), one child "oo" back to root.
        let trie = [0u8, 1, b'_', b'f', 0, 6, 1, 0, 1, b'o', b'o', 0, 0];
        let names = export_trie_names(&trie);
        assert_eq!(names, ["_f"], "the cycle back to the root is not followed");
        assert!(export_trie_names(&[0x80, 0x80]).is_empty());
        assert!(export_trie_names(&[]).is_empty());
    }

    #[test]
    fn extracts_marker_text_up_to_nul() {
        let hay = b"xxOpenBLAS 0.3.30 DYNAMIC_ARCH NO_AFFINITY \0yy";
        let pos = memmem::find(hay, b"OpenBLAS ").expect("needle");
        assert_eq!(
            extract_string(hay, pos, false).as_deref(),
            Some("OpenBLAS 0.3.30 DYNAMIC_ARCH NO_AFFINITY")
        );
        let hay = b"  Parallel framework:            pthreads\n  Trace: YES\n";
        let pos = memmem::find(hay, b"Parallel framework:").expect("needle");
        assert_eq!(
            extract_string(hay, pos, true).as_deref(),
            Some("Parallel framework:            pthreads")
        );
    }
}
