//! Processes carrying a test's tag (`TAG_VAR=tag`) in their environment,
//! however they were re-parented or re-grouped: what "nothing left behind"
//! assertions look for, per platform.

#[cfg(not(windows))]
#[path = "tagged/unix.rs"]
mod platform;
#[cfg(windows)]
#[path = "tagged/windows.rs"]
mod platform;

/// Live processes whose environment holds `needle`, with their command
/// lines.
pub(crate) fn processes_with(needle: &str) -> Vec<(u32, String)> {
    platform::tagged(needle)
}
