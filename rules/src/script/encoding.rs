//! Reading a script's bytes as Python does (PEP 263): UTF-8 unless the
//! first or second line declares another encoding (`# -*- coding: latin-1
//! -*-`); a UTF-8 byte-order mark is dropped, and contradicts any other
//! declaration.

use std::path::{Path, PathBuf};

use encoding_rs::Encoding;

use super::ScriptError;

/// How to turn bytes into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Utf8,
    /// ISO-8859-1: every byte is the code point of the same value.
    Latin1,
    Ascii,
    /// One of the encodings `encoding_rs` implements.
    Other(&'static Encoding),
}

/// Python's codec names and aliases (`encodings.aliases`, normalised: lower
/// case, `-` and spaces as `_`) for the ASCII-compatible encodings a
/// source file can be written in.
const ALIASES: &[(&[&str], Codec)] = &[
    (
        &[
            "utf_8",
            "utf8",
            "u8",
            "utf",
            "utf8_ucs2",
            "utf8_ucs4",
            "cp65001",
        ],
        Codec::Utf8,
    ),
    (
        &[
            "latin_1",
            "latin1",
            "latin",
            "l1",
            "iso8859_1",
            "iso_8859_1",
            "iso8859",
            "8859",
            "cp819",
            "ibm819",
            "csisolatin1",
            "iso_ir_100",
            "iso_8859_1_1987",
        ],
        Codec::Latin1,
    ),
    (
        &[
            "ascii",
            "us_ascii",
            "us",
            "646",
            "ansi_x3.4_1968",
            "ansi_x3_4_1968",
            "ansi_x3.4_1986",
            "cp367",
            "csascii",
            "ibm367",
            "iso646_us",
            "iso_646.irv_1991",
            "iso_ir_6",
        ],
        Codec::Ascii,
    ),
    (
        &["cp1250", "windows_1250"],
        Codec::Other(encoding_rs::WINDOWS_1250),
    ),
    (
        &["cp1251", "windows_1251"],
        Codec::Other(encoding_rs::WINDOWS_1251),
    ),
    (
        &["cp1252", "windows_1252"],
        Codec::Other(encoding_rs::WINDOWS_1252),
    ),
    (
        &["cp1253", "windows_1253"],
        Codec::Other(encoding_rs::WINDOWS_1253),
    ),
    (
        &["cp1254", "windows_1254"],
        Codec::Other(encoding_rs::WINDOWS_1254),
    ),
    (
        &["cp1255", "windows_1255"],
        Codec::Other(encoding_rs::WINDOWS_1255),
    ),
    (
        &["cp1256", "windows_1256"],
        Codec::Other(encoding_rs::WINDOWS_1256),
    ),
    (
        &["cp1257", "windows_1257"],
        Codec::Other(encoding_rs::WINDOWS_1257),
    ),
    (
        &["cp1258", "windows_1258"],
        Codec::Other(encoding_rs::WINDOWS_1258),
    ),
    (
        &[
            "iso8859_2",
            "iso_8859_2",
            "latin2",
            "l2",
            "csisolatin2",
            "iso_ir_101",
        ],
        Codec::Other(encoding_rs::ISO_8859_2),
    ),
    (
        &["iso8859_3", "iso_8859_3", "latin3", "l3", "iso_ir_109"],
        Codec::Other(encoding_rs::ISO_8859_3),
    ),
    (
        &["iso8859_4", "iso_8859_4", "latin4", "l4", "iso_ir_110"],
        Codec::Other(encoding_rs::ISO_8859_4),
    ),
    (
        &[
            "iso8859_5",
            "iso_8859_5",
            "cyrillic",
            "csisolatincyrillic",
            "iso_ir_144",
        ],
        Codec::Other(encoding_rs::ISO_8859_5),
    ),
    (
        &[
            "iso8859_6",
            "iso_8859_6",
            "arabic",
            "asmo_708",
            "ecma_114",
            "iso_ir_127",
        ],
        Codec::Other(encoding_rs::ISO_8859_6),
    ),
    (
        &[
            "iso8859_7",
            "iso_8859_7",
            "greek",
            "greek8",
            "elot_928",
            "iso_ir_126",
        ],
        Codec::Other(encoding_rs::ISO_8859_7),
    ),
    (
        &["iso8859_8", "iso_8859_8", "hebrew", "iso_ir_138"],
        Codec::Other(encoding_rs::ISO_8859_8),
    ),
    (
        &["iso8859_10", "iso_8859_10", "latin6", "l6", "iso_ir_157"],
        Codec::Other(encoding_rs::ISO_8859_10),
    ),
    (
        &["iso8859_13", "iso_8859_13", "latin7", "l7"],
        Codec::Other(encoding_rs::ISO_8859_13),
    ),
    (
        &["iso8859_14", "iso_8859_14", "latin8", "l8", "iso_celtic"],
        Codec::Other(encoding_rs::ISO_8859_14),
    ),
    (
        &["iso8859_15", "iso_8859_15", "latin9", "l9"],
        Codec::Other(encoding_rs::ISO_8859_15),
    ),
    (
        &["iso8859_16", "iso_8859_16", "latin10", "l10", "iso_ir_226"],
        Codec::Other(encoding_rs::ISO_8859_16),
    ),
    (&["koi8_r", "cskoi8r"], Codec::Other(encoding_rs::KOI8_R)),
    (&["koi8_u"], Codec::Other(encoding_rs::KOI8_U)),
    (
        &["cp866", "866", "ibm866"],
        Codec::Other(encoding_rs::IBM866),
    ),
    (&["cp874"], Codec::Other(encoding_rs::WINDOWS_874)),
    (
        &["mac_roman", "macroman", "macintosh"],
        Codec::Other(encoding_rs::MACINTOSH),
    ),
    (
        &["mac_cyrillic", "maccyrillic"],
        Codec::Other(encoding_rs::X_MAC_CYRILLIC),
    ),
    (
        &[
            "shift_jis",
            "shiftjis",
            "sjis",
            "s_jis",
            "csshiftjis",
            "cp932",
            "932",
            "ms932",
            "mskanji",
            "ms_kanji",
        ],
        Codec::Other(encoding_rs::SHIFT_JIS),
    ),
    (
        &["euc_jp", "eucjp", "ujis", "u_jis"],
        Codec::Other(encoding_rs::EUC_JP),
    ),
    (
        &["iso2022_jp", "iso2022jp", "iso_2022_jp", "csiso2022jp"],
        Codec::Other(encoding_rs::ISO_2022_JP),
    ),
    (
        &[
            "gb2312",
            "chinese",
            "csiso58gb231280",
            "euc_cn",
            "euccn",
            "eucgb2312_cn",
            "gb2312_1980",
            "gb2312_80",
            "iso_ir_58",
            "gbk",
            "936",
            "cp936",
            "ms936",
        ],
        Codec::Other(encoding_rs::GBK),
    ),
    (
        &["gb18030", "gb18030_2000"],
        Codec::Other(encoding_rs::GB18030),
    ),
    (
        &["big5", "big5_tw", "csbig5", "big5hkscs", "hkscs"],
        Codec::Other(encoding_rs::BIG5),
    ),
    (
        &[
            "euc_kr",
            "euckr",
            "korean",
            "ksc5601",
            "ks_c_5601",
            "ks_c_5601_1987",
            "ksx1001",
            "ks_x_1001",
            "cp949",
            "949",
            "ms949",
            "uhc",
        ],
        Codec::Other(encoding_rs::EUC_KR),
    ),
];

/// Encodings Python knows but cannot read source in: the tokenizer needs
/// an ASCII-compatible encoding.
const NOT_ASCII_COMPATIBLE: &[&str] = &[
    "utf_16",
    "utf16",
    "utf_16_le",
    "utf_16le",
    "utf_16_be",
    "utf_16be",
    "u16",
    "utf_32",
    "utf32",
    "utf_32_le",
    "utf_32le",
    "utf_32_be",
    "utf_32be",
    "u32",
    "utf_7",
    "utf7",
    "u7",
    "unicode_1_1_utf_7",
    "cp037",
    "cp500",
    "cp1140",
];

/// Python's own shortcut (`get_normal_name` in the tokenizer), then its
/// codec-name normalisation.
fn normalise(name: &str) -> String {
    let lower = name.to_ascii_lowercase().replace('_', "-");
    let shortcut = if lower == "utf-8" || lower.starts_with("utf-8-") {
        "utf-8".to_string()
    } else if ["latin-1", "iso-8859-1", "iso-latin-1"]
        .iter()
        .any(|p| lower == *p || lower.starts_with(&format!("{p}-")))
    {
        "iso-8859-1".to_string()
    } else {
        lower
    };
    let mut out = String::with_capacity(shortcut.len());
    let mut gap = false;
    for c in shortcut.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            if gap && !out.is_empty() {
                out.push('_');
            }
            out.push(c);
            gap = false;
        } else {
            gap = true;
        }
    }
    out
}

fn lookup(name: &str) -> Result<Codec, String> {
    let key = normalise(name);
    if let Some((_, codec)) = ALIASES
        .iter()
        .find(|(names, _)| names.contains(&key.as_str()))
    {
        return Ok(*codec);
    }
    if NOT_ASCII_COMPATIBLE.contains(&key.as_str()) {
        return Err(format!(
            "'{name}' is not an encoding Python source can be written in (it is not ASCII-compatible)"
        ));
    }
    Err(format!("unknown encoding '{name}'"))
}

/// A coding declaration found in the first two lines.
struct Declaration {
    name: String,
    line: usize,
}

/// The PEP 263 declaration: a comment on line 1, or on line 2 when line 1
/// is blank or a comment, matching `coding[:=][ \t]*([-\w.]+)`.
fn declaration(bytes: &[u8]) -> Option<Declaration> {
    let mut lines = bytes.split(|&b| b == b'\n');
    for line_no in 1..=2 {
        let line = lines.next()?;
        let trimmed: &[u8] = {
            let start = line
                .iter()
                .position(|&b| !matches!(b, b' ' | b'\t' | b'\x0c'))
                .unwrap_or(line.len());
            &line[start..]
        };
        if trimmed.first() == Some(&b'#') {
            if let Some(name) = cookie(trimmed) {
                return Some(Declaration {
                    name,
                    line: line_no,
                });
            }
        } else if !trimmed.is_empty() && trimmed != b"\r" {
            // Code on line 1: line 2 cannot declare anything.
            return None;
        }
    }
    None
}

/// `coding[:=][ \t]*([-\w.]+)` anywhere in a comment line.
fn cookie(line: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(pos) = find(&line[from..], b"coding") {
        let mut i = from + pos + b"coding".len();
        from = from + pos + 1;
        if !matches!(line.get(i), Some(b':' | b'=')) {
            continue;
        }
        i += 1;
        while matches!(line.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        let start = i;
        while line
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            i += 1;
        }
        if i > start {
            return Some(String::from_utf8_lossy(&line[start..i]).into_owned());
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decode a script's bytes the way Python reads source.
pub(crate) fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, ScriptError> {
    let (bytes, bom) = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (rest.to_vec(), true),
        None => (bytes, false),
    };
    let declared = declaration(&bytes);
    let (codec, declared_name) = match &declared {
        None => (Codec::Utf8, None),
        Some(d) => {
            let codec = lookup(&d.name).map_err(|message| ScriptError::Coding {
                path: PathBuf::from(path),
                line: d.line,
                message,
            })?;
            if bom && codec != Codec::Utf8 {
                return Err(ScriptError::Coding {
                    path: PathBuf::from(path),
                    line: d.line,
                    message: format!(
                        "the file starts with a UTF-8 byte-order mark but declares '{}'",
                        d.name
                    ),
                });
            }
            (codec, Some(d.name.clone()))
        }
    };
    let bad = |offset: usize, decoded_prefix: &str| {
        let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        let column = decoded_prefix
            .rsplit('\n')
            .next()
            .unwrap_or("")
            .chars()
            .count()
            + 1;
        ScriptError::Decode {
            path: PathBuf::from(path),
            line,
            column,
            encoding: declared_name.clone(),
        }
    };
    match codec {
        Codec::Utf8 => String::from_utf8(bytes.clone()).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            // The valid prefix is UTF-8 by definition.
            let prefix = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
            bad(offset, prefix)
        }),
        Codec::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        Codec::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
            None => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            Some(offset) => {
                let prefix: String = bytes[..offset].iter().map(|&b| char::from(b)).collect();
                Err(bad(offset, &prefix))
            }
        },
        Codec::Other(encoding) => {
            let mut decoder = encoding.new_decoder_without_bom_handling();
            let mut out = String::with_capacity(
                decoder
                    .max_utf8_buffer_length_without_replacement(bytes.len())
                    .unwrap_or(bytes.len() * 3),
            );
            let (result, read) =
                decoder.decode_to_string_without_replacement(&bytes, &mut out, true);
            match result {
                encoding_rs::DecoderResult::InputEmpty => Ok(out),
                encoding_rs::DecoderResult::Malformed(len, after) => {
                    let offset = read.saturating_sub(len as usize + after as usize);
                    Err(bad(offset, &out))
                }
                // The buffer was sized for the worst case.
                encoding_rs::DecoderResult::OutputFull => Err(bad(read, &out)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> Result<String, ScriptError> {
        decode(Path::new("x.py"), bytes.to_vec())
    }

    #[test]
    fn declarations_follow_pep_263() {
        assert_eq!(
            text(b"# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n").unwrap(),
            "# -*- coding: latin-1 -*-\nname = 'caf\u{e9}'\n"
        );
        // Line 2, after a shebang; vim's form.
        assert!(
            text(b"#!/usr/bin/env python\n# vim: set fileencoding=cp1252 :\nx = '\x80'\n")
                .unwrap()
                .contains('\u{20ac}')
        );
        // Code on line 1: a cookie on line 2 is not a declaration.
        let e = text(b"x = 1\n# coding: latin-1\ny = '\xe9'\n").unwrap_err();
        assert!(matches!(e, ScriptError::Decode { line: 3, .. }), "{e:?}");
        // Python's shortcut names and aliases.
        for name in [
            "UTF-8",
            "utf_8",
            "utf-8-unix",
            "L1",
            "iso-latin-1-unix",
            "ISO_8859-15",
            "euc-jp",
            "Shift_JIS",
            "windows-1251",
        ] {
            let src = format!("# coding: {name}\nx = 1\n");
            assert!(text(src.as_bytes()).is_ok(), "{name}");
        }
    }

    #[test]
    fn bad_declarations_name_the_file_and_line() {
        let e = text(b"#!/usr/bin/python\n# coding: klingon\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.py:2: bad coding declaration: unknown encoding 'klingon'"
        );
        let e = text(b"# coding: utf-16\n").unwrap_err();
        assert!(e.to_string().contains("not ASCII-compatible"), "{e}");
        let e = text(b"\xEF\xBB\xBF# coding: latin-1\n").unwrap_err();
        assert!(e.to_string().contains("byte-order mark"), "{e}");
        // A BOM with a UTF-8 declaration is fine, and dropped.
        assert_eq!(
            text(b"\xEF\xBB\xBF# coding: utf-8\nx\n").unwrap(),
            "# coding: utf-8\nx\n"
        );
    }

    #[test]
    fn undecodable_bytes_are_located() {
        let e = text(b"a = 1\nb = '\xff'\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.py:2:6: not valid UTF-8 text (Python reads source as UTF-8 unless a `# -*- coding: NAME -*-` comment on line 1 or 2 says otherwise)"
        );
        let e = text(b"# coding: ascii\nb = '\xe9'\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.py:2:6: not valid ascii text, the encoding the file declares"
        );
        // Shift_JIS: a lead byte with no trail byte.
        let e = text(b"# coding: shift_jis\nok = 1\nb = '\x82'\n").unwrap_err();
        assert!(
            matches!(
                e,
                ScriptError::Decode {
                    line: 3,
                    column: 6,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
