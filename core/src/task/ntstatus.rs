//! Windows crash codes as people look them up: a process that dies of an
//! exception exits with the exception's NTSTATUS as its exit code, which
//! reads as a signed decimal (`-1073741819`) when printed as an `i32`.
//! [`exit_code_text`] shows such a code in hex with its name
//! (`0xC0000005 (STATUS_ACCESS_VIOLATION)`), from the table below of the
//! codes a crashing program ends with (values from `ntstatus.h`).

/// The common crash and load-failure NTSTATUS codes.
const NTSTATUS_NAMES: &[(u32, &str)] = &[
    (0x4001_0004, "DBG_TERMINATE_PROCESS"),
    (0x8000_0002, "STATUS_DATATYPE_MISALIGNMENT"),
    (0x8000_0003, "STATUS_BREAKPOINT"),
    (0x8000_0004, "STATUS_SINGLE_STEP"),
    (0xC000_0005, "STATUS_ACCESS_VIOLATION"),
    (0xC000_0006, "STATUS_IN_PAGE_ERROR"),
    (0xC000_0017, "STATUS_NO_MEMORY"),
    (0xC000_001D, "STATUS_ILLEGAL_INSTRUCTION"),
    (0xC000_0025, "STATUS_NONCONTINUABLE_EXCEPTION"),
    (0xC000_0026, "STATUS_INVALID_DISPOSITION"),
    (0xC000_007B, "STATUS_INVALID_IMAGE_FORMAT"),
    (0xC000_008C, "STATUS_ARRAY_BOUNDS_EXCEEDED"),
    (0xC000_008D, "STATUS_FLOAT_DENORMAL_OPERAND"),
    (0xC000_008E, "STATUS_FLOAT_DIVIDE_BY_ZERO"),
    (0xC000_008F, "STATUS_FLOAT_INEXACT_RESULT"),
    (0xC000_0090, "STATUS_FLOAT_INVALID_OPERATION"),
    (0xC000_0091, "STATUS_FLOAT_OVERFLOW"),
    (0xC000_0092, "STATUS_FLOAT_STACK_CHECK"),
    (0xC000_0093, "STATUS_FLOAT_UNDERFLOW"),
    (0xC000_0094, "STATUS_INTEGER_DIVIDE_BY_ZERO"),
    (0xC000_0095, "STATUS_INTEGER_OVERFLOW"),
    (0xC000_0096, "STATUS_PRIVILEGED_INSTRUCTION"),
    (0xC000_00FD, "STATUS_STACK_OVERFLOW"),
    (0xC000_0135, "STATUS_DLL_NOT_FOUND"),
    (0xC000_0138, "STATUS_ORDINAL_NOT_FOUND"),
    (0xC000_0139, "STATUS_ENTRYPOINT_NOT_FOUND"),
    (0xC000_013A, "STATUS_CONTROL_C_EXIT"),
    (0xC000_0142, "STATUS_DLL_INIT_FAILED"),
    (0xC000_02B4, "STATUS_FLOAT_MULTIPLE_FAULTS"),
    (0xC000_02B5, "STATUS_FLOAT_MULTIPLE_TRAPS"),
    (0xC000_0374, "STATUS_HEAP_CORRUPTION"),
    (0xC000_0409, "STATUS_STACK_BUFFER_OVERRUN"),
    (0xC000_0417, "STATUS_INVALID_CRUNTIME_PARAMETER"),
    (0xC000_0420, "STATUS_ASSERTION_FAILURE"),
    (0xC000_0602, "STATUS_FAIL_FAST_EXCEPTION"),
];

/// The name of a known NTSTATUS code (`STATUS_ACCESS_VIOLATION` for
/// `0xC0000005`).
pub fn ntstatus_name(code: u32) -> Option<&'static str> {
    NTSTATUS_NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
}

/// An exit code as text: decimal as usual (`3`, `-1`), but an NTSTATUS in
/// hex with its name when known (`0xC0000005 (STATUS_ACCESS_VIOLATION)`),
/// and any other code with the error or warning severity bits in hex
/// (`0xC0001234`). Exit codes on Unix (0 to 255, or -1 for "unknown")
/// never look like either, so this is the same on every platform.
pub fn exit_code_text(code: i32) -> String {
    let bits = code as u32;
    match ntstatus_name(bits) {
        Some(name) => format!("0x{bits:08X} ({name})"),
        None if code < -1 && bits >= 0x8000_0000 => format!("0x{bits:08X}"),
        None => code.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_codes_read_in_hex_with_their_names() {
        assert_eq!(
            exit_code_text(-1_073_741_819),
            "0xC0000005 (STATUS_ACCESS_VIOLATION)"
        );
        assert_eq!(
            exit_code_text(0xC000_0409_u32 as i32),
            "0xC0000409 (STATUS_STACK_BUFFER_OVERRUN)"
        );
        assert_eq!(exit_code_text(0xC000_1234_u32 as i32), "0xC0001234");
    }

    #[test]
    fn ordinary_codes_stay_decimal() {
        for (code, text) in [(0, "0"), (3, "3"), (255, "255"), (-1, "-1"), (126, "126")] {
            assert_eq!(exit_code_text(code), text);
        }
    }

    #[test]
    fn the_table_has_no_duplicates() {
        let mut codes: Vec<u32> = NTSTATUS_NAMES.iter().map(|(c, _)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), NTSTATUS_NAMES.len());
    }
}
