//! PE: imports, exports, the version resource and read-only data ranges.

mod headers;

use super::*;

pub(super) fn parse_pe(bytes: &[u8]) -> Result<(BinaryInfo, Ranges), BinaryError> {
    // goblin trusts SizeOfOptionalHeader to find the section table; a
    // wrong one turns code into sections and costs minutes (headers.rs).
    headers::check_section_table(bytes).map_err(|e| malformed(BinaryFormat::Pe, e))?;
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
pub(super) fn fixed_file_version(rsrc: &[u8]) -> Option<String> {
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
