//! Fuzz target: `parse_binary` on arbitrary bytes, then `fingerprint` with
//! a few file names that switch on different fingerprint rules. Any panic,
//! abort, out-of-memory or timeout is a bug (parsing promises to turn every
//! malformed input into a `BinaryError`).

#![no_main]

use libfuzzer_sys::fuzz_target;

/// File names that select different rules: an OpenBLAS soname, an OpenCV
/// extension module and MSVC's OpenMP runtime.
const NAMES: &[&str] = &["libopenblas.so.0", "cv2.abi3.so", "vcomp140.dll"];

fuzz_target!(|data: &[u8]| {
    match caiclust_probe::parse_binary(data) {
        Ok(info) => {
            for name in NAMES {
                let _ = caiclust_probe::fingerprint(name, &info);
            }
        }
        // The probe contains parser panics; for the fuzzer they are still
        // crashes to find.
        Err(e @ caiclust_probe::BinaryError::ParserPanic { .. }) => panic!("{e}"),
        Err(_) => {}
    }
});
