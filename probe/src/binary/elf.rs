//! ELF: the dynamic section, dynamic symbols, version needs, identification
//! sections and read-only data ranges.

use super::*;

/// Read what the loader and the fingerprints need from an ELF file: the
/// dynamic section, the dynamic symbols, version needs and the read-only
/// data ranges. The static symbol table, relocations and debug sections are
/// never touched, so a large unstripped library costs no more than a
/// stripped one. Tables that would extend past the end of the file are
/// refused: a real library never has one.
pub(super) fn parse_elf(bytes: &[u8]) -> Result<(BinaryInfo, Ranges), BinaryError> {
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
        if sym.st_shndx != goblin::elf::section_header::SHN_UNDEF as usize
            && info.constant_returns.is_empty()
        {
            if let Some(name) = cstr_at(dynstr, sym.st_name).filter(|n| reads_constant(n)) {
                let code = code_at(bytes, &phdrs, sym.st_value);
                if let Some(value) = code.and_then(|c| constant_return(c, header.e_machine)) {
                    info.constant_returns.push((name.to_owned(), value));
                }
            }
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

/// Exports whose constant return value is read (see
/// [`BinaryInfo::constant_returns`]).
fn reads_constant(name: &str) -> bool {
    name.contains("openblas_get_parallel")
}

/// Up to 16 bytes of code at the virtual address `vaddr`, through the
/// loadable segment that maps it.
pub(super) fn code_at<'a>(
    bytes: &'a [u8],
    phdrs: &[goblin::elf::program_header::ProgramHeader],
    vaddr: u64,
) -> Option<&'a [u8]> {
    let seg = phdrs.iter().find(|ph| {
        ph.p_type == goblin::elf::program_header::PT_LOAD
            && vaddr >= ph.p_vaddr
            && vaddr < ph.p_vaddr.saturating_add(ph.p_filesz)
    })?;
    let start = usize::try_from(vaddr - seg.p_vaddr + seg.p_offset).ok()?;
    let end = bytes.len().min(start.checked_add(16)?);
    bytes.get(start..end)
}

/// The constant a function returns when its whole body is `return N;`:
/// x86-64 `xor eax,eax; ret` or `mov eax,imm32; ret` (after an optional
/// `endbr64`); AArch64 `mov w0,#imm16; ret` (after an optional `bti c`).
pub(super) fn constant_return(code: &[u8], machine: u16) -> Option<i64> {
    use goblin::elf::header::{EM_AARCH64, EM_X86_64};
    match machine {
        EM_X86_64 => {
            let code = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa]).unwrap_or(code);
            match code {
                [0x31 | 0x33, 0xc0, 0xc3, ..] => Some(0),
                [0xb8, a, b, c, d, 0xc3, ..] => {
                    Some(i64::from(i32::from_le_bytes([*a, *b, *c, *d])))
                }
                _ => None,
            }
        }
        EM_AARCH64 => {
            let words: Vec<u32> = code
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            let words = words.strip_prefix(&[0xd503_245f]).unwrap_or(&words);
            match words {
                [mov, 0xd65f_03c0, ..] if mov & 0xffe0_001f == 0x5280_0000 => {
                    Some(i64::from((mov >> 5) & 0xffff))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The bytes of a section, or `None` when its range is not in the file.
pub(super) fn section_bytes(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    bytes.get(start..end).filter(|d| !d.is_empty())
}

/// The printable NUL-terminated strings of a section such as `.comment`,
/// each at most [`MAX_MARKER_LEN`] bytes, at most [`MAX_ID_STRINGS`] of
/// them, without repeats.
pub(super) fn nul_separated_strings(data: &[u8]) -> Vec<String> {
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
pub(super) fn compiler_notes(data: &[u8]) -> Vec<String> {
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

pub(super) fn push_range(ranges: &mut Ranges, offset: u64, size: u64, len: usize) {
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
pub(super) fn split_paths(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(':'))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn elf_machine_name(machine: u16) -> String {
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
