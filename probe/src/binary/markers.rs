//! Marker strings searched for in read-only data: versions, build
//! configurations and threading layers that runtimes write into themselves.

use super::*;

pub(super) fn find_markers(
    bytes: &[u8],
    rodata: &Ranges,
    file_name: &str,
    exports: &[String],
) -> Vec<String> {
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
pub(super) fn config_from_immediates(bytes: &[u8]) -> Option<String> {
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
pub(super) fn extract_string(hay: &[u8], pos: usize, to_line_end: bool) -> Option<String> {
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
