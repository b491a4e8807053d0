//! Reading the structure of the (unmutated) fixture, by hand: just enough
//! to know where the header fields, tables and load commands are (ELF,
//! Mach-O, fat, PE), so that mutations hit what the parser walks.

pub(crate) fn rd(b: &[u8], at: usize, width: usize, big_endian: bool) -> Option<u64> {
    let s = b.get(at..at.checked_add(width)?)?;
    let mut v = 0u64;
    for i in 0..width {
        let byte = if big_endian { s[i] } else { s[width - 1 - i] };
        v = (v << 8) | u64::from(byte);
    }
    Some(v)
}

pub(crate) fn rd16(b: &[u8], at: usize) -> Option<usize> {
    rd(b, at, 2, false).map(|v| v as usize)
}

pub(crate) fn rd32(b: &[u8], at: usize) -> Option<usize> {
    rd(b, at, 4, false).and_then(|v| usize::try_from(v).ok())
}

pub(crate) fn rd64(b: &[u8], at: usize) -> Option<usize> {
    rd(b, at, 8, false).and_then(|v| usize::try_from(v).ok())
}

/// A header field worth overwriting.
#[derive(Clone)]
pub(crate) struct Field {
    pub(crate) at: usize,
    pub(crate) width: usize,
    pub(crate) big_endian: bool,
    pub(crate) name: String,
}

/// Where the parser looks, in one fixture.
#[derive(Default)]
pub(crate) struct Layout {
    pub(crate) fields: Vec<Field>,
    /// (start, length, name) of tables and commands to flip bytes in.
    pub(crate) regions: Vec<(usize, usize, String)>,
    /// End of the headers (ELF program headers, Mach-O load commands, PE
    /// section table): every truncation point below it is interesting.
    pub(crate) header_end: usize,
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

pub(crate) fn layout(b: &[u8]) -> Layout {
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
pub(crate) fn elf64_layout(b: &[u8]) -> Layout {
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
pub(crate) fn macho64_layout(b: &[u8], base: usize, tag: &str, l: &mut Layout) {
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
pub(crate) fn fat_layout(b: &[u8]) -> Layout {
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
pub(crate) fn pe_layout(b: &[u8]) -> Layout {
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
