//! Reading one binary (ELF, Mach-O including fat, PE) into the facts the
//! loader emulation and the fingerprints need. Nothing is loaded or run.
//!
//! Files are memory-mapped, so a large or sparse file costs only the pages
//! actually read. Parsing is defensive: any malformed input becomes a
//! [`BinaryError`], never a panic; a panic inside the parser (a bug) is
//! contained and becomes [`BinaryError::ParserPanic`], naming the file.

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

/// Read what the loader and the fingerprints need from an ELF file: the
/// dynamic section, the dynamic symbols, version needs and the read-only
/// data ranges. The static symbol table, relocations and debug sections are
/// never touched, so a large unstripped library costs no more than a
/// stripped one. Tables that would extend past the end of the file are
/// refused: a real library never has one.
fn parse_elf(bytes: &[u8]) -> Result<(BinaryInfo, Ranges), BinaryError> {
    use goblin::elf::dynamic::{Dynamic, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME};
    use goblin::elf::program_header::ProgramHeader;
    use goblin::elf::section_header::{SectionHeader, SHT_DYNSYM, SHT_STRTAB, SHT_SYMTAB};
    use goblin::elf::sym::{Symtab, STB_GLOBAL, STB_WEAK, STV_HIDDEN};

    let header = Elf::parse_header(bytes).map_err(|e| malformed(BinaryFormat::Elf, e))?;
    let container = header
        .container()
        .map_err(|e| malformed(BinaryFormat::Elf, e))?;
    let endian = header
        .endianness()
        .map_err(|e| malformed(BinaryFormat::Elf, e))?;
    let ctx = goblin::container::Ctx::new(container, endian);
    let len = bytes.len() as u64;
    let past_end = |offset: u64, size: u64| offset.checked_add(size).is_none_or(|end| end > len);

    let phdrs = ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx)
        .map_err(|e| malformed(BinaryFormat::Elf, e))?;
    // Section headers are optional for the loader; a broken table only
    // costs the read-only-data ranges and the version tables.
    let shdrs = SectionHeader::parse(bytes, header.e_shoff as usize, header.e_shnum as usize, ctx)
        .unwrap_or_default();
    for sh in &shdrs {
        if matches!(sh.sh_type, SHT_STRTAB | SHT_SYMTAB | SHT_DYNSYM)
            && past_end(sh.sh_offset, sh.sh_size)
        {
            return Err(malformed(
                BinaryFormat::Elf,
                format!(
                    "section table of {} bytes at {:#x} runs past the end of the file",
                    sh.sh_size, sh.sh_offset
                ),
            ));
        }
    }

    let mut info = BinaryInfo {
        architectures: vec![elf_machine_name(header.e_machine)],
        ..BinaryInfo::default()
    };
    let dynamic =
        Dynamic::parse(bytes, &phdrs, ctx).map_err(|e| malformed(BinaryFormat::Elf, e))?;
    let mut dynstr: &[u8] = &[];
    if let Some(dynamic) = &dynamic {
        let (strtab, strsz) = (dynamic.info.strtab as u64, dynamic.info.strsz as u64);
        if past_end(strtab, strsz) {
            return Err(malformed(
                BinaryFormat::Elf,
                format!("dynamic string table ({strsz} bytes at {strtab:#x}) runs past the end of the file"),
            ));
        }
        dynstr = &bytes[strtab as usize..(strtab + strsz) as usize];
        for d in &dynamic.dyns {
            let Some(value) = usize::try_from(d.d_val)
                .ok()
                .and_then(|v| cstr_at(dynstr, v))
            else {
                continue;
            };
            match d.d_tag {
                DT_NEEDED => info.needed.push(value.to_owned()),
                DT_SONAME => info.soname = Some(value.to_owned()),
                DT_RPATH => info.rpath.extend(split_paths(&[value])),
                DT_RUNPATH => info.runpath.extend(split_paths(&[value])),
                _ => {}
            }
        }
    }

    // The dynamic symbols, counted from their section. Without section
    // headers (rare), fall back to goblin's full parse, which counts them
    // from the hash tables.
    let dynsym_section = shdrs
        .iter()
        .find(|sh| sh.sh_type == SHT_DYNSYM && sh.sh_entsize > 0);
    let symtab = match dynsym_section {
        Some(sh) => {
            let count = (sh.sh_size / sh.sh_entsize) as usize;
            Symtab::parse(bytes, sh.sh_offset as usize, count.min(MAX_SYMBOLS), ctx)
                .map_err(|e| malformed(BinaryFormat::Elf, e))?
        }
        None if dynamic.is_some() => {
            let opts = goblin::options::ParseOptions::permissive();
            let elf =
                Elf::parse_with_opts(bytes, &opts).map_err(|e| malformed(BinaryFormat::Elf, e))?;
            elf.dynsyms
        }
        None => Symtab::default(),
    };
    for sym in symtab.iter().take(MAX_SYMBOLS) {
        if sym.st_name == 0 {
            continue;
        }
        let Some(name) = cstr_at(dynstr, sym.st_name) else {
            continue;
        };
        if !plausible_symbol(name) {
            continue;
        }
        let bind = sym.st_bind();
        let visible = bind == STB_GLOBAL || bind == STB_WEAK;
        if sym.st_shndx == goblin::elf::section_header::SHN_UNDEF as usize {
            info.imports.push(name.to_owned());
        } else if visible && sym.st_visibility() != STV_HIDDEN {
            info.exports.push(name.to_owned());
        }
    }

    if let Ok(Some(verneed)) = goblin::elf::symver::VerneedSection::parse(bytes, &shdrs, ctx) {
        for need in verneed.iter().take(4096) {
            let file = cstr_at(dynstr, need.vn_file).unwrap_or("").to_owned();
            let versions = need
                .iter()
                .take(4096)
                .filter_map(|aux| cstr_at(dynstr, aux.vna_name).map(str::to_owned))
                .collect();
            info.version_needs.push((file, versions));
        }
    }
    if let Ok(Some(verdef)) = goblin::elf::symver::VerdefSection::parse(bytes, &shdrs, ctx) {
        for def in verdef.iter().take(4096) {
            for aux in def.iter().take(4096) {
                if let Some(name) = cstr_at(dynstr, aux.vda_name) {
                    info.version_defs.push(name.to_owned());
                }
            }
        }
    }

    let mut rodata = Vec::new();
    let shstrtab = shdrs
        .get(header.e_shstrndx as usize)
        .and_then(|sh| {
            let start = usize::try_from(sh.sh_offset).ok()?;
            bytes.get(start..start.checked_add(usize::try_from(sh.sh_size).ok()?)?)
        })
        .unwrap_or(&[]);
    for sh in &shdrs {
        let name = cstr_at(shstrtab, sh.sh_name).unwrap_or("");
        if name.starts_with(".rodata") || name == ".comment" {
            push_range(&mut rodata, sh.sh_offset, sh.sh_size, bytes.len());
        }
        let section = || section_bytes(bytes, sh.sh_offset, sh.sh_size);
        match name {
            ".comment" => {
                if let Some(data) = section() {
                    info.comment = nul_separated_strings(&data[..data.len().min(MAX_ID_SECTION)]);
                }
            }
            ".gnu.build.attributes" => {
                if let Some(data) = section() {
                    info.build_notes =
                        compiler_notes(&data[..data.len().min(MAX_BUILD_NOTES_SECTION)]);
                }
            }
            ".gnu_debuglink" => {
                info.debuglink = section().and_then(|data| {
                    nul_separated_strings(&data[..data.len().min(MAX_ID_SECTION)])
                        .into_iter()
                        .next()
                });
            }
            _ => {}
        }
    }
    Ok((info, rodata))
}

/// The bytes of a section, or `None` when its range is not in the file.
fn section_bytes(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    bytes.get(start..end).filter(|d| !d.is_empty())
}

/// The printable NUL-terminated strings of a section such as `.comment`,
/// each at most [`MAX_MARKER_LEN`] bytes, at most [`MAX_ID_STRINGS`] of
/// them, without repeats.
fn nul_separated_strings(data: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in data.split(|b| *b == 0) {
        if out.len() >= MAX_ID_STRINGS {
            break;
        }
        if piece.is_empty()
            || piece.len() > MAX_MARKER_LEN
            || !piece
                .iter()
                .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        {
            continue;
        }
        let text = String::from_utf8_lossy(piece).trim().to_owned();
        if !text.is_empty() && !out.contains(&text) {
            out.push(text);
        }
    }
    out
}

/// annobin's notes that name the compiler that ran (`running gcc 8.5.0
/// 20210514`), without repeats.
fn compiler_notes(data: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for pos in memmem::find_iter(data, b"running gcc ") {
        if let Some(text) = extract_string(data, pos, false) {
            if !out.contains(&text) {
                out.push(text);
            }
        }
        if out.len() >= MAX_ID_STRINGS {
            break;
        }
    }
    out
}

fn push_range(ranges: &mut Ranges, offset: u64, size: u64, len: usize) {
    let (Ok(start), Ok(size)) = (usize::try_from(offset), usize::try_from(size)) else {
        return;
    };
    if let Some(end) = start.checked_add(size) {
        if start < end && end <= len {
            ranges.push((start, end));
        }
    }
}

/// `DT_RPATH`/`DT_RUNPATH` values are colon-separated lists.
fn split_paths(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(':'))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn elf_machine_name(machine: u16) -> String {
    use goblin::elf::header::*;
    match machine {
        EM_X86_64 => "x86_64".into(),
        EM_386 => "x86".into(),
        EM_AARCH64 => "aarch64".into(),
        EM_ARM => "arm".into(),
        EM_PPC64 => "powerpc64".into(),
        EM_PPC => "powerpc".into(),
        EM_S390 => "s390x".into(),
        EM_RISCV => "riscv64".into(),
        other => format!("elf-machine-{other}"),
    }
}

fn parse_mach(bytes: &[u8]) -> Result<(BinaryInfo, Ranges), BinaryError> {
    let mach = Mach::parse_lossy(bytes).map_err(|e| malformed(BinaryFormat::MachO, e))?;
    match mach {
        Mach::Binary(macho) => Ok(macho_info(&macho, bytes, 0)),
        Mach::Fat(multi) => {
            let mut merged: Option<(BinaryInfo, Ranges)> = None;
            // A real fat file has a handful of slices; a corrupt count can
            // claim billions.
            if multi.narches > MAX_FAT_SLICES {
                return Err(malformed(
                    BinaryFormat::MachO,
                    format!("fat header claims {} architectures", multi.narches),
                ));
            }
            let arches: Vec<_> = multi
                .iter_arches()
                .filter_map(Result::ok)
                .collect::<Vec<_>>();
            if arches.is_empty() {
                return Err(malformed(
                    BinaryFormat::MachO,
                    "fat binary with no architectures",
                ));
            }
            for (index, arch) in arches.iter().enumerate() {
                let single = match multi.get(index) {
                    Ok(SingleArch::MachO(m)) => m,
                    Ok(SingleArch::Archive(_)) => continue,
                    Err(_) => continue,
                };
                let offset = arch.offset as usize;
                let (info, ranges) = macho_info(&single, bytes, offset);
                match &mut merged {
                    None => merged = Some((info, ranges)),
                    Some((m, r)) => {
                        merge_unique(&mut m.architectures, info.architectures);
                        merge_unique(&mut m.needed, info.needed);
                        merge_unique(&mut m.rpath, info.rpath);
                        merge_unique(&mut m.imports, info.imports);
                        if m.exports.is_empty() {
                            m.exports = info.exports;
                        }
                        r.extend(ranges);
                    }
                }
            }
            merged.ok_or_else(|| malformed(BinaryFormat::MachO, "no readable slice in fat binary"))
        }
    }
}

fn merge_unique(into: &mut Vec<String>, from: Vec<String>) {
    for item in from {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

fn macho_info(macho: &MachO<'_>, bytes: &[u8], slice_offset: usize) -> (BinaryInfo, Ranges) {
    let arch = goblin::mach::constants::cputype::get_arch_name_from_types(
        macho.header.cputype(),
        macho.header.cpusubtype(),
    )
    .map(|a| match a {
        "arm64" => "aarch64".to_owned(),
        "x86_64" => "x86_64".to_owned(),
        other => other.to_owned(),
    })
    .unwrap_or_else(|| format!("cputype-{}", macho.header.cputype()));
    let mut info = BinaryInfo {
        architectures: vec![arch],
        soname: macho.name.map(str::to_owned),
        // goblin puts the binary itself first in `libs` ("self", or its
        // LC_ID_DYLIB install name).
        needed: macho.libs.iter().skip(1).map(|s| s.to_string()).collect(),
        rpath: macho.rpaths.iter().map(|s| s.to_string()).collect(),
        ..BinaryInfo::default()
    };
    let mut exports = BTreeSet::new();
    let mut imports = BTreeSet::new();
    if let Some(symbols) = &macho.symbols {
        // An nlist entry is at least 12 bytes: a larger count is corrupt.
        let plausible_count = (bytes.len() / 12).min(MAX_SYMBOLS);
        for (name, nlist) in symbols.iter().take(plausible_count).flatten() {
            let name = name.strip_prefix('_').unwrap_or(name);
            if !plausible_symbol(name) {
                continue;
            }
            if exports.len() + imports.len() >= MAX_SYMBOLS {
                break;
            }
            if nlist.is_undefined() {
                if nlist.is_global() {
                    imports.insert(name.to_owned());
                }
            } else if nlist.is_global() && nlist.get_type() == goblin::mach::symbols::N_SECT {
                exports.insert(name.to_owned());
            }
        }
    }
    // goblin's own trie walker recurses without a cycle check (a corrupt
    // trie overflows the stack, which no panic handler can catch): walk it
    // here, iteratively and bounded.
    for cmd in &macho.load_commands {
        use goblin::mach::load_command::CommandVariant;
        let (off, size) = match &cmd.command {
            CommandVariant::DyldInfo(c) | CommandVariant::DyldInfoOnly(c) => {
                (c.export_off, c.export_size)
            }
            CommandVariant::DyldExportsTrie(c) => (c.dataoff, c.datasize),
            _ => continue,
        };
        let start = slice_offset.saturating_add(off as usize);
        let Some(trie) = start
            .checked_add(size as usize)
            .and_then(|end| bytes.get(start..end))
        else {
            continue;
        };
        for name in export_trie_names(trie) {
            let name = name.strip_prefix('_').unwrap_or(&name);
            exports.insert(name.to_owned());
        }
    }
    // Imports come from the symbol table's undefined entries above; the
    // bind-opcode interpreter (`macho.imports()`) is not used: on corrupt
    // opcodes it can run for a very long time.
    info.exports = exports.into_iter().collect();
    info.imports = imports.into_iter().collect();
    let mut ranges = Vec::new();
    for segment in macho.segments.iter() {
        if let Ok(sections) = segment.sections() {
            for (section, _) in sections {
                let name = section.name().unwrap_or("");
                if matches!(name, "__cstring" | "__const") {
                    push_range(
                        &mut ranges,
                        slice_offset as u64 + u64::from(section.offset),
                        section.size,
                        bytes.len(),
                    );
                }
            }
        }
    }
    (info, ranges)
}

/// Unsigned LEB128 at `*pos`, advancing it; `None` when malformed.
fn read_uleb(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *data.get(*pos)?;
        *pos += 1;
        if shift >= 64 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
    }
}

/// The symbol names in a Mach-O export trie. Iterative, visits each node at
/// most once (a cycle ends the walk), and bounded in names and name length.
fn export_trie_names(trie: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut visited = std::collections::HashSet::new();
    let mut stack: Vec<(usize, Vec<u8>)> = vec![(0, Vec::new())];
    while let Some((node, prefix)) = stack.pop() {
        if !visited.insert(node) || names.len() >= MAX_SYMBOLS {
            continue;
        }
        let mut pos = node;
        let Some(terminal_size) = read_uleb(trie, &mut pos) else {
            continue;
        };
        if terminal_size > 0 {
            if let Ok(name) = std::str::from_utf8(&prefix) {
                if plausible_symbol(name) {
                    names.push(name.to_owned());
                }
            }
        }
        let Some(children_at) = usize::try_from(terminal_size)
            .ok()
            .and_then(|t| pos.checked_add(t))
        else {
            continue;
        };
        let Some(&count) = trie.get(children_at) else {
            continue;
        };
        let mut pos = children_at + 1;
        for _ in 0..count {
            let Some(rest) = trie.get(pos..) else { break };
            let Some(len) = memchr::memchr(0, rest) else {
                break;
            };
            let label = &rest[..len];
            pos += len + 1;
            let Some(child) = read_uleb(trie, &mut pos) else {
                break;
            };
            let Ok(child) = usize::try_from(child) else {
                break;
            };
            if prefix.len() + label.len() > MAX_SYMBOL_LEN || child >= trie.len() {
                continue;
            }
            let mut name = prefix.clone();
            name.extend_from_slice(label);
            stack.push((child, name));
        }
    }
    names
}

fn parse_pe(bytes: &[u8]) -> Result<(BinaryInfo, Ranges), BinaryError> {
    let mut opts = goblin::pe::options::ParseOptions::default()
        .with_parse_mode(goblin::options::ParseMode::Permissive);
    opts.parse_attribute_certificates = false;
    opts.parse_resources = false;
    opts.parse_tls_data = false;
    let pe = PE::parse_with_opts(bytes, &opts).map_err(|e| malformed(BinaryFormat::Pe, e))?;
    let arch = match pe.header.coff_header.machine {
        goblin::pe::header::COFF_MACHINE_X86_64 => "x86_64".to_owned(),
        goblin::pe::header::COFF_MACHINE_X86 => "x86".to_owned(),
        goblin::pe::header::COFF_MACHINE_ARM64 => "aarch64".to_owned(),
        other => format!("pe-machine-{other:#x}"),
    };
    let mut info = BinaryInfo {
        architectures: vec![arch],
        soname: pe
            .export_data
            .as_ref()
            .and_then(|e| e.name)
            .or(pe.name)
            .map(str::to_owned),
        ..BinaryInfo::default()
    };
    for lib in &pe.libraries {
        if !info.needed.iter().any(|n| n.eq_ignore_ascii_case(lib)) {
            info.needed.push(lib.to_string());
        }
    }
    info.exports = pe
        .exports
        .iter()
        .filter_map(|e| e.name.filter(|n| plausible_symbol(n)).map(str::to_owned))
        .take(MAX_SYMBOLS)
        .collect();
    info.imports = pe
        .imports
        .iter()
        .filter(|i| plausible_symbol(&i.name))
        .take(MAX_SYMBOLS)
        .map(|i| i.name.to_string())
        .collect();
    let mut ranges = Vec::new();
    for section in &pe.sections {
        let name = section.name().unwrap_or("");
        if name == ".rdata" || name == ".data" {
            push_range(
                &mut ranges,
                u64::from(section.pointer_to_raw_data),
                u64::from(section.size_of_raw_data),
                bytes.len(),
            );
        }
        if name == ".rsrc" && info.file_version.is_none() {
            info.file_version = section_bytes(
                bytes,
                u64::from(section.pointer_to_raw_data),
                u64::from(section.size_of_raw_data),
            )
            .and_then(|data| fixed_file_version(&data[..data.len().min(MAX_RSRC_SEARCH)]));
        }
    }
    Ok((info, ranges))
}

/// The file version of a `VS_FIXEDFILEINFO` structure in a PE resource
/// section: its signature `0xFEEF04BD` and structure version 1.0, then the
/// file version as two 32-bit halves (major.minor, build.revision).
fn fixed_file_version(rsrc: &[u8]) -> Option<String> {
    const SIGNATURE: [u8; 4] = 0xFEEF_04BDu32.to_le_bytes();
    const STRUC_VERSION: [u8; 4] = 0x0001_0000u32.to_le_bytes();
    let word = |at: usize| -> Option<u32> {
        let b: [u8; 4] = rsrc.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    };
    for pos in memmem::find_iter(rsrc, &SIGNATURE) {
        if rsrc.get(pos + 4..pos + 8) != Some(&STRUC_VERSION[..]) {
            continue;
        }
        let (ms, ls) = (word(pos + 8)?, word(pos + 12)?);
        return Some(format!(
            "{}.{}.{}.{}",
            ms >> 16,
            ms & 0xffff,
            ls >> 16,
            ls & 0xffff
        ));
    }
    None
}

/// Search the read-only data for the needles that apply to this binary.
fn find_markers(bytes: &[u8], rodata: &Ranges, file_name: &str, exports: &[String]) -> Vec<String> {
    // Which export fragments occur: one pass over the exports with a
    // SIMD finder per fragment (libraries export tens of thousands).
    let finders: Vec<memmem::Finder<'_>> = NEEDLES
        .iter()
        .map(|n| memmem::Finder::new(n.export_contains.as_bytes()))
        .collect();
    let mut hit = vec![false; NEEDLES.len()];
    for export in exports {
        for (i, finder) in finders.iter().enumerate() {
            if !hit[i]
                && export.len() >= NEEDLES[i].export_contains.len()
                && finder.find(export.as_bytes()).is_some()
            {
                hit[i] = true;
            }
        }
    }
    let wanted: Vec<&Needle> = NEEDLES
        .iter()
        .zip(&hit)
        .filter(|(n, hit)| **hit || file_name.starts_with(n.file_prefix))
        .map(|(n, _)| n)
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let want_openblas_config = wanted.iter().any(|n| n.text == b"OpenBLAS ");
    let whole = [(0usize, bytes.len())];
    let ranges: &[(usize, usize)] = if rodata.is_empty() { &whole } else { rodata };
    let mut found = Vec::new();
    for needle in wanted {
        let finder = memmem::Finder::new(needle.text);
        'ranges: for &(start, end) in ranges {
            let Some(hay) = bytes.get(start..end) else {
                continue;
            };
            for pos in finder.find_iter(hay) {
                if needle.then_digit
                    && !hay
                        .get(pos + needle.text.len())
                        .is_some_and(u8::is_ascii_digit)
                {
                    continue;
                }
                if let Some(text) = extract_string(hay, pos, needle.to_line_end) {
                    if !found.contains(&text) {
                        found.push(text);
                    }
                    if found.len() >= 16 {
                        break 'ranges;
                    }
                }
            }
        }
    }
    if want_openblas_config
        && !found.iter().any(|s| {
            s.starts_with("OpenBLAS ") && s.as_bytes().get(9).is_some_and(u8::is_ascii_digit)
        })
    {
        if let Some(config) = config_from_immediates(bytes) {
            found.push(format!("{IMMEDIATES_PREFIX}{config}"));
        }
    }
    found
}

/// Marker strings rebuilt from instruction immediates start with this.
pub(crate) const IMMEDIATES_PREFIX: &str = "immediates: ";

/// Some compilers (MSVC, clang on Windows) build the OpenBLAS config string
/// on the stack from 8-byte `movabs` immediates instead of keeping it as
/// one string. Find `movabs reg, "OpenBLAS"` and chain the printable
/// immediates that follow within a short window.
fn config_from_immediates(bytes: &[u8]) -> Option<String> {
    let is_movabs = |at: usize| -> bool {
        at >= 2
            && matches!(bytes.get(at - 2), Some(0x48 | 0x49))
            && bytes.get(at - 1).is_some_and(|b| (0xb8..=0xbf).contains(b))
    };
    let printable = |chunk: &[u8]| chunk.iter().all(|b| (0x20..0x7f).contains(b));
    for pos in memmem::find_iter(bytes, b"OpenBLAS") {
        if !is_movabs(pos) {
            continue;
        }
        let mut text = String::from("OpenBLAS");
        let mut cursor = pos + 8;
        'chunks: while text.len() < MAX_MARKER_LEN {
            // The next movabs with a printable immediate, within 32 bytes.
            for imm in cursor + 2..cursor + 34 {
                let Some(chunk) = bytes.get(imm..imm + 8) else {
                    break 'chunks;
                };
                if is_movabs(imm) && printable(chunk) {
                    text.push_str(&String::from_utf8_lossy(chunk));
                    cursor = imm + 8;
                    continue 'chunks;
                }
            }
            break;
        }
        if text.len() > 9 && text.as_bytes().get(9).is_some_and(u8::is_ascii_digit) {
            return Some(text.trim_end().to_owned());
        }
    }
    None
}

/// The printable text starting at `pos`, up to a NUL (or newline).
fn extract_string(hay: &[u8], pos: usize, to_line_end: bool) -> Option<String> {
    let rest = hay.get(pos..)?;
    let mut end = 0;
    while end < rest.len() && end < MAX_MARKER_LEN {
        let b = rest[end];
        if b == 0 || (to_line_end && b == b'\n') {
            break;
        }
        if !(b == b'\t' || (0x20..0x7f).contains(&b)) {
            break;
        }
        end += 1;
    }
    let text = String::from_utf8_lossy(&rest[..end]).trim_end().to_owned();
    (!text.is_empty()).then_some(text)
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
            text.contains("/lib/libbad.so: bad offset (at ") && text.contains("binary.rs:"),
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
