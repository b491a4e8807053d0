//! Where the PE headers put the section table, and what it says, checked
//! against the PE format before goblin reads the sections and walks the
//! tables they map.
//!
//! goblin reads the section table at the end of the optional header, as
//! `SizeOfOptionalHeader` says, whatever that value. A wrong one (`1`,
//! `0x8080`, `0xffff`) makes it read sections out of code or data: their
//! garbage addresses and sizes then map the real export and import
//! directories onto garbage, which goblin walks entry by entry to the end
//! of the file, for every garbage descriptor. That is hundreds of
//! thousands of exports or millions of imports and tens of seconds on a
//! 20-90 MB DLL (see `finding_pe_optional_header_size_*` in
//! `tests/tests/fuzz_mutations.rs`). A value that still puts the table in
//! the headers, a few bytes off, reads shifted sections: seconds more.

/// Offset of `e_lfanew` (the PE header's offset) in the DOS header.
const E_LFANEW: usize = 0x3c;
/// The `PE\0\0` signature and the COFF file header.
const SIGNATURE_AND_COFF: usize = 4 + 20;
/// One section header.
const SECTION_HEADER: usize = 40;
/// One data directory (RVA, size).
const DATA_DIRECTORY: usize = 8;
/// Most data directories (goblin refuses more).
const MAX_DATA_DIRECTORIES: usize = 16;
/// `SizeOfHeaders`, at the same offset in both optional header kinds.
const SIZE_OF_HEADERS_AT: usize = 60;
/// Optional header magics and the size of their fields before the data
/// directories (the last of them is `NumberOfRvaAndSizes`).
const PE32: (u16, usize) = (0x10b, 96);
const PE32_PLUS: (u16, usize) = (0x20b, 112);

/// Checks that the section table lies where the PE format puts it: the
/// optional header holds at least the fields its magic announces and its
/// `NumberOfRvaAndSizes` data directories (which goblin reads), and the
/// section table after it ends within `SizeOfHeaders` ("the combined size
/// of an MS-DOS stub, PE header, and section headers", PE format
/// specification) and within the file; then that its sections come in
/// ascending, non-overlapping virtual addresses ("adjacent, in ascending
/// order", ibid.) with their raw data inside the file. Every toolchain's
/// PE satisfies this (all 453 PE files of the test fixtures and builds
/// do); the error says which rule a file breaks. Headers too short to read
/// are left to goblin, which reports them.
pub(super) fn check_section_table(bytes: &[u8]) -> Result<(), String> {
    let Some(pe) = u32_at(bytes, E_LFANEW).and_then(|v| usize::try_from(v).ok()) else {
        return Ok(());
    };
    let Some(coff) = pe.checked_add(4) else {
        return Ok(());
    };
    let Some(opt) = pe.checked_add(SIGNATURE_AND_COFF) else {
        return Ok(());
    };
    let (Some(sections), Some(opt_size)) = (u16_at(bytes, coff + 2), u16_at(bytes, coff + 16))
    else {
        return Ok(());
    };
    let Some(magic) = u16_at(bytes, opt) else {
        return Ok(());
    };
    let fixed = match magic {
        m if m == PE32.0 => PE32.1,
        m if m == PE32_PLUS.0 => PE32_PLUS.1,
        // goblin rejects other magics itself.
        _ => return Ok(()),
    };
    let Some(directories) = u32_at(bytes, opt + fixed - 4) else {
        return Ok(());
    };
    let directories = usize::try_from(directories)
        .unwrap_or(usize::MAX)
        .min(MAX_DATA_DIRECTORIES);
    let needed = fixed + DATA_DIRECTORY * directories;
    let opt_size = usize::from(opt_size);
    if opt_size < needed {
        return Err(format!(
            "SizeOfOptionalHeader {opt_size:#x} is smaller than the {needed:#x} bytes of a \
             {} optional header with {directories} data directories",
            if magic == PE32.0 { "PE32" } else { "PE32+" }
        ));
    }
    let Some(size_of_headers) = u32_at(bytes, opt + SIZE_OF_HEADERS_AT) else {
        return Ok(());
    };
    let start = opt + opt_size;
    let end = start + SECTION_HEADER * usize::from(sections);
    let limit = usize::try_from(size_of_headers)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    if end > limit {
        return Err(format!(
            "the section table ({start:#x}..{end:#x}, after SizeOfOptionalHeader \
             {opt_size:#x}) ends beyond SizeOfHeaders {size_of_headers:#x} or the file \
             ({:#x} bytes)",
            bytes.len()
        ));
    }
    check_sections(bytes, start, usize::from(sections))
}

/// The `count` section headers at `table` (inside `bytes`): ascending,
/// non-overlapping virtual ranges (a `VirtualSize` of 0 counts as 1),
/// raw data inside the file.
fn check_sections(bytes: &[u8], table: usize, count: usize) -> Result<(), String> {
    let mut next_free = 0u64;
    for i in 0..count {
        let at = table + SECTION_HEADER * i;
        let field = |offset: usize| u32_at(bytes, at + offset).map(u64::from);
        let (Some(vsize), Some(va), Some(raw_size), Some(raw_at)) =
            (field(8), field(12), field(16), field(20))
        else {
            return Err(format!("section header {i} at {at:#x} is cut off"));
        };
        if va < next_free {
            return Err(format!(
                "section {i}'s VirtualAddress {va:#x} is below the end of the section \
                 before ({next_free:#x}): sections must ascend without overlapping"
            ));
        }
        next_free = va + vsize.max(1);
        if raw_size > 0 && raw_at + raw_size > bytes.len() as u64 {
            return Err(format!(
                "section {i}'s raw data ({raw_at:#x}, {raw_size:#x} bytes) runs past the end \
                 of the file ({:#x} bytes)",
                bytes.len()
            ));
        }
    }
    Ok(())
}

/// The little-endian `u16` at `at`, if the bytes are there.
fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// The little-endian `u32` at `at`, if the bytes are there.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PE32+ header with `sections` sections, `SizeOfOptionalHeader`
    /// `opt_size`, 16 data directories and `SizeOfHeaders` `headers`, in a
    /// file of `len` bytes; the sections have no raw data.
    fn header(sections: u16, opt_size: u16, headers: u32, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[..2].copy_from_slice(b"MZ");
        let pe = 0x80;
        b[E_LFANEW..E_LFANEW + 4].copy_from_slice(&(pe as u32).to_le_bytes());
        b[pe..pe + 4].copy_from_slice(b"PE\0\0");
        b[pe + 6..pe + 8].copy_from_slice(&sections.to_le_bytes());
        b[pe + 20..pe + 22].copy_from_slice(&opt_size.to_le_bytes());
        let opt = pe + SIGNATURE_AND_COFF;
        b[opt..opt + 2].copy_from_slice(&PE32_PLUS.0.to_le_bytes());
        b[opt + SIZE_OF_HEADERS_AT..opt + SIZE_OF_HEADERS_AT + 4]
            .copy_from_slice(&headers.to_le_bytes());
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        // Virtual-only sections, 0x1000 apart.
        let table = opt + usize::from(opt_size);
        for i in 0..usize::from(sections) {
            let at = table + SECTION_HEADER * i + 12;
            if let Some(va) = b.get_mut(at..at + 4) {
                va.copy_from_slice(&(0x1000 * (i as u32 + 1)).to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn a_linker_made_layout_passes() {
        // 0x98 + 0xf0 + 6 * 40 = 0x278, within 0x400.
        assert_eq!(check_section_table(&header(6, 0xf0, 0x400, 0x1000)), Ok(()));
        // The table may end exactly at SizeOfHeaders.
        assert_eq!(check_section_table(&header(6, 0xf0, 0x278, 0x1000)), Ok(()));
    }

    #[test]
    fn an_optional_header_too_short_for_its_magic_is_refused() {
        let e = check_section_table(&header(6, 1, 0x400, 0x1000)).expect_err("refused");
        assert!(
            e.contains("SizeOfOptionalHeader 0x1 is smaller than the 0xf0 bytes"),
            "{e}"
        );
        assert!(check_section_table(&header(6, 0, 0x400, 0x1000)).is_err());
        // The fields, but the section table over the data directories.
        assert!(check_section_table(&header(6, 0x70, 0x400, 0x1000)).is_err());
        // Fewer directories, a shorter header.
        let mut b = header(6, 0x70 + 8 * 6, 0x400, 0x1000);
        b[0x98 + 108] = 6;
        assert_eq!(check_section_table(&b), Ok(()));
    }

    #[test]
    fn a_section_table_beyond_the_headers_or_the_file_is_refused() {
        let e = check_section_table(&header(6, 0xffff, 0x400, 0x20000)).expect_err("refused");
        assert!(e.contains("beyond SizeOfHeaders 0x400"), "{e}");
        assert!(check_section_table(&header(6, 0xf0, 0x277, 0x1000)).is_err());
        // SizeOfHeaders larger than the file: the file is the limit.
        assert!(check_section_table(&header(6, 0xf0, u32::MAX, 0x270)).is_err());
        assert!(check_section_table(&header(0xffff, 0xf0, u32::MAX, 0x1000)).is_err());
    }

    /// Writes section `i` of the table made by [`header`].
    fn section(b: &mut [u8], i: usize, va: u32, vsize: u32, raw_at: u32, raw_size: u32) {
        let at = 0x98 + 0xf0 + SECTION_HEADER * i;
        for (k, v) in [vsize, va, raw_size, raw_at].into_iter().enumerate() {
            b[at + 8 + 4 * k..at + 12 + 4 * k].copy_from_slice(&v.to_le_bytes());
        }
    }

    #[test]
    fn sections_ascend_without_overlap_with_raw_data_in_the_file() {
        let mut b = header(2, 0xf0, 0x400, 0x1000);
        section(&mut b, 0, 0x1000, 0x800, 0x400, 0x800);
        section(&mut b, 1, 0x2000, 0x10, 0xc00, 0x200);
        assert_eq!(check_section_table(&b), Ok(()));
        // A virtual-only section (no raw data) may lie anywhere in the file.
        section(&mut b, 1, 0x2000, 0x10, 0xffff_0000, 0);
        assert_eq!(check_section_table(&b), Ok(()));
        section(&mut b, 1, 0x1400, 0x10, 0xc00, 0x200);
        let e = check_section_table(&b).expect_err("overlap");
        assert!(e.contains("section 1's VirtualAddress 0x1400"), "{e}");
        section(&mut b, 1, 0x2000, 0x10, 0xc00, 0x401);
        let e = check_section_table(&b).expect_err("past the end");
        assert!(
            e.contains("section 1's raw data (0xc00, 0x401 bytes)"),
            "{e}"
        );
        section(&mut b, 1, 0x2000, 0x10, u32::MAX, u32::MAX);
        assert!(check_section_table(&b).is_err());
    }

    #[test]
    fn headers_too_short_to_read_are_left_to_goblin() {
        assert_eq!(check_section_table(b"MZ"), Ok(()));
        let mut b = header(6, 0xf0, 0x400, 0x1000);
        b[E_LFANEW..E_LFANEW + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(check_section_table(&b), Ok(()));
        // An unknown magic: goblin's error.
        let mut b = header(6, 1, 0x400, 0x1000);
        b[0x98] = 0x07;
        assert_eq!(check_section_table(&b), Ok(()));
    }
}
