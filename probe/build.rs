//! Build fingerprint of the probe's source: a 64-bit FNV-1a hash over the
//! relative path and contents of every file under `src`, in sorted order,
//! exported as `CAICLUST_PROBE_SOURCE_HASH`. The scan cache puts it in its
//! key, so a result cached by another build of the scanner never hits.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=src");
    let root = Path::new("src");
    let mut files = Vec::new();
    list_files(root, &mut files)?;
    files.sort();
    let mut hash = FNV_OFFSET;
    for file in &files {
        let relative = file.strip_prefix(root).unwrap_or(file);
        let name: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        // Separators make "ab" + "c" differ from "a" + "bc".
        hash = fnv1a(hash, name.join("/").as_bytes());
        hash = fnv1a(hash, &[0]);
        hash = fnv1a(hash, &fs::read(file)?);
        hash = fnv1a(hash, &[0]);
    }
    println!("cargo:rustc-env=CAICLUST_PROBE_SOURCE_HASH={hash:016x}");
    Ok(())
}

/// Every file below `dir`, recursively (symlinks followed).
fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    hash
}
