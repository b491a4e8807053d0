//! Mach-O, fat files included: load commands, exports (from the export
//! trie) and read-only data ranges.

use super::*;

pub(super) fn parse_mach(bytes: &[u8]) -> Result<(BinaryInfo, Ranges), BinaryError> {
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

pub(super) fn merge_unique(into: &mut Vec<String>, from: Vec<String>) {
    for item in from {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

pub(super) fn macho_info(
    macho: &MachO<'_>,
    bytes: &[u8],
    slice_offset: usize,
) -> (BinaryInfo, Ranges) {
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
pub(super) fn read_uleb(data: &[u8], pos: &mut usize) -> Option<u64> {
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
pub(super) fn export_trie_names(trie: &[u8]) -> Vec<String> {
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
