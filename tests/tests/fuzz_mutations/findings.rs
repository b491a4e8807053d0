//! The findings, as exact edits of fixture files: each problem the sweeps
//! or the fuzzer found, kept as one input.

use super::*;

// ---------------------------------------------------------------------------
// The findings, as exact edits of fixture files. Each locates its target by
// reading the (unmutated) structures, so it survives a new build of the
// same wheel; the recipe names the offsets it used. The comments describe
// what each input did before binary.rs was hardened (041ebfc).

/// ULEB128 at `at`: (value, length).
pub(crate) fn uleb(b: &[u8], at: usize) -> Option<(u64, usize)> {
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
pub(crate) fn macho_commands(b: &[u8], base: usize) -> Vec<(usize, usize, usize)> {
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
pub(crate) fn libomp_dyld_info(b: &[u8]) -> (usize, usize, usize, usize, usize) {
    let (p, _, _) = macho_commands(b, 0)
        .into_iter()
        .find(|&(_, cmd, _)| cmd == 0x22 || cmd == 0x8000_0022)
        .expect("libomp.dylib has LC_DYLD_INFO_ONLY");
    let r = |k| rd32(b, p + k).expect("dyld info field");
    (p, r(16), r(20), r(40), r(44))
}

/// Bind opcodes in `start..start + size`: (offset, opcode byte).
pub(crate) fn bind_opcodes(b: &[u8], start: usize, size: usize) -> Vec<(usize, u8)> {
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
pub(crate) fn trie_nodes(b: &[u8], start: usize, size: usize) -> Vec<(usize, u64, usize)> {
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
pub(crate) fn make_export_reexport() -> Suite {
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
pub(crate) fn make_bind_ordinal() -> Suite {
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
pub(crate) fn make_bind_segment() -> Suite {
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
pub(crate) fn make_bind_offset_overflow() -> Suite {
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
pub(crate) fn make_bind_repeat_count() -> Suite {
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
pub(crate) fn make_export_trie_cycle() -> Suite {
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
pub(crate) fn make_fat_arch_count() -> Suite {
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
pub(crate) fn make_elf_dynstr_unmapped() -> Suite {
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
pub(crate) fn make_elf_dynstr_size_huge() -> Suite {
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

/// PE: `SizeOfOptionalHeader` set to `value`, so goblin reads the section
/// table from the wrong place: garbage sections, through which the real
/// data directories map onto garbage that goblin walks to the end of the
/// file (`what` it walked). probe `binary/pe/headers.rs` now refuses a
/// section table the PE format does not allow.
pub(crate) fn make_pe_optional_header_size(
    path: PathBuf,
    name: &str,
    value: u16,
    what: &str,
) -> Suite {
    let b = read(&path);
    assert_eq!(&b[..2], b"MZ", "{name} is not a PE file");
    let pe = rd32(&b, 0x3c).expect("e_lfanew");
    let at = pe + 20;
    finding_suite(
        "PE SizeOfOptionalHeader moves the section table",
        path,
        format!(
            "{name}: write u16 LE {value:#x} at {at:#x} (PE COFF SizeOfOptionalHeader; was {}; \
             goblin walked {what})",
            hex(&b[at..at + 2])
        ),
        vec![(at, value.to_le_bytes().to_vec())],
    )
}
