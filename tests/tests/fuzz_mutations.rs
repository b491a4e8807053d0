//! Bounded, deterministic mutation test of the binary reader: real binaries
//! (ELF OpenBLAS and libgomp from the PyPI venv, MSVC's `vcomp140.dll`, a
//! macOS `libomp.dylib`, the fat MarkupSafe module, this test executable),
//! damaged in ways a fuzzer would try (truncations, byte flips in the
//! headers, load commands and tables the parser walks, header fields
//! overwritten with 0, `0xffffffff` and huge values), must come back from
//! `parse_binary` + `fingerprint` (and `read_binary` for a few written to
//! disk) without panicking, without crashing and within [`BOUND`] each.
//!
//! Every mutation is described by a recipe (`truncate to N bytes`, `write
//! u32 LE 0xffffffff at 0x30 (ELF e_shoff)`, ...) that rebuilds it from the
//! fixture file alone. The random choices come from a xorshift generator
//! seeded from the fixture's name, so each run tries the same inputs (for
//! this test executable itself, the inputs follow its build).
//!
//! Each test runs its inputs in a child process (this executable again,
//! with `<test> --exact`), under a 4 GiB address-space limit: a stack
//! overflow or an allocation of many gigabytes, which no `catch_unwind`
//! can contain, is reported with the recipe that caused it, and an input
//! still running after [`BOUND`] of CPU time is killed and reported; the
//! sweep then goes on in a new child.
//!
//! This complements `fuzz/` (cargo-fuzz, run by hand; see
//! `fuzz/README.md`): a short, fixed sweep that runs in every `cargo test`.
//! Inputs the fuzzer found crashing are kept in `fuzz/regressions/` and
//! replayed here. The `finding_*` tests are the problems found so far, each
//! as one exact input.
//!
//! `CAICLUST_MUTATION_VERBOSE=1` prints every recipe as it starts;
//! `CAICLUST_MUTATION_BOUND_MS` changes the time bound (to see how slow a
//! slow input really is).

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use caiclust_probe::{fingerprint, parse_binary, read_binary, BinaryError};
use caiclust_tests::{fixtures, wheel, workspace_root, SETUP_HINT};

/// Most CPU time any single input may take (parse + fingerprints), in a
/// debug build. The unmutated fixtures take a few tens of milliseconds.
const BOUND: Duration = Duration::from_secs(2);

/// File names given to `fingerprint`: they switch on different rules.
const NAMES: &[&str] = &["libopenblas.so.0", "cv2.abi3.so", "vcomp140.dll"];

// ---------------------------------------------------------------------------
// Deterministic randomness.

/// xorshift64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn seeded(label: &str) -> Self {
        // FNV-1a of the label, so every fixture has its own fixed stream.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A byte that is not zero (an XOR mask that changes something).
    fn mask(&mut self) -> u8 {
        (self.next() % 255) as u8 + 1
    }

    /// Keep at most `cap` items, chosen at random, in their original order.
    fn sample<T>(&mut self, items: Vec<T>, cap: usize) -> Vec<T> {
        if items.len() <= cap {
            return items;
        }
        let mut idx: Vec<usize> = (0..items.len()).collect();
        for i in 0..cap {
            let j = i + self.below(idx.len() - i);
            idx.swap(i, j);
        }
        let mut keep = idx[..cap].to_vec();
        keep.sort_unstable();
        let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
        keep.into_iter().filter_map(|i| slots[i].take()).collect()
    }
}

// ---------------------------------------------------------------------------
// Reading the structure of the (unmutated) fixture, by hand: just enough to
// know where the header fields, tables and load commands are.

fn rd(b: &[u8], at: usize, width: usize, big_endian: bool) -> Option<u64> {
    let s = b.get(at..at.checked_add(width)?)?;
    let mut v = 0u64;
    for i in 0..width {
        let byte = if big_endian { s[i] } else { s[width - 1 - i] };
        v = (v << 8) | u64::from(byte);
    }
    Some(v)
}

fn rd16(b: &[u8], at: usize) -> Option<usize> {
    rd(b, at, 2, false).map(|v| v as usize)
}

fn rd32(b: &[u8], at: usize) -> Option<usize> {
    rd(b, at, 4, false).and_then(|v| usize::try_from(v).ok())
}

fn rd64(b: &[u8], at: usize) -> Option<usize> {
    rd(b, at, 8, false).and_then(|v| usize::try_from(v).ok())
}

/// A header field worth overwriting.
#[derive(Clone)]
struct Field {
    at: usize,
    width: usize,
    big_endian: bool,
    name: String,
}

/// Where the parser looks, in one fixture.
#[derive(Default)]
struct Layout {
    fields: Vec<Field>,
    /// (start, length, name) of tables and commands to flip bytes in.
    regions: Vec<(usize, usize, String)>,
    /// End of the headers (ELF program headers, Mach-O load commands, PE
    /// section table): every truncation point below it is interesting.
    header_end: usize,
}

impl Layout {
    fn field(&mut self, at: usize, width: usize, name: impl Into<String>) {
        self.fields.push(Field {
            at,
            width,
            big_endian: false,
            name: name.into(),
        });
    }

    fn field_be(&mut self, at: usize, width: usize, name: impl Into<String>) {
        self.fields.push(Field {
            at,
            width,
            big_endian: true,
            name: name.into(),
        });
    }

    fn region(&mut self, start: usize, len: usize, name: impl Into<String>, file_len: usize) {
        let start = start.min(file_len);
        let len = len.min(file_len - start);
        if len > 0 {
            self.regions.push((start, len, name.into()));
        }
    }
}

fn layout(b: &[u8]) -> Layout {
    match b.get(..4) {
        Some([0x7f, b'E', b'L', b'F']) if b.get(4) == Some(&2) && b.get(5) == Some(&1) => {
            elf64_layout(b)
        }
        Some([0xcf, 0xfa, 0xed, 0xfe]) => {
            let mut l = Layout::default();
            macho64_layout(b, 0, "", &mut l);
            l
        }
        Some([0xca, 0xfe, 0xba, 0xbe]) => fat_layout(b),
        Some([b'M', b'Z', _, _]) => pe_layout(b),
        _ => Layout {
            header_end: 64.min(b.len()),
            ..Layout::default()
        },
    }
}

/// ELF64 little-endian: header, program headers, the section headers the
/// reader uses, the dynamic section, the GNU hash and symbol-version tables.
fn elf64_layout(b: &[u8]) -> Layout {
    let n = b.len();
    let mut l = Layout::default();
    for (at, w, name) in [
        (16, 2, "e_type"),
        (18, 2, "e_machine"),
        (24, 8, "e_entry"),
        (32, 8, "e_phoff"),
        (40, 8, "e_shoff"),
        (52, 2, "e_ehsize"),
        (54, 2, "e_phentsize"),
        (56, 2, "e_phnum"),
        (58, 2, "e_shentsize"),
        (60, 2, "e_shnum"),
        (62, 2, "e_shstrndx"),
    ] {
        l.field(at, w, format!("ELF {name}"));
    }
    let phoff = rd64(b, 32).unwrap_or(0);
    let phnum = rd16(b, 56).unwrap_or(0).min(32);
    let shoff = rd64(b, 40).unwrap_or(0);
    let shnum = rd16(b, 60).unwrap_or(0).min(256);
    let shstrndx = rd16(b, 62).unwrap_or(0);
    l.header_end = (phoff + phnum * 56).clamp(64, n.max(64)).min(n);
    l.region(0, 64, "ELF header", n);
    l.region(phoff, phnum * 56, "program headers", n);
    l.region(shoff, shnum * 64, "section headers", n);

    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let p = phoff + i * 56;
        let ptype = rd32(b, p).unwrap_or(0);
        for (off, w, name) in [
            (0, 4, "p_type"),
            (8, 8, "p_offset"),
            (16, 8, "p_vaddr"),
            (32, 8, "p_filesz"),
            (40, 8, "p_memsz"),
        ] {
            l.field(
                p + off,
                w,
                format!("ELF phdr[{i}] (type {ptype:#x}) {name}"),
            );
        }
        let (off, vaddr, filesz) = (
            rd64(b, p + 8).unwrap_or(0),
            rd64(b, p + 16).unwrap_or(0),
            rd64(b, p + 32).unwrap_or(0),
        );
        match ptype {
            1 => loads.push((vaddr, off, filesz)),
            2 => dynamic = Some((off, filesz)),
            _ => {}
        }
    }
    let to_off = |vaddr: usize| -> Option<usize> {
        loads.iter().find_map(|&(va, off, size)| {
            (vaddr >= va && vaddr - va < size).then(|| off + (vaddr - va))
        })
    };

    for i in 0..shnum {
        let s = shoff + i * 64;
        let stype = rd32(b, s + 4).unwrap_or(0);
        // DYNAMIC, DYNSYM, SYMTAB, STRTAB, GNU_HASH, VERNEED, VERDEF, VERSYM.
        let wanted = matches!(
            stype,
            2 | 3 | 6 | 11 | 0x6fff_fff6 | 0x6fff_fffd | 0x6fff_fffe | 0x6fff_ffff
        ) || i == shstrndx;
        if !wanted {
            continue;
        }
        for (off, w, name) in [
            (0, 4, "sh_name"),
            (4, 4, "sh_type"),
            (24, 8, "sh_offset"),
            (32, 8, "sh_size"),
            (40, 4, "sh_link"),
            (44, 4, "sh_info"),
            (56, 8, "sh_entsize"),
        ] {
            l.field(
                s + off,
                w,
                format!("ELF shdr[{i}] (type {stype:#x}) {name}"),
            );
        }
        let (off, size) = (rd64(b, s + 24).unwrap_or(0), rd64(b, s + 32).unwrap_or(0));
        match stype {
            11 => l.region(off, size.min(4096), format!("shdr[{i}] .dynsym"), n),
            3 => l.region(off, size.min(1024), format!("shdr[{i}] string table"), n),
            _ => {}
        }
    }

    if let Some((off, size)) = dynamic {
        l.region(off, size, "dynamic section", n);
        for k in 0..(size / 16).min(64) {
            let e = off + k * 16;
            let tag = rd64(b, e).unwrap_or(0);
            if tag == 0 {
                break;
            }
            l.field(e + 8, 8, format!("ELF dynamic[{k}] (tag {tag:#x}) d_val"));
            let Some(target) = rd64(b, e + 8).and_then(to_off) else {
                continue;
            };
            match tag {
                // DT_HASH: nbucket, nchain.
                4 => {
                    l.field(target, 4, "ELF DT_HASH nbucket");
                    l.field(target + 4, 4, "ELF DT_HASH nchain");
                }
                // DT_GNU_HASH: nbuckets, symoffset, bloom_size, bloom_shift.
                0x6fff_fef5 => {
                    for (o, name) in [
                        (0, "nbuckets"),
                        (4, "symoffset"),
                        (8, "bloom_size"),
                        (12, "bloom_shift"),
                    ] {
                        l.field(target + o, 4, format!("ELF DT_GNU_HASH {name}"));
                    }
                    l.region(target, 512, "GNU hash table", n);
                }
                // DT_VERNEED: the first two Verneed entries and their first Vernaux.
                0x6fff_fffe => {
                    let mut v = target;
                    for j in 0..2 {
                        for (o, w, name) in [
                            (2, 2, "vn_cnt"),
                            (4, 4, "vn_file"),
                            (8, 4, "vn_aux"),
                            (12, 4, "vn_next"),
                        ] {
                            l.field(v + o, w, format!("ELF verneed[{j}] {name}"));
                        }
                        if let Some(aux) = rd32(b, v + 8) {
                            for (o, w, name) in
                                [(6, 2, "vna_other"), (8, 4, "vna_name"), (12, 4, "vna_next")]
                            {
                                l.field(v + aux + o, w, format!("ELF verneed[{j}] aux {name}"));
                            }
                        }
                        l.region(v, 64, format!("verneed[{j}]"), n);
                        match rd32(b, v + 12) {
                            Some(next) if next > 0 => v += next,
                            _ => break,
                        }
                    }
                }
                // DT_VERDEF: the first two Verdef entries and their first Verdaux.
                0x6fff_fffc => {
                    let mut v = target;
                    for j in 0..2 {
                        for (o, w, name) in
                            [(6, 2, "vd_cnt"), (12, 4, "vd_aux"), (16, 4, "vd_next")]
                        {
                            l.field(v + o, w, format!("ELF verdef[{j}] {name}"));
                        }
                        if let Some(aux) = rd32(b, v + 12) {
                            l.field(v + aux, 4, format!("ELF verdef[{j}] aux vda_name"));
                            l.field(v + aux + 4, 4, format!("ELF verdef[{j}] aux vda_next"));
                        }
                        l.region(v, 64, format!("verdef[{j}]"), n);
                        match rd32(b, v + 16) {
                            Some(next) if next > 0 => v += next,
                            _ => break,
                        }
                    }
                }
                _ => {}
            }
        }
    }
    l
}

/// 64-bit little-endian Mach-O at `base` (0, or a fat slice's offset).
fn macho64_layout(b: &[u8], base: usize, tag: &str, l: &mut Layout) {
    let n = b.len();
    for (at, name) in [
        (4, "cputype"),
        (12, "filetype"),
        (16, "ncmds"),
        (20, "sizeofcmds"),
        (24, "flags"),
    ] {
        l.field(base + at, 4, format!("Mach-O{tag} header {name}"));
    }
    let ncmds = rd32(b, base + 16).unwrap_or(0).min(256);
    let sizeofcmds = rd32(b, base + 20).unwrap_or(0);
    l.header_end = l.header_end.max((base + 32 + sizeofcmds).min(n));
    l.region(
        base,
        32 + sizeofcmds,
        format!("Mach-O{tag} header + load commands"),
        n,
    );
    let mut p = base + 32;
    for i in 0..ncmds {
        let (Some(cmd), Some(size)) = (rd32(b, p), rd32(b, p + 4)) else {
            break;
        };
        let what = format!("Mach-O{tag} load command {i} (cmd {cmd:#x})");
        l.field(p, 4, format!("{what} cmd"));
        l.field(p + 4, 4, format!("{what} cmdsize"));
        match cmd {
            // LC_SEGMENT_64: fileoff, filesize, nsects; each section's size,
            // offset, reloff, nreloc.
            0x19 => {
                l.field(p + 40, 8, format!("{what} fileoff"));
                l.field(p + 48, 8, format!("{what} filesize"));
                l.field(p + 64, 4, format!("{what} nsects"));
                let nsects = rd32(b, p + 64).unwrap_or(0).min(16);
                for s in 0..nsects {
                    let sp = p + 72 + s * 80;
                    l.field(sp + 40, 8, format!("{what} section {s} size"));
                    l.field(sp + 48, 4, format!("{what} section {s} offset"));
                    l.field(sp + 56, 4, format!("{what} section {s} reloff"));
                    l.field(sp + 60, 4, format!("{what} section {s} nreloc"));
                }
            }
            _ => {
                // Every other command: its u32 words (offsets, sizes, counts,
                // string offsets).
                for w in (8..size.min(64)).step_by(4) {
                    l.field(p + w, 4, format!("{what} word at +{w}"));
                }
            }
        }
        // Tables the commands point at (offsets are slice-relative).
        match cmd {
            // LC_DYLD_INFO(_ONLY): rebase, bind, weak, lazy, export.
            0x22 | 0x8000_0022 => {
                for (k, name) in [
                    (8, "rebase"),
                    (16, "bind"),
                    (24, "weak bind"),
                    (32, "lazy bind"),
                    (40, "export trie"),
                ] {
                    if let (Some(off), Some(sz)) = (rd32(b, p + k), rd32(b, p + k + 4)) {
                        if off > 0 {
                            l.region(base + off, sz.min(256), format!("Mach-O{tag} {name}"), n);
                        }
                    }
                }
            }
            // LC_DYLD_EXPORTS_TRIE, LC_DYLD_CHAINED_FIXUPS (linkedit_data).
            0x8000_0033 | 0x8000_0034 => {
                if let (Some(off), Some(sz)) = (rd32(b, p + 8), rd32(b, p + 12)) {
                    let name = if cmd == 0x8000_0033 {
                        "export trie"
                    } else {
                        "chained fixups"
                    };
                    l.region(base + off, sz.min(256), format!("Mach-O{tag} {name}"), n);
                    if cmd == 0x8000_0034 {
                        for k in 0..7 {
                            l.field(
                                base + off + 4 * k,
                                4,
                                format!("Mach-O{tag} chained fixups header word {k}"),
                            );
                        }
                    }
                }
            }
            // LC_SYMTAB: the first symbols and strings.
            0x2 => {
                if let (Some(symoff), Some(stroff)) = (rd32(b, p + 8), rd32(b, p + 16)) {
                    l.region(
                        base + symoff,
                        16 * 32,
                        format!("Mach-O{tag} symbol table"),
                        n,
                    );
                    l.region(base + stroff, 512, format!("Mach-O{tag} string table"), n);
                    for s in 0..4 {
                        l.field(
                            base + symoff + 16 * s,
                            4,
                            format!("Mach-O{tag} nlist[{s}] n_strx"),
                        );
                    }
                }
            }
            _ => {}
        }
        if size < 8 {
            break;
        }
        p += size;
    }
}

/// Fat (universal) Mach-O: the big-endian fat header and arch table, then
/// every slice.
fn fat_layout(b: &[u8]) -> Layout {
    let n = b.len();
    let mut l = Layout::default();
    l.field_be(4, 4, "fat nfat_arch");
    let nfat = rd(b, 4, 4, true).unwrap_or(0).min(8) as usize;
    l.header_end = (8 + 20 * nfat).min(n);
    l.region(0, 8 + 20 * nfat, "fat header", n);
    for i in 0..nfat {
        let a = 8 + 20 * i;
        for (o, name) in [
            (0, "cputype"),
            (4, "cpusubtype"),
            (8, "offset"),
            (12, "size"),
            (16, "align"),
        ] {
            l.field_be(a + o, 4, format!("fat arch[{i}] {name}"));
        }
        let off = rd(b, a + 8, 4, true).unwrap_or(0) as usize;
        if b.get(off..off + 4) == Some(&[0xcf, 0xfa, 0xed, 0xfe]) {
            macho64_layout(b, off, &format!(" slice {i}"), &mut l);
        }
    }
    l
}

/// PE/COFF: DOS header, COFF header, optional header and data directories,
/// section table, export directory, import descriptors, debug directory.
fn pe_layout(b: &[u8]) -> Layout {
    let n = b.len();
    let mut l = Layout::default();
    l.field(0x3c, 4, "PE e_lfanew");
    let pe = rd32(b, 0x3c).unwrap_or(0);
    for (o, w, name) in [
        (4, 2, "Machine"),
        (6, 2, "NumberOfSections"),
        (12, 4, "PointerToSymbolTable"),
        (16, 4, "NumberOfSymbols"),
        (20, 2, "SizeOfOptionalHeader"),
    ] {
        l.field(pe + o, w, format!("PE COFF {name}"));
    }
    let nsec = rd16(b, pe + 6).unwrap_or(0).min(96);
    let opt = pe + 24;
    let opt_size = rd16(b, pe + 20).unwrap_or(0);
    let pe32plus = rd16(b, opt) == Some(0x20b);
    let (nrva_at, dirs) = if pe32plus {
        (opt + 108, opt + 112)
    } else {
        (opt + 92, opt + 96)
    };
    l.field(opt, 2, "PE optional header Magic");
    l.field(opt + 56, 4, "PE SizeOfImage");
    l.field(opt + 60, 4, "PE SizeOfHeaders");
    l.field(nrva_at, 4, "PE NumberOfRvaAndSizes");
    const DIRS: [&str; 16] = [
        "export",
        "import",
        "resource",
        "exception",
        "certificate",
        "base reloc",
        "debug",
        "architecture",
        "global ptr",
        "TLS",
        "load config",
        "bound import",
        "IAT",
        "delay import",
        "CLR",
        "reserved",
    ];
    for (i, name) in DIRS.iter().enumerate() {
        l.field(
            dirs + 8 * i,
            4,
            format!("PE data directory {i} ({name}) rva"),
        );
        l.field(
            dirs + 8 * i + 4,
            4,
            format!("PE data directory {i} ({name}) size"),
        );
    }
    let sections = opt + opt_size;
    l.header_end = (sections + 40 * nsec).min(n);
    l.region(0, sections + 40 * nsec, "PE headers + section table", n);
    let mut table = Vec::new();
    for i in 0..nsec {
        let s = sections + 40 * i;
        for (o, w, name) in [
            (8, 4, "VirtualSize"),
            (12, 4, "VirtualAddress"),
            (16, 4, "SizeOfRawData"),
            (20, 4, "PointerToRawData"),
            (24, 4, "PointerToRelocations"),
            (32, 2, "NumberOfRelocations"),
        ] {
            l.field(s + o, w, format!("PE section {i} {name}"));
        }
        let (vsize, va, rawsize, raw) = (
            rd32(b, s + 8).unwrap_or(0),
            rd32(b, s + 12).unwrap_or(0),
            rd32(b, s + 16).unwrap_or(0),
            rd32(b, s + 20).unwrap_or(0),
        );
        table.push((va, vsize.max(rawsize), raw));
    }
    let to_off = |rva: usize| -> Option<usize> {
        table
            .iter()
            .find_map(|&(va, size, raw)| (rva >= va && rva - va < size).then(|| raw + (rva - va)))
    };
    let dir = |i: usize| -> Option<(usize, usize)> {
        let rva = rd32(b, dirs + 8 * i)?;
        let size = rd32(b, dirs + 8 * i + 4)?;
        Some((to_off(rva)?, size))
    };
    if let Some((e, size)) = dir(0) {
        for (o, name) in [
            (12, "Name"),
            (16, "OrdinalBase"),
            (20, "NumberOfFunctions"),
            (24, "NumberOfNames"),
            (28, "AddressOfFunctions"),
            (32, "AddressOfNames"),
            (36, "AddressOfNameOrdinals"),
        ] {
            l.field(e + o, 4, format!("PE export directory {name}"));
        }
        l.region(e, size.min(1024), "PE export directory and tables", n);
        if let Some(names) = rd32(b, e + 32).and_then(to_off) {
            for k in 0..4 {
                l.field(names + 4 * k, 4, format!("PE export name pointer {k}"));
            }
        }
    }
    if let Some((imp, _)) = dir(1) {
        for d in 0..4 {
            let at = imp + 20 * d;
            for (o, name) in [(0, "OriginalFirstThunk"), (12, "Name"), (16, "FirstThunk")] {
                l.field(at + o, 4, format!("PE import descriptor {d} {name}"));
            }
            if let Some(thunks) = rd32(b, at).and_then(to_off) {
                let w = if pe32plus { 8 } else { 4 };
                l.field(thunks, w, format!("PE import descriptor {d} first thunk"));
            }
        }
        l.region(imp, 20 * 8, "PE import descriptors", n);
    }
    if let Some((dbg, _)) = dir(6) {
        for (o, name) in [
            (16, "SizeOfData"),
            (20, "AddressOfRawData"),
            (24, "PointerToRawData"),
        ] {
            l.field(dbg + o, 4, format!("PE debug directory {name}"));
        }
    }
    if let Some((delay, _)) = dir(13) {
        for k in 0..8 {
            l.field(
                delay + 4 * k,
                4,
                format!("PE delay import descriptor word {k}"),
            );
        }
    }
    l
}

// ---------------------------------------------------------------------------
// Mutations.

enum Edit {
    /// The first `n` bytes of the file.
    Truncate(usize),
    /// The file with these bytes written at these offsets.
    Patch(Vec<(usize, Vec<u8>)>),
    /// Another file, as it is (the fuzzer's regression inputs).
    WholeFile(PathBuf),
}

struct Case {
    /// How to rebuild the input from the fixture file.
    recipe: String,
    edit: Edit,
    /// Also write the input to a file (with the fixture's name) and read it
    /// back with `read_binary`.
    via_file: bool,
}

/// How many mutations of each kind one fixture gets. Cost is about the
/// number of inputs that still parse, times the fixture's parse time (in a
/// debug build: well under 1 ms for MarkupSafe, ~3 ms for libgomp and
/// vcomp140, ~15 ms for libomp, ~40 ms for a 25 MB OpenBLAS); the plans
/// keep the whole file under ~20 s of one core.
#[derive(Clone, Copy)]
struct Plan {
    /// Cuts deep in the file (table edges, half, minus one, random).
    deep_truncations: usize,
    field_writes: usize,
    flips_first_4k: usize,
    region_flips: usize,
    random_words: usize,
}

/// Small files: everything.
const SMALL: Plan = Plan {
    deep_truncations: 64,
    field_writes: 600,
    flips_first_4k: 160,
    region_flips: 320,
    random_words: 96,
};

/// A few hundred KB.
const MEDIUM: Plan = Plan {
    deep_truncations: 24,
    field_writes: 240,
    flips_first_4k: 64,
    region_flips: 160,
    random_words: 32,
};

/// libomp.dylib: large export trie, slow to parse in debug.
const MACHO_DYLIB: Plan = Plan {
    deep_truncations: 16,
    field_writes: 160,
    flips_first_4k: 32,
    region_flips: 120,
    random_words: 24,
};

/// Tens of MB.
const LARGE: Plan = Plan {
    deep_truncations: 8,
    field_writes: 40,
    flips_first_4k: 8,
    region_flips: 24,
    random_words: 6,
};

fn values(width: usize, file_len: usize) -> Vec<u64> {
    let n = file_len as u64;
    match width {
        2 => vec![0, 0xffff, 0x8000, 1],
        4 => vec![
            0,
            0xffff_ffff,
            0x7fff_ffff,
            0x8000_0000,
            n.min(0xffff_ffff),
            1,
        ],
        _ => vec![0, u64::MAX, 1 << 62, 0xffff_ffff, n, n + 1],
    }
}

fn encode(v: u64, width: usize, big_endian: bool) -> Vec<u8> {
    let le = v.to_le_bytes();
    let mut out = le[..width].to_vec();
    if big_endian {
        out.reverse();
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn flip(base: &[u8], at: usize, mask: u8) -> (usize, Vec<u8>) {
    (at, vec![base[at] ^ mask])
}

fn describe_flips(flips: &[(usize, Vec<u8>)], base: &[u8], what: &str) -> String {
    let list: Vec<String> = flips
        .iter()
        .map(|(at, new)| format!("{at:#x}: {:02x}->{:02x}", base[*at], new[0]))
        .collect();
    format!("set bytes in {what}: {}", list.join(", "))
}

fn cases(base: &[u8], label: &str, plan: Plan) -> Vec<Case> {
    let n = base.len();
    let l = layout(base);
    let mut rng = Rng::seeded(label);
    let mut out = Vec::new();

    // Truncations: every length through the first bytes and a sweep
    // through the headers (cheap: little left to parse), then a sample of
    // deep cuts (the edges of every table, the classic half and minus one,
    // random points; these parse most of the file).
    let mut lens: Vec<usize> = (0..=n.min(160)).collect();
    let header_end = l.header_end.max(64).min(n);
    let step = (header_end / 96).max(1);
    lens.extend((0..=header_end).step_by(step));
    let mut deep = vec![n / 2, n.saturating_sub(1)];
    let mut more = Vec::new();
    for &(start, len, _) in &l.regions {
        more.extend([
            start,
            start + 1,
            start + len / 2,
            start + len - 1,
            start + len,
        ]);
    }
    more.extend([n / 4, 3 * n / 4, n.saturating_sub(8)]);
    more.extend((0..plan.deep_truncations).map(|_| rng.below(n + 1)));
    more.retain(|&len| len > header_end && len < n);
    more.sort_unstable();
    more.dedup();
    deep.extend(rng.sample(more, plan.deep_truncations.saturating_sub(2)));
    lens.extend(deep);
    lens.retain(|&len| len < n);
    lens.sort_unstable();
    lens.dedup();
    for len in lens {
        out.push(Case {
            recipe: format!("truncate to {len} bytes (of {n})"),
            edit: Edit::Truncate(len),
            via_file: false,
        });
    }

    // Header fields overwritten with 0, all ones, sign bits, the file size.
    let mut writes = Vec::new();
    for f in &l.fields {
        if f.at + f.width > n {
            continue;
        }
        for v in values(f.width, n) {
            let bytes = encode(v, f.width, f.big_endian);
            if base[f.at..f.at + f.width] == bytes[..] {
                continue;
            }
            writes.push(Case {
                recipe: format!(
                    "write u{} {} {v:#x} at {:#x} ({}; was {})",
                    f.width * 8,
                    if f.big_endian { "BE" } else { "LE" },
                    f.at,
                    f.name,
                    hex(&base[f.at..f.at + f.width]),
                ),
                edit: Edit::Patch(vec![(f.at, bytes)]),
                via_file: false,
            });
        }
    }
    out.extend(rng.sample(writes, plan.field_writes));

    // Byte flips in the first 4 KiB: one to eight bytes each.
    let first = n.min(4096);
    if first > 0 {
        for _ in 0..plan.flips_first_4k {
            let k = 1 + rng.below(8);
            let flips: Vec<_> = (0..k)
                .map(|_| flip(base, rng.below(first), rng.mask()))
                .collect();
            out.push(Case {
                recipe: describe_flips(&flips, base, "the first 4 KiB"),
                edit: Edit::Patch(flips),
                via_file: false,
            });
        }
    }

    // Byte flips inside the tables and commands the parser walks; some
    // bytes set to values that mean something there (flags, opcodes).
    if !l.regions.is_empty() {
        for _ in 0..plan.region_flips {
            let (start, len, name) = &l.regions[rng.below(l.regions.len())];
            let k = 1 + rng.below(4);
            let flips: Vec<_> = (0..k)
                .map(|_| {
                    let at = start + rng.below(*len);
                    match rng.below(4) {
                        0 => (at, vec![[0x00, 0xff, 0x08, 0x10, 0x80, 0x7f][rng.below(6)]]),
                        _ => flip(base, at, rng.mask()),
                    }
                })
                .collect();
            out.push(Case {
                recipe: describe_flips(&flips, base, name),
                edit: Edit::Patch(flips),
                via_file: false,
            });
        }
    }

    // Aligned u32/u64 words anywhere in the headers overwritten with
    // extreme values.
    let span = header_end.max(first);
    for _ in 0..plan.random_words {
        let width = if rng.below(2) == 0 { 4 } else { 8 };
        if span < width {
            break;
        }
        let at = rng.below(span - width + 1) & !(width - 1);
        let v = values(width, n)[rng.below(values(width, n).len())];
        out.push(Case {
            recipe: format!(
                "write u{} LE {v:#x} at {at:#x} (random header word; was {})",
                width * 8,
                hex(&base[at..at + width])
            ),
            edit: Edit::Patch(vec![(at, encode(v, width, false))]),
            via_file: false,
        });
    }

    // A few go through a real file and `read_binary` (mmap path): the
    // empty file, a cut header, half the file, a field write, a flip.
    let picks = [
        out.iter().position(|c| matches!(c.edit, Edit::Truncate(0))),
        out.iter()
            .position(|c| matches!(c.edit, Edit::Truncate(len) if len >= 40)),
        out.iter()
            .position(|c| matches!(c.edit, Edit::Truncate(len) if len == n / 2)),
        out.iter().position(|c| c.recipe.starts_with("write")),
        out.iter().rposition(|c| c.recipe.starts_with("set bytes")),
    ];
    for i in picks.into_iter().flatten() {
        out[i].via_file = true;
    }
    out
}

// ---------------------------------------------------------------------------
// Running the API under catch_unwind, in a child process.
//
// Some failures cannot be caught in-process: a stack overflow aborts, an
// allocation of many gigabytes gets the process killed, a parser stuck in a
// loop cannot be stopped. So every suite runs in a child process (this test
// executable, re-run with `<test name> --exact` and CHILD_ENV set) with a
// memory limit; the child reports each case on stdout; the parent kills it
// when a case exceeds BOUND, notes how it died otherwise, and starts a new
// child at the next case.

/// Set in the child: `<suite>:<first case>`.
const CHILD_ENV: &str = "CAICLUST_MUTATION_CHILD";
/// Prefix of the child's report lines.
const TAG: &str = "@@mutation ";
/// Address-space limit of the child (`ulimit -v`, KiB): 4 GiB.
const CHILD_MEMORY_KIB: u64 = 4 << 20;
/// Stop a suite after this many failures (each may cost a BOUND and a new
/// child).
const MAX_FAILURES: usize = 24;

thread_local! {
    /// Set while the API runs: the hook records instead of printing.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// A panic hook that, while [`CATCHING`], records the message and the
/// location (the parser's `file:line:col`) instead of printing them; other
/// panics (the test's own assertions) print as usual.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                let payload = info.payload();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "<non-string panic payload>".to_owned());
                let at = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_else(|| "<unknown location>".to_owned());
                LAST_PANIC.with(|p| *p.borrow_mut() = Some((msg, at)));
            } else {
                default(info);
            }
        }));
    });
}

/// How one input came out.
#[derive(Debug)]
enum Outcome {
    Parsed,
    Rejected,
    /// Panic message, location.
    Panicked(String, String),
}

/// `parse_binary` (or `read_binary` of `via_file`) then `fingerprint` with
/// every name, under `catch_unwind`. A panic the probe contained itself
/// ([`BinaryError::ParserPanic`]) counts as a panic too.
fn exercise(input: &[u8], via_file: Option<&Path>) -> Outcome {
    install_panic_hook();
    CATCHING.with(|c| c.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let parsed = match via_file {
            Some(path) => read_binary(path),
            None => parse_binary(input),
        };
        match parsed {
            Ok(info) => {
                for name in NAMES {
                    let _ = fingerprint(name, &info);
                }
                Ok(true)
            }
            // The probe contained a panic in the parser: still a bug.
            Err(BinaryError::ParserPanic { message, .. }) => Err(message),
            Err(_) => Ok(false),
        }
    }));
    CATCHING.with(|c| c.set(false));
    match result {
        Ok(Ok(true)) => Outcome::Parsed,
        Ok(Ok(false)) => Outcome::Rejected,
        Ok(Err(message)) => {
            let at = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .map_or_else(|| "?".to_owned(), |(_, at)| at);
            Outcome::Panicked(message, at)
        }
        Err(_) => {
            let (msg, at) = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| ("panic (no message recorded)".into(), "?".into()));
            Outcome::Panicked(msg, at)
        }
    }
}

/// The per-input time limit: [`BOUND`], or `CAICLUST_MUTATION_BOUND_MS`
/// (to measure how slow a slow case really is).
fn bound() -> Duration {
    std::env::var("CAICLUST_MUTATION_BOUND_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(BOUND)
}

/// Child side: run the cases of `suite` from `first` on, one report line
/// before and after each.
fn child_main(name: &str, first: usize) {
    let suite = suite(name);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(
        suite
            .path
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_else(|| "input".into()),
    );
    let mut work = suite.base.clone();
    let out = std::io::stdout();
    let say = |line: String| {
        let mut out = out.lock();
        let _ = writeln!(out, "\n{TAG}{line}");
        let _ = out.flush();
    };
    for (i, case) in suite.cases.iter().enumerate().skip(first) {
        let owned;
        let input: &[u8] = match &case.edit {
            Edit::Truncate(len) => &suite.base[..*len],
            Edit::Patch(writes) => {
                for (at, bytes) in writes {
                    work[*at..*at + bytes.len()].copy_from_slice(bytes);
                }
                &work
            }
            Edit::WholeFile(path) => {
                owned = std::fs::read(path).expect("read input file");
                &owned
            }
        };
        if case.via_file {
            std::fs::write(&file, input).expect("write mutated file");
        }
        say(format!("start {i}"));
        let t = Instant::now();
        let outcome = exercise(input, case.via_file.then_some(file.as_path()));
        let nanos = t.elapsed().as_nanos();
        let text = match outcome {
            Outcome::Parsed => "parsed".to_owned(),
            Outcome::Rejected => "rejected".to_owned(),
            Outcome::Panicked(msg, at) => {
                format!("panic {}", serde_json::json!([msg, at]))
            }
        };
        say(format!("done {i} {nanos} {text}"));
        if let Edit::Patch(writes) = &case.edit {
            for (at, bytes) in writes {
                let end = *at + bytes.len();
                work[*at..end].copy_from_slice(&suite.base[*at..end]);
            }
        }
    }
}

/// What the parent hears from a child.
enum Report {
    Start(usize),
    Done(usize, Duration, Outcome),
    /// stdout closed: the child exited or died.
    End,
}

fn parse_report(line: &str) -> Option<Report> {
    let rest = &line[line.find(TAG)? + TAG.len()..];
    let mut words = rest.splitn(4, ' ');
    match words.next()? {
        "start" => Some(Report::Start(words.next()?.parse().ok()?)),
        "done" => {
            let i = words.next()?.parse().ok()?;
            let took = Duration::from_nanos(words.next()?.parse().ok()?);
            let outcome = match words.next()? {
                "parsed" => Outcome::Parsed,
                "rejected" => Outcome::Rejected,
                other => {
                    let json = other.strip_prefix("panic ")?;
                    let (msg, at): (String, String) = serde_json::from_str(json).ok()?;
                    Outcome::Panicked(msg, at)
                }
            };
            Some(Report::Done(i, took, outcome))
        }
        _ => None,
    }
}

/// One failed case.
struct Failure {
    case: usize,
    /// Short kind used to group failures: the panic location, `TIMEOUT`,
    /// or how the child died.
    key: String,
    detail: String,
}

/// Starts a child for `name` from case `first`; returns it with a channel
/// of its reports and a thread collecting its stderr.
fn spawn_child(
    name: &str,
    first: usize,
) -> (
    std::process::Child,
    mpsc::Receiver<Report>,
    std::thread::JoinHandle<String>,
) {
    let exe = std::env::current_exe().expect("current exe");
    let args = [
        name,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--quiet",
        // Run the test even if it is `#[ignore]`d (the parent then runs
        // because `--ignored` was given).
        "--include-ignored",
    ];
    let mut cmd = if cfg!(unix) && Path::new("/bin/sh").exists() {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(format!(
                "ulimit -v {CHILD_MEMORY_KIB} 2>/dev/null; exec \"$0\" \"$@\""
            ))
            .arg(&exe)
            .args(args);
        c
    } else {
        let mut c = Command::new(&exe);
        c.args(args);
        c
    };
    cmd.env(CHILD_ENV, format!("{name}:{first}"))
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the child test process");
    let stdout = child.stdout.take().expect("child stdout");
    let stderr = child.stderr.take().expect("child stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(report) = parse_report(&line) {
                if tx.send(report).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Report::End);
    });
    let errs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    (child, rx, errs)
}

/// The last lines of a child's stderr, for the report.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: run with"))
        .collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

/// Parent side: runs the suite's cases in children, restarting after each
/// case that kills or hangs one. Fails the test, listing every failure with
/// the recipe that rebuilds its input.
fn run_suite(name: &str) {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        if let Some(first) = spec.strip_prefix(&format!("{name}:")) {
            child_main(name, first.parse().expect("first case"));
        }
        return;
    }
    let started = Instant::now();
    let suite = suite(name);
    let limit = bound();
    let verbose = std::env::var_os("CAICLUST_MUTATION_VERBOSE").is_some_and(|v| v == "1");
    let total = suite.cases.len();
    let mut failures: Vec<Failure> = Vec::new();
    let (mut parsed, mut rejected, mut busy) = (0usize, 0usize, Duration::ZERO);
    let mut slowest = (Duration::ZERO, 0usize);
    let mut next = 0;
    let mut stopped_early = false;
    while next < total {
        if failures.len() >= MAX_FAILURES {
            stopped_early = true;
            break;
        }
        let (mut child, rx, errs) = spawn_child(name, next);
        let pid = child.id();
        // The case running: index, wall clock and CPU time at its start.
        let mut current: Option<(usize, Instant, Option<Duration>)> = None;
        let died = loop {
            let wait = match &current {
                // Setting up (reading the fixture, building the cases).
                None => Duration::from_secs(120),
                Some((_, wall, cpu)) => {
                    let used = case_time(pid, *wall, *cpu).0;
                    limit.saturating_sub(used).max(Duration::from_millis(20))
                }
            };
            match rx.recv_timeout(wait) {
                Ok(Report::Start(i)) => {
                    if verbose {
                        eprintln!("[{name}] case {i}: {}", suite.cases[i].recipe);
                    }
                    current = Some((i, Instant::now(), cpu_time(pid)));
                }
                Ok(Report::Done(i, took, outcome)) => {
                    current = None;
                    next = i + 1;
                    busy += took;
                    if took > slowest.0 {
                        slowest = (took, i);
                    }
                    match outcome {
                        Outcome::Parsed => parsed += 1,
                        Outcome::Rejected => rejected += 1,
                        Outcome::Panicked(msg, at) => failures.push(Failure {
                            case: i,
                            key: format!("panic at {}", short_location(&at)),
                            detail: format!("panicked: {msg} (at {at})"),
                        }),
                    }
                }
                Ok(Report::End) => break None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some((i, wall, cpu)) = current {
                        let (used, is_cpu) = case_time(pid, wall, cpu);
                        // Starved by other processes rather than busy:
                        // give it its full share of CPU (up to 5x on the wall clock).
                        if used < limit && wall.elapsed() < limit * 5 {
                            continue;
                        }
                        let _ = child.kill();
                        break Some(Failure {
                            case: i,
                            key: "TIMEOUT".into(),
                            detail: format!(
                                "still running after {used:.2?} of {} ({:.2?} wall); killed",
                                if is_cpu { "CPU" } else { "wall-clock time" },
                                wall.elapsed()
                            ),
                        });
                    }
                    let _ = child.kill();
                    break Some(Failure {
                        case: next,
                        key: "child setup timed out".into(),
                        detail: "no report within 120 s".into(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            }
        };
        let status = child.wait().expect("wait for the child");
        let stderr = errs.join().unwrap_or_default();
        match (died, current.map(|(i, ..)| i)) {
            (Some(failure), _) => {
                next = failure.case + 1;
                failures.push(failure);
            }
            (None, Some(i)) => {
                // The child died inside the parser: abort (stack overflow),
                // out of memory, signal.
                let why = tail(&stderr);
                let key = if why.contains("overflowed its stack") {
                    "CRASH: stack overflow (abort)".to_owned()
                } else if why.contains("memory allocation") {
                    format!("CRASH: out of memory (> {} GiB)", CHILD_MEMORY_KIB >> 20)
                } else {
                    format!("CRASH: child {status}")
                };
                failures.push(Failure {
                    case: i,
                    key,
                    detail: format!("the child process died ({status}): {why}"),
                });
                next = i + 1;
            }
            (None, None) if next < total => {
                panic!(
                    "{name}: the child stopped before case {next} of {total} ({status}): {}",
                    tail(&stderr)
                );
            }
            (None, None) => {}
        }
    }

    let done = parsed + rejected + failures.len();
    eprintln!(
        "{}: {done}/{total} inputs ({parsed} parsed, {rejected} rejected, {} failed); \
         parsing took {busy:.2?} (slowest {:.2?}: {}); wall {:.2?}",
        suite.label,
        failures.len(),
        slowest.0,
        suite
            .cases
            .get(slowest.1)
            .map_or("-", |c| c.recipe.as_str()),
        started.elapsed()
    );
    if failures.is_empty() {
        return;
    }
    // Group by kind (panic location, TIMEOUT, crash), showing a few recipes
    // for each.
    let mut groups: Vec<(String, Vec<&Failure>)> = Vec::new();
    for f in &failures {
        match groups.iter_mut().find(|(k, _)| *k == f.key) {
            Some((_, list)) => list.push(f),
            None => groups.push((f.key.clone(), vec![f])),
        }
    }
    let mut text = String::new();
    for (key, list) in &groups {
        let _ = writeln!(text, "\n  {key}: {} input(s), e.g.", list.len());
        for f in list.iter().take(3) {
            let case = &suite.cases[f.case];
            let how = if case.via_file {
                "read_binary of a file"
            } else {
                "parse_binary"
            };
            let _ = writeln!(text, "    - {} [{how}]\n      {}", case.recipe, f.detail);
        }
    }
    panic!(
        "{}{}: {} of {done} inputs derived from {} failed (each recipe rebuilds its input \
         from that file){}:{text}",
        suite.note,
        suite.label,
        failures.len(),
        suite.path.display(),
        if stopped_early {
            format!("; stopped after {MAX_FAILURES} failures")
        } else {
            String::new()
        }
    );
}

/// CPU time (user + system) used so far by process `pid`, where the OS
/// tells (Linux `/proc/<pid>/stat`, in 1/100 s).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm) ": state is the first; utime and stime are the
    // 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Time the running case has used: CPU time where known (so that a busy
/// machine does not fail the test), else wall-clock time. The flag says
/// which.
fn case_time(pid: u32, wall: Instant, cpu: Option<Duration>) -> (Duration, bool) {
    match (cpu, cpu_time(pid)) {
        (Some(start), Some(now)) => (now.saturating_sub(start), true),
        _ => (wall.elapsed(), false),
    }
}

/// `.../goblin-0.10.7/src/mach/imports.rs:103:20` from a full path.
fn short_location(at: &str) -> &str {
    at.split_once(".crates.io-")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or(at, |(_, rest)| rest)
}

// ---------------------------------------------------------------------------
// Suites: what each test runs.

struct Suite {
    label: String,
    /// The file the inputs derive from (its name is kept for `read_binary`).
    path: PathBuf,
    base: Vec<u8>,
    cases: Vec<Case>,
    /// Printed first when the suite fails.
    note: &'static str,
}

/// The first file in `dir` whose name starts with `prefix`.
fn find(dir: &Path, prefix: &str) -> PathBuf {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}; {SETUP_HINT}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {prefix}* in {}; {SETUP_HINT}", dir.display()))
}

fn numpy_openblas() -> PathBuf {
    let dir = fixtures().venv_pypi_site_packages().join("numpy.libs");
    find(&dir, "libscipy_openblas")
}

fn scipy_openblas() -> PathBuf {
    let dir = fixtures().venv_pypi_site_packages().join("scipy.libs");
    find(&dir, "libscipy_openblas")
}

fn libgomp() -> PathBuf {
    let dir = fixtures()
        .venv_pypi_site_packages()
        .join("scikit_learn.libs");
    find(&dir, "libgomp")
}

fn vcomp140() -> PathBuf {
    fixtures()
        .wheel(wheel::SKLEARN_WIN_AMD64)
        .join("sklearn/.libs/vcomp140.dll")
}

fn libomp() -> PathBuf {
    fixtures()
        .wheel(wheel::SKLEARN_MACOS_ARM64)
        .join("sklearn/.dylibs/libomp.dylib")
}

fn markupsafe_fat() -> PathBuf {
    let dir = fixtures()
        .wheel(wheel::MARKUPSAFE_MACOS_UNIVERSAL2)
        .join("markupsafe");
    find(&dir, "_speedups.cpython-")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {SETUP_HINT}", path.display()))
}

/// A sweep of generated mutations of one real binary.
fn fixture_suite(label: &str, path: PathBuf, plan: Plan) -> Suite {
    let base = read(&path);
    // The unmutated file must parse: otherwise the mutations test nothing.
    let info = parse_binary(&base)
        .unwrap_or_else(|e| panic!("unmutated {} does not parse: {e}", path.display()));
    assert!(!info.architectures.is_empty(), "{label}");
    let cases = cases(&base, label, plan);
    Suite {
        label: label.to_owned(),
        path,
        base,
        cases,
        note: "",
    }
}

/// Inputs the fuzzer found crashing (`fuzz/regressions/`).
fn regressions_suite() -> Suite {
    let dir = workspace_root().join("fuzz/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    let cases = files
        .into_iter()
        .map(|f| Case {
            recipe: format!("the file {}", f.display()),
            edit: Edit::WholeFile(f),
            via_file: false,
        })
        .collect();
    Suite {
        label: "fuzz/regressions".into(),
        path: dir,
        base: Vec::new(),
        cases,
        note: "",
    }
}

/// One hand-made input showing a known finding (see fuzz/README.md).
fn finding_suite(
    label: &str,
    path: PathBuf,
    recipe: String,
    writes: Vec<(usize, Vec<u8>)>,
) -> Suite {
    let base = read(&path);
    for (at, bytes) in &writes {
        assert!(
            at + bytes.len() <= base.len(),
            "{label}: patch outside the file"
        );
    }
    Suite {
        label: label.to_owned(),
        path,
        base,
        cases: vec![Case {
            recipe,
            edit: Edit::Patch(writes),
            via_file: false,
        }],
        note: "FINDING (an input found by fuzzing; see fuzz/README.md): ",
    }
}

fn suite(name: &str) -> Suite {
    match name {
        "mutated_numpy_openblas_elf" => {
            fixture_suite("numpy.libs OpenBLAS (ELF)", numpy_openblas(), LARGE)
        }
        "mutated_scipy_openblas_elf" => {
            fixture_suite("scipy.libs OpenBLAS (ELF)", scipy_openblas(), LARGE)
        }
        "mutated_libgomp_elf" => {
            fixture_suite("scikit_learn.libs libgomp (ELF)", libgomp(), MEDIUM)
        }
        "mutated_vcomp140_pe" => fixture_suite("vcomp140.dll (PE)", vcomp140(), MEDIUM),
        "mutated_libomp_macho" => {
            fixture_suite("libomp.dylib (Mach-O arm64)", libomp(), MACHO_DYLIB)
        }
        "mutated_markupsafe_fat_macho" => {
            fixture_suite("MarkupSafe _speedups (fat Mach-O)", markupsafe_fat(), SMALL)
        }
        "mutated_current_exe" => fixture_suite(
            "this test executable (ELF/Mach-O/PE)",
            std::env::current_exe().expect("current exe"),
            LARGE,
        ),
        "fuzz_regressions_do_not_panic" => regressions_suite(),
        "finding_macho_export_reexport_ordinal" => make_export_reexport(),
        "finding_macho_bind_dylib_ordinal" => make_bind_ordinal(),
        "finding_macho_bind_segment_index" => make_bind_segment(),
        "finding_macho_bind_offset_overflow" => make_bind_offset_overflow(),
        "finding_macho_bind_repeat_count" => make_bind_repeat_count(),
        "finding_macho_export_trie_cycle" => make_export_trie_cycle(),
        "finding_fat_arch_count" => make_fat_arch_count(),
        "finding_elf_dynstr_unmapped" => make_elf_dynstr_unmapped(),
        "finding_elf_dynstr_size_huge" => make_elf_dynstr_size_huge(),
        other => panic!("no suite named {other}"),
    }
}

// ---------------------------------------------------------------------------
// The findings, as exact edits of fixture files. Each locates its target by
// reading the (unmutated) structures, so it survives a new build of the
// same wheel; the recipe names the offsets it used. The comments describe
// what each input did before binary.rs was hardened (041ebfc).

/// ULEB128 at `at`: (value, length).
fn uleb(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (k, &byte) in b.get(at..)?.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * k);
        if byte & 0x80 == 0 {
            return Some((v, k + 1));
        }
    }
    None
}

/// The load commands of the thin 64-bit Mach-O at `base`: (offset, cmd, size).
fn macho_commands(b: &[u8], base: usize) -> Vec<(usize, usize, usize)> {
    let ncmds = rd32(b, base + 16).unwrap_or(0).min(512);
    let mut p = base + 32;
    let mut out = Vec::new();
    for _ in 0..ncmds {
        let (Some(cmd), Some(size)) = (rd32(b, p), rd32(b, p + 4)) else {
            break;
        };
        out.push((p, cmd, size));
        if size < 8 {
            break;
        }
        p += size;
    }
    out
}

/// LC_DYLD_INFO(_ONLY) of libomp: (command offset, bind_off, bind_size,
/// export_off, export_size).
fn libomp_dyld_info(b: &[u8]) -> (usize, usize, usize, usize, usize) {
    let (p, _, _) = macho_commands(b, 0)
        .into_iter()
        .find(|&(_, cmd, _)| cmd == 0x22 || cmd == 0x8000_0022)
        .expect("libomp.dylib has LC_DYLD_INFO_ONLY");
    let r = |k| rd32(b, p + k).expect("dyld info field");
    (p, r(16), r(20), r(40), r(44))
}

/// Bind opcodes in `start..start + size`: (offset, opcode byte).
fn bind_opcodes(b: &[u8], start: usize, size: usize) -> Vec<(usize, u8)> {
    let end = (start + size).min(b.len());
    let mut p = start;
    let mut out = Vec::new();
    while p < end && out.len() < 4096 {
        let op = b[p];
        out.push((p, op));
        p += 1;
        let ulebs = match op & 0xf0 {
            0x20 | 0x60 | 0x70 | 0x80 | 0xa0 => 1,
            0xc0 => 2,
            0xd0 if op & 0x0f == 0 => 1,
            0x40 => {
                let Some(nul) = b[p..end].iter().position(|&c| c == 0) else {
                    break;
                };
                p += nul + 1;
                0
            }
            _ => 0,
        };
        for _ in 0..ulebs {
            let Some((_, len)) = uleb(b, p) else {
                return out;
            };
            p += len;
        }
    }
    out
}

/// Export trie nodes reachable from the root: (node offset, terminal size
/// and its length, children offset).
fn trie_nodes(b: &[u8], start: usize, size: usize) -> Vec<(usize, u64, usize)> {
    let mut out = Vec::new();
    let mut todo = vec![start];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(node) = todo.pop() {
        if !seen.insert(node) || out.len() > 256 || node >= start + size {
            continue;
        }
        let Some((term, n)) = uleb(b, node) else {
            continue;
        };
        out.push((node, term, n));
        let mut p = node + n + term as usize;
        let Some(&count) = b.get(p) else { continue };
        p += 1;
        for _ in 0..count {
            let Some(nul) = b.get(p..).and_then(|r| r.iter().position(|&c| c == 0)) else {
                break;
            };
            p += nul + 1;
            let Some((child, len)) = uleb(b, p) else {
                break;
            };
            p += len;
            todo.push(start + child as usize);
        }
    }
    out
}

/// goblin `mach/exports.rs` (`ExportInfo::parse`): a re-export's library
/// ordinal indexes `libs` unchecked. Recipe: the flags of an export-trie
/// terminal set to EXPORT_SYMBOL_FLAGS_REEXPORT (0x08), so its address
/// (a large ULEB) is read as the library ordinal.
fn make_export_reexport() -> Suite {
    let path = libomp();
    let b = read(&path);
    let (_, _, _, export_off, export_size) = libomp_dyld_info(&b);
    let flags_at = trie_nodes(&b, export_off, export_size)
        .into_iter()
        .filter(|&(_, term, _)| term > 0)
        .find_map(|(node, _, n)| {
            let flags_at = node + n;
            let (flags, fl) = uleb(&b, flags_at)?;
            let (addr, _) = uleb(&b, flags_at + fl)?;
            (flags == 0 && fl == 1 && addr >= 256).then_some(flags_at)
        })
        .expect("a regular export with a large address");
    finding_suite(
        "goblin mach/exports.rs re-export ordinal",
        path,
        format!(
            "libomp.dylib: set the export-trie terminal flags byte at {flags_at:#x} from 00 to 08 \
             (REEXPORT: its address becomes the dylib ordinal)"
        ),
        vec![(flags_at, vec![0x08])],
    )
}

/// goblin `mach/imports.rs` (`Import::new`): `libs[symbol_library_ordinal]`
/// unchecked. Recipe: the first BIND_OPCODE_SET_DYLIB_ORDINAL_IMM set to
/// ordinal 15.
fn make_bind_ordinal() -> Suite {
    let path = libomp();
    let b = read(&path);
    let (_, bind_off, bind_size, _, _) = libomp_dyld_info(&b);
    let (at, op) = bind_opcodes(&b, bind_off, bind_size)
        .into_iter()
        .find(|&(_, op)| op & 0xf0 == 0x10)
        .expect("a SET_DYLIB_ORDINAL_IMM bind opcode");
    finding_suite(
        "goblin mach/imports.rs dylib ordinal",
        path,
        format!(
            "libomp.dylib: set the bind opcode at {at:#x} from {op:02x} to 1f \
             (BIND_OPCODE_SET_DYLIB_ORDINAL_IMM 15; the file links far fewer dylibs)"
        ),
        vec![(at, vec![0x1f])],
    )
}

/// goblin `mach/imports.rs` (`Import::new`): `segments[seg_index]`
/// unchecked. Recipe: the first BIND_OPCODE_SET_SEGMENT_AND_OFFSET_ULEB set
/// to segment 15.
fn make_bind_segment() -> Suite {
    let path = libomp();
    let b = read(&path);
    let (_, bind_off, bind_size, _, _) = libomp_dyld_info(&b);
    let (at, op) = bind_opcodes(&b, bind_off, bind_size)
        .into_iter()
        .find(|&(_, op)| op & 0xf0 == 0x70)
        .expect("a SET_SEGMENT_AND_OFFSET_ULEB bind opcode");
    finding_suite(
        "goblin mach/imports.rs segment index",
        path,
        format!(
            "libomp.dylib: set the bind opcode at {at:#x} from {op:02x} to 7f \
             (BIND_OPCODE_SET_SEGMENT_AND_OFFSET_ULEB, segment 15; the file has fewer)"
        ),
        vec![(at, vec![0x7f])],
    )
}

/// goblin `mach/imports.rs` (`Import::new`): `segment.fileoff +
/// seg_offset` overflows (a panic where overflow checks are on: debug and
/// test builds, cargo-fuzz). Recipe: the bound segment's fileoff set to
/// u64::MAX.
fn make_bind_offset_overflow() -> Suite {
    let path = libomp();
    let b = read(&path);
    let (_, bind_off, bind_size, _, _) = libomp_dyld_info(&b);
    let seg = bind_opcodes(&b, bind_off, bind_size)
        .into_iter()
        .find(|&(at, op)| op & 0xf0 == 0x70 && uleb(&b, at + 1).is_some_and(|(v, _)| v > 0))
        .map(|(_, op)| usize::from(op & 0x0f))
        .expect("a bind at a non-zero segment offset");
    let (cmd_at, _, _) = macho_commands(&b, 0)
        .into_iter()
        .filter(|&(_, cmd, _)| cmd == 0x19)
        .nth(seg)
        .expect("the bound segment");
    finding_suite(
        "goblin mach/imports.rs fileoff + offset overflow",
        path,
        format!(
            "libomp.dylib: write u64 LE 0xffffffffffffffff at {:#x} (fileoff of LC_SEGMENT_64 \
             #{seg}, the segment the first bind writes into)",
            cmd_at + 40
        ),
        vec![(cmd_at + 40, vec![0xff; 8])],
    )
}

/// goblin `mach/imports.rs` (`BindInterpreter::run`):
/// BIND_OPCODE_DO_BIND_ULEB_TIMES_SKIPPING_ULEB pushes `count` imports with
/// no bound: a 16-byte edit asks for 4 billion (hundreds of GB), which the
/// probe requests through `MachO::imports()`. The fuzzer found 27 million
/// imports (2 GB) from a 27 KB input.
fn make_bind_repeat_count() -> Suite {
    let path = libomp();
    let b = read(&path);
    let (_, bind_off, bind_size, _, _) = libomp_dyld_info(&b);
    assert!(bind_size >= 16, "bind opcodes too short to rewrite");
    // dylib 1, symbol "_x", type pointer, segment 0 offset 0,
    // DO_BIND_ULEB_TIMES_SKIPPING_ULEB count 0xffffffff skip 0, DONE.
    let stream = vec![
        0x11, 0x40, b'_', b'x', 0x00, 0x51, 0x70, 0x00, 0xc0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00,
        0x00,
    ];
    finding_suite(
        "goblin mach/imports.rs unbounded bind repeat",
        path,
        format!(
            "libomp.dylib: write {} at {bind_off:#x} (start of the bind opcodes: \
             DO_BIND_ULEB_TIMES_SKIPPING_ULEB with count 0xffffffff)",
            hex(&stream)
        ),
        vec![(bind_off, stream)],
    )
}

/// goblin `mach/exports.rs` (`ExportTrie::walk_trie`): the trie is walked
/// recursively with no depth limit or visited set; a child edge pointing
/// back at the root recurses until the stack overflows (an abort, which
/// `catch_unwind` cannot stop; the fuzzer also saw 24 GB of memory from the
/// ever longer symbol names).
fn make_export_trie_cycle() -> Suite {
    let path = libomp();
    let b = read(&path);
    let (_, _, _, export_off, _) = libomp_dyld_info(&b);
    let (term, n) = uleb(&b, export_off).expect("trie root");
    let mut p = export_off + n + term as usize;
    assert!(b[p] > 0, "the trie root has children");
    p += 1;
    let nul = b[p..].iter().position(|&c| c == 0).expect("edge label");
    let edge = String::from_utf8_lossy(&b[p..p + nul]).into_owned();
    p += nul + 1;
    let (_, len) = uleb(&b, p).expect("child offset");
    // ULEB 0 in the same number of bytes: 0x80 ... 0x80 0x00.
    let mut zero = vec![0x80; len];
    zero[len - 1] = 0;
    finding_suite(
        "goblin mach/exports.rs cyclic export trie",
        path,
        format!(
            "libomp.dylib: write {} at {p:#x} (the export-trie root's first edge {edge:?} \
             now leads back to the root)",
            hex(&zero)
        ),
        vec![(p, zero)],
    )
}

/// probe `binary.rs` (`parse_mach`): `iter_arches()` is walked to the end
/// for a fat header's `nfat_arch`, so 0x7fffffff architectures cost 2^31
/// failed reads (seconds in release, minutes in debug) on a 67 KB file.
fn make_fat_arch_count() -> Suite {
    let path = markupsafe_fat();
    finding_suite(
        "probe binary.rs fat nfat_arch",
        path,
        "_speedups.cpython-311-darwin.so: write u32 BE 0x7fffffff at 0x4 (fat nfat_arch; was 2)"
            .into(),
        vec![(4, vec![0x7f, 0xff, 0xff, 0xff])],
    )
}

/// ELF: the PT_LOAD that holds DT_STRTAB moved away, goblin (permissive)
/// reads the dynamic string table from file offset 0; each of the ~11,000
/// symbol names then runs to the end of that table (up to 240 KB), and
/// probe `binary.rs` (`parse_elf`) copies every one: 1.5 GB of strings from
/// a 25 MB file, 1.5 s to parse and 2.5 s more in `fingerprint` (which scans
/// them) in release, a minute in debug.
fn make_elf_dynstr_unmapped() -> Suite {
    let path = numpy_openblas();
    let b = read(&path);
    let phoff = rd64(&b, 32).expect("e_phoff");
    let phnum = rd16(&b, 56).expect("e_phnum");
    let phdrs: Vec<usize> = (0..phnum).map(|i| phoff + 56 * i).collect();
    let (dyn_off, dyn_size) = phdrs
        .iter()
        .find(|&&p| rd32(&b, p) == Some(2))
        .map(|&p| (rd64(&b, p + 8).unwrap(), rd64(&b, p + 32).unwrap()))
        .expect("PT_DYNAMIC");
    let strtab = (0..dyn_size / 16)
        .map(|k| dyn_off + 16 * k)
        .find(|&e| rd64(&b, e) == Some(5))
        .and_then(|e| rd64(&b, e + 8))
        .expect("DT_STRTAB");
    let load = phdrs
        .iter()
        .copied()
        .find(|&p| {
            let (va, size) = (rd64(&b, p + 16).unwrap(), rd64(&b, p + 32).unwrap());
            rd32(&b, p) == Some(1) && strtab >= va && strtab < va + size
        })
        .expect("the PT_LOAD holding DT_STRTAB");
    let at = load + 16 + 7;
    finding_suite(
        "probe binary.rs ELF symbol names from an unmapped string table",
        path,
        format!(
            "{}: set byte {at:#x} (top byte of p_vaddr of the PT_LOAD at {load:#x}, which \
             holds DT_STRTAB {strtab:#x}) from {:02x} to 74",
            "libscipy_openblas64_ (numpy.libs)", b[at]
        ),
        vec![(at, vec![0x74])],
    )
}

/// ELF: DT_STRSZ huge; goblin (permissive) extends the dynamic string
/// table to the end of the file and splits all of it into strings up
/// front: about 1 s per 30 MB in release, more than BOUND in debug for a
/// debug test executable. Lower severity (linear in the file size).
fn make_elf_dynstr_size_huge() -> Suite {
    let path = std::env::current_exe().expect("current exe");
    let b = read(&path);
    assert_eq!(
        &b[..4],
        b"\x7fELF",
        "this finding needs an ELF test executable"
    );
    let phoff = rd64(&b, 32).expect("e_phoff");
    let phnum = rd16(&b, 56).expect("e_phnum");
    let (dyn_off, dyn_size) = (0..phnum)
        .map(|i| phoff + 56 * i)
        .find(|&p| rd32(&b, p) == Some(2))
        .map(|p| (rd64(&b, p + 8).unwrap(), rd64(&b, p + 32).unwrap()))
        .expect("PT_DYNAMIC");
    let at = (0..dyn_size / 16)
        .map(|k| dyn_off + 16 * k)
        .find(|&e| rd64(&b, e) == Some(10))
        .map(|e| e + 8)
        .expect("DT_STRSZ");
    finding_suite(
        "ELF DT_STRSZ larger than the file",
        path,
        format!(
            "this test executable ({} MB): write u64 LE 0x00f0000000000000 at {at:#x} \
             (DT_STRSZ d_val)",
            b.len() >> 20
        ),
        vec![(at, 0x00f0_0000_0000_0000u64.to_le_bytes().to_vec())],
    )
}

// ---------------------------------------------------------------------------
// The sweeps: generated mutations of each fixture.

#[test]
fn mutated_numpy_openblas_elf() {
    run_suite("mutated_numpy_openblas_elf");
}

#[test]
fn mutated_scipy_openblas_elf() {
    run_suite("mutated_scipy_openblas_elf");
}

#[test]
fn mutated_libgomp_elf() {
    run_suite("mutated_libgomp_elf");
}

#[test]
fn mutated_vcomp140_pe() {
    run_suite("mutated_vcomp140_pe");
}

#[test]
fn mutated_libomp_macho() {
    run_suite("mutated_libomp_macho");
}

#[test]
fn mutated_markupsafe_fat_macho() {
    run_suite("mutated_markupsafe_fat_macho");
}

#[test]
fn mutated_current_exe() {
    run_suite("mutated_current_exe");
}

/// Inputs the fuzzer (`fuzz/`) found crashing, kept in `fuzz/regressions/`.
#[test]
fn fuzz_regressions_do_not_panic() {
    run_suite("fuzz_regressions_do_not_panic");
}

// ---------------------------------------------------------------------------
// FINDINGS: each test below is one input that the probe mishandled before
// the hardening of binary.rs (a panic inside goblin, an abort, or far more
// than BOUND), kept as a regression test; see fuzz/README.md for the root
// causes. The comment says what the input did then.

/// Panics: index out of bounds in goblin `mach/exports.rs:99`.
#[test]
fn finding_macho_export_reexport_ordinal() {
    run_suite("finding_macho_export_reexport_ordinal");
}

/// Panics: index out of bounds in goblin `mach/imports.rs:103`.
#[test]
fn finding_macho_bind_dylib_ordinal() {
    run_suite("finding_macho_bind_dylib_ordinal");
}

/// Panics: index out of bounds in goblin `mach/imports.rs:94`.
#[test]
fn finding_macho_bind_segment_index() {
    run_suite("finding_macho_bind_segment_index");
}

/// Panics (overflow checks on): add with overflow in goblin
/// `mach/imports.rs:96`.
#[test]
fn finding_macho_bind_offset_overflow() {
    run_suite("finding_macho_bind_offset_overflow");
}

/// Out of memory / far over BOUND: goblin `mach/imports.rs:298`.
#[test]
fn finding_macho_bind_repeat_count() {
    run_suite("finding_macho_bind_repeat_count");
}

/// Stack overflow (abort): goblin `mach/exports.rs` recursion.
#[test]
fn finding_macho_export_trie_cycle() {
    run_suite("finding_macho_export_trie_cycle");
}

/// Far over BOUND: probe `binary.rs` walks 2^31 fat architectures.
#[test]
fn finding_fat_arch_count() {
    run_suite("finding_fat_arch_count");
}

/// Far over BOUND, 1.5 GB: probe `binary.rs` copies megabyte symbol names.
#[test]
fn finding_elf_dynstr_unmapped() {
    run_suite("finding_elf_dynstr_unmapped");
}

/// Over BOUND in debug: goblin splits the rest of the file as strings
/// (linear in the file size: about 1 s per 30 MB in release, 2-3 s in
/// debug for this executable).
#[test]
fn finding_elf_dynstr_size_huge() {
    run_suite("finding_elf_dynstr_size_huge");
}
