//! Bounded, deterministic mutation test of the binary reader: real binaries
//! (ELF OpenBLAS and libgomp from the PyPI venv, MSVC's `vcomp140.dll`, a
//! macOS `libomp.dylib`, the fat MarkupSafe module, this test executable),
//! damaged in ways a fuzzer would try (truncations, byte flips in the
//! headers, load commands and tables the parser walks, header fields
//! overwritten with 0, `0xffffffff` and huge values), must come back from
//! `parse_binary` + `fingerprint` (and `read_binary` for a few written to
//! disk) without panicking and within [`BOUND`].
//!
//! Every mutation is described by a recipe (`truncate to N bytes`, `write
//! u32 LE 0xffffffff at 0x30 (ELF e_shoff)`, ...) that reproduces it from
//! the fixture file alone. The random choices come from a xorshift
//! generator seeded from the fixture's name, so each run tries exactly the
//! same inputs.
//!
//! This complements `fuzz/` (cargo-fuzz, run by hand): a short,
//! fixed sweep that runs in every `cargo test`. Inputs the fuzzer found
//! crashing are kept in `fuzz/regressions/` and replayed here too.
//!
//! `CAICLUST_MUTATION_VERBOSE=1` prints every recipe before running it
//! (useful when a mutation aborts the whole process, e.g. out of memory).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use caiclust_probe::{fingerprint, parse_binary, read_binary};
use caiclust_tests::{fixtures, wheel, workspace_root, SETUP_HINT};

/// Longest any single mutated input may take (parse + fingerprints), in a
/// debug build. The unmutated fixtures take well under a tenth of this.
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
}

struct Case {
    /// How to rebuild the input from the fixture file.
    recipe: String,
    edit: Edit,
    /// Also write the input to a file (with the fixture's name) and read it
    /// back with `read_binary`.
    via_file: bool,
}

/// How many mutations of each kind one fixture gets (costly fixtures get
/// fewer: a debug build parses a 25 MB OpenBLAS in tens of milliseconds).
#[derive(Clone, Copy)]
struct Plan {
    /// Random truncation points beyond the systematic ones.
    truncations: usize,
    field_writes: usize,
    flips_first_4k: usize,
    region_flips: usize,
    random_words: usize,
}

const CHEAP: Plan = Plan {
    truncations: 48,
    field_writes: 600,
    flips_first_4k: 160,
    region_flips: 320,
    random_words: 96,
};

const COSTLY: Plan = Plan {
    truncations: 8,
    field_writes: 60,
    flips_first_4k: 16,
    region_flips: 32,
    random_words: 12,
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

    // Truncations: every length through the first bytes, a sweep through
    // the headers, the edges of every table, the classic half and minus
    // one, and a few random ones.
    let mut lens: Vec<usize> = (0..=n.min(160)).collect();
    let header_end = l.header_end.max(64).min(n);
    let step = (header_end / 96).max(1);
    lens.extend((0..=header_end).step_by(step));
    for &(start, len, _) in &l.regions {
        for p in [
            start,
            start + 1,
            start + len / 2,
            start + len - 1,
            start + len,
        ] {
            lens.push(p);
        }
    }
    lens.extend([
        n / 4,
        n / 2,
        3 * n / 4,
        n.saturating_sub(1),
        n.saturating_sub(8),
    ]);
    for _ in 0..plan.truncations {
        lens.push(rng.below(n + 1));
    }
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
// Running the API under catch_unwind and a time bound.

thread_local! {
    /// Set while the worker calls the API: the hook records instead of printing.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic hook that, on the worker threads, records the message and the
/// location (the parser's `file:line`) instead of printing it; on any other
/// thread it prints as usual.
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
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}\n      at {at}")));
            } else {
                default(info);
            }
        }));
    });
}

/// Outcome of one input.
enum Outcome {
    Parsed,
    Rejected,
    Panicked(String),
}

/// `parse_binary` (or `read_binary`) then `fingerprint` with every name.
fn exercise(input: &[u8], via_file: Option<&Path>) -> Outcome {
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
                true
            }
            Err(_) => false,
        }
    }));
    CATCHING.with(|c| c.set(false));
    match result {
        Ok(true) => Outcome::Parsed,
        Ok(false) => Outcome::Rejected,
        Err(_) => Outcome::Panicked(
            LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "panic (no message recorded)".to_owned()),
        ),
    }
}

enum Msg {
    Start(usize),
    Done(usize, Outcome, Duration),
}

/// Runs every case on a worker thread, each bounded by [`BOUND`]. Returns
/// the failures (recipe + panic message, or the time it took).
fn run_cases(label: &str, path: &Path, base: Arc<Vec<u8>>, cases: Vec<Case>) -> Vec<String> {
    install_panic_hook();
    let verbose = std::env::var_os("CAICLUST_MUTATION_VERBOSE").is_some_and(|v| v == "1");
    let recipes: Vec<(String, bool)> = cases
        .iter()
        .map(|c| (c.recipe.clone(), c.via_file))
        .collect();
    let file_name = path
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_else(|| "input".into());
    let (tx, rx) = mpsc::channel();
    let worker_base = Arc::clone(&base);
    std::thread::Builder::new()
        .name(format!("mutate {label}"))
        .spawn(move || {
            let base = worker_base;
            let dir = tempfile::tempdir().expect("temp dir");
            let file = dir.path().join(&file_name);
            let mut work: Vec<u8> = base.as_ref().clone();
            for (i, case) in cases.iter().enumerate() {
                let input: Cow<'_, [u8]> = match &case.edit {
                    Edit::Truncate(len) => Cow::Borrowed(&base[..*len]),
                    Edit::Patch(writes) => {
                        for (at, bytes) in writes {
                            work[*at..*at + bytes.len()].copy_from_slice(bytes);
                        }
                        Cow::Borrowed(&work[..])
                    }
                };
                if case.via_file {
                    std::fs::write(&file, &input).expect("write mutated file");
                }
                if tx.send(Msg::Start(i)).is_err() {
                    return;
                }
                let t = Instant::now();
                let outcome = exercise(&input, case.via_file.then_some(file.as_path()));
                let took = t.elapsed();
                drop(input);
                if let Edit::Patch(writes) = &case.edit {
                    for (at, bytes) in writes {
                        let end = *at + bytes.len();
                        work[*at..end].copy_from_slice(&base[*at..end]);
                    }
                }
                if tx.send(Msg::Done(i, outcome, took)).is_err() {
                    return;
                }
            }
        })
        .expect("spawn worker");

    let started = Instant::now();
    let (mut parsed, mut rejected) = (0usize, 0usize);
    let mut slowest = (Duration::ZERO, String::new());
    let mut failures = Vec::new();
    let mut done = 0;
    let context = |i: usize| {
        let (recipe, via_file) = &recipes[i];
        let how = if *via_file {
            "read_binary (file)"
        } else {
            "parse_binary"
        };
        format!("{label} [{}]: {recipe} [{how}]", path.display())
    };
    loop {
        let i = match rx.recv() {
            Ok(Msg::Start(i)) => i,
            Ok(Msg::Done(..)) => unreachable!("Done before Start"),
            Err(_) => break,
        };
        if verbose {
            eprintln!("mutation {i}: {}", context(i));
        }
        match rx.recv_timeout(BOUND) {
            Ok(Msg::Done(j, outcome, took)) => {
                assert_eq!(i, j);
                done += 1;
                if took > slowest.0 {
                    slowest = (took, recipes[i].0.clone());
                }
                match outcome {
                    Outcome::Parsed => parsed += 1,
                    Outcome::Rejected => rejected += 1,
                    Outcome::Panicked(msg) => {
                        failures.push(format!("PANIC {}\n      {msg}", context(i)))
                    }
                }
                if took > BOUND {
                    failures.push(format!("SLOW ({took:?} > {BOUND:?}) {}", context(i)));
                }
            }
            Ok(Msg::Start(_)) => unreachable!("Start before Done"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The worker is stuck in the parser: report and give up on
                // this fixture (the thread is abandoned).
                failures.push(format!(
                    "TIMEOUT (still running after {BOUND:?}) {}",
                    context(i)
                ));
                return failures;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failures.push(format!("worker died during {}", context(i)));
                return failures;
            }
        }
    }
    assert_eq!(done, recipes.len(), "{label}: not every mutation ran");
    eprintln!(
        "{label}: {done} mutations in {:.2?} ({parsed} parsed, {rejected} rejected, {} failed); \
         slowest {:.2?}: {}",
        started.elapsed(),
        failures.len(),
        slowest.0,
        slowest.1
    );
    failures
}

/// Mutates the fixture at `path` and checks every mutation.
fn check_fixture(label: &str, path: &Path, plan: Plan) {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}; {SETUP_HINT}", path.display()));
    // The unmutated file must parse: otherwise the mutations test nothing.
    let t = Instant::now();
    let info = parse_binary(&bytes)
        .unwrap_or_else(|e| panic!("unmutated {} does not parse: {e}", path.display()));
    assert!(
        t.elapsed() < BOUND / 4,
        "{label}: the unmutated file already takes {:?}",
        t.elapsed()
    );
    assert!(!info.architectures.is_empty(), "{label}");
    let all = cases(&bytes, label, plan);
    let failures = run_cases(label, path, Arc::new(bytes), all);
    assert!(
        failures.is_empty(),
        "{label}: {} mutation(s) of {} panicked or took too long (each recipe rebuilds \
         the input from that file):\n{}",
        failures.len(),
        path.display(),
        failures.join("\n")
    );
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

// ---------------------------------------------------------------------------
// The fixtures.

#[test]
fn mutated_numpy_openblas_elf() {
    let dir = fixtures().venv_pypi_site_packages().join("numpy.libs");
    let path = find(&dir, "libscipy_openblas");
    check_fixture("numpy.libs OpenBLAS (ELF)", &path, COSTLY);
}

#[test]
fn mutated_scipy_openblas_elf() {
    let dir = fixtures().venv_pypi_site_packages().join("scipy.libs");
    let path = find(&dir, "libscipy_openblas");
    check_fixture("scipy.libs OpenBLAS (ELF)", &path, COSTLY);
}

#[test]
fn mutated_libgomp_elf() {
    let dir = fixtures()
        .venv_pypi_site_packages()
        .join("scikit_learn.libs");
    let path = find(&dir, "libgomp");
    check_fixture("scikit_learn.libs libgomp (ELF)", &path, CHEAP);
}

#[test]
fn mutated_vcomp140_pe() {
    let path = fixtures()
        .wheel(wheel::SKLEARN_WIN_AMD64)
        .join("sklearn/.libs/vcomp140.dll");
    check_fixture("vcomp140.dll (PE)", &path, CHEAP);
}

#[test]
fn mutated_libomp_macho() {
    let path = fixtures()
        .wheel(wheel::SKLEARN_MACOS_ARM64)
        .join("sklearn/.dylibs/libomp.dylib");
    check_fixture("libomp.dylib (Mach-O arm64)", &path, CHEAP);
}

#[test]
fn mutated_markupsafe_fat_macho() {
    let dir = fixtures()
        .wheel(wheel::MARKUPSAFE_MACOS_UNIVERSAL2)
        .join("markupsafe");
    let path = find(&dir, "_speedups.cpython-");
    check_fixture("MarkupSafe _speedups (fat Mach-O)", &path, CHEAP);
}

#[test]
fn mutated_current_exe() {
    let path = std::env::current_exe().expect("current exe");
    check_fixture("this test executable", &path, COSTLY);
}

/// Inputs the fuzzer (`fuzz/`) found crashing; each must now be handled.
#[test]
fn fuzz_regressions_do_not_panic() {
    install_panic_hook();
    let dir = workspace_root().join("fuzz/regressions");
    let mut failures = Vec::new();
    let mut seen = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries.into_iter().filter(|p| p.is_file()) {
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        seen += 1;
        let bytes = std::fs::read(&path).expect("read regression input");
        let t = Instant::now();
        if let Outcome::Panicked(msg) = exercise(&bytes, None) {
            failures.push(format!("PANIC {}\n      {msg}", path.display()));
        }
        if t.elapsed() > BOUND {
            failures.push(format!("SLOW ({:?}) {}", t.elapsed(), path.display()));
        }
    }
    eprintln!(
        "{seen} fuzz regression inputs replayed from {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "fuzz/regressions inputs still fail:\n{}",
        failures.join("\n")
    );
}
