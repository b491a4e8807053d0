//! Acceptance: bad input never panics, and each bad file is reported as
//! skipped with a reason while the scan goes on: truncated, corrupted and
//! non-binary files named like libraries, unreadable folders, symlink
//! loops, a FIFO, a dangling link and a 1 GB sparse file.
//!
//! The hostile tree (FIFO, Unix permissions, symlinks, `setpriv`) is built
//! on Unix only; the input errors are checked everywhere.

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
#[cfg(unix)]
use std::path::{Path, PathBuf};
use std::process::Command;
#[cfg(unix)]
use std::time::{Duration, Instant};

use caiclust_core::probe::Facts;
#[cfg(unix)]
use caiclust_core::probe::Vendor;

fn caiclust() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caiclust"))
}

#[cfg(unix)]
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[cfg(unix)]
/// A real library to prove the scan carries on past the bad ones.
fn real_libgomp() -> PathBuf {
    let fx = caiclust_tests::fixtures();
    let dir = fx.venv_pypi_site_packages().join("scikit_learn.libs");
    std::fs::read_dir(&dir)
        .expect("scikit_learn.libs")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libgomp"))
        })
        .expect("libgomp in the venv")
}

#[cfg(unix)]
/// Run a command, killing it (and failing) if it outlives `limit`: a hang
/// must fail the test, not stall the suite.
fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = Vec::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_end(&mut stderr);
            }
            return std::process::Output {
                status,
                stdout: reader.join().unwrap_or_default(),
                stderr,
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("caiclust did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
fn build_hostile_tree(root: &Path) {
    let real = std::fs::read(real_libgomp()).expect("read libgomp");
    let pkg = root.join("pkg");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    std::fs::write(pkg.join("libgomp.so.1"), &real).expect("write");
    // Truncated: the ELF header and a little more.
    std::fs::write(pkg.join("libtruncated.so"), &real[..200]).expect("write");
    // Corrupted: valid magic, headers overwritten.
    let mut corrupt = real.clone();
    for b in corrupt.iter_mut().skip(4).take(4096) {
        *b = 0xff;
    }
    std::fs::write(pkg.join("libcorrupt.so"), &corrupt).expect("write");
    std::fs::write(pkg.join("libopenblas.so.0"), b"this is not a library\n").expect("write");
    std::fs::write(pkg.join("libempty.so"), b"").expect("write");
    // A 1 GB sparse file named like a library, and one with an ELF magic.
    let sparse = std::fs::File::create(pkg.join("libhuge.so")).expect("create");
    sparse.set_len(1 << 30).expect("set_len");
    let mut elf_sparse = std::fs::File::create(pkg.join("libhuge-elf.so")).expect("create");
    std::io::Write::write_all(&mut elf_sparse, &real[..64]).expect("write");
    elf_sparse.set_len(1 << 30).expect("set_len");
    // Symlink loops: two files pointing at each other, and a folder loop.
    std::os::unix::fs::symlink("libloop-b.so", pkg.join("libloop-a.so")).expect("symlink");
    std::os::unix::fs::symlink("libloop-a.so", pkg.join("libloop-b.so")).expect("symlink");
    std::os::unix::fs::symlink("..", pkg.join("up")).expect("symlink");
    std::os::unix::fs::symlink("/nonexistent/libgone.so", pkg.join("libdangling.so"))
        .expect("symlink");
    // A FIFO named like a library: opening it would block forever.
    let status = Command::new("mkfifo")
        .arg(pkg.join("libfifo.so"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    // An unreadable folder.
    let locked = pkg.join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::write(locked.join("libhidden.so"), &real).expect("write");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    // Everything else readable by an unprivileged user.
    for dir in [root, pkg.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[cfg(unix)]
fn skipped_reason<'a>(facts: &'a Facts, name: &str) -> &'a str {
    facts
        .scan
        .skipped
        .iter()
        .find(|s| s.path.file_name().is_some_and(|n| n == name))
        .map(|s| s.reason.as_str())
        .unwrap_or_else(|| panic!("{name} not reported as skipped: {:#?}", facts.scan.skipped))
}

#[test]
#[cfg(unix)]
fn hostile_tree_is_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    build_hostile_tree(dir.path());
    // Root reads any folder; drop to nobody so the locked folder is locked.
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_caiclust"));
        c
    } else {
        caiclust()
    };
    let started = Instant::now();
    cmd.args(["probe", "--json", "--tree"]).arg(dir.path());
    let out = output_within(cmd, Duration::from_secs(60));
    let elapsed = started.elapsed();
    std::fs::set_permissions(
        dir.path().join("pkg/locked"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let facts = Facts::from_json(&String::from_utf8_lossy(&out.stdout)).expect("facts JSON");
    assert!(
        facts
            .libraries
            .iter()
            .any(|l| l.vendor.value == Vendor::GnuOpenmp),
        "the real libgomp is still found"
    );
    assert!(skipped_reason(&facts, "libtruncated.so").contains("malformed"));
    assert!(skipped_reason(&facts, "libcorrupt.so").contains("malformed"));
    assert!(skipped_reason(&facts, "libopenblas.so.0").contains("not a binary"));
    assert!(skipped_reason(&facts, "libempty.so").contains("empty"));
    assert!(skipped_reason(&facts, "libhuge.so").contains("not a binary"));
    // An ELF header followed by a gigabyte of zeros parses as an empty
    // binary (every table is in bounds and empty): read quickly, not a
    // library.
    assert!(facts
        .libraries
        .iter()
        .all(|l| !l.path.ends_with("libhuge-elf.so")));
    assert!(skipped_reason(&facts, "libloop-a.so").contains("symlink loop"));
    assert!(skipped_reason(&facts, "libdangling.so").contains("not found"));
    assert!(skipped_reason(&facts, "libfifo.so").contains("not a regular file"));
    assert!(skipped_reason(&facts, "locked").contains("permission denied"));
    // The folder loop is walked once, not forever, and not reported twice.
    let gomp = facts
        .libraries
        .iter()
        .filter(|l| l.vendor.value == Vendor::GnuOpenmp)
        .count();
    assert_eq!(gomp, 1);
}

#[test]
fn missing_and_wrong_inputs_are_clear_errors() {
    let out = caiclust()
        .args(["probe", "--tree", "/nonexistent/tree"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/tree"), "{err}");

    let out = caiclust()
        .args(["probe", "--python", "/nonexistent/bin/python3"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bin/python3"));

    // A file that is not an interpreter.
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("python3");
    std::fs::write(&fake, "#!/bin/sh\necho not json\n").expect("write");
    #[cfg(unix)]
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = caiclust()
        .arg("probe")
        .arg("--python")
        .arg(&fake)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&*fake.to_string_lossy()));

    // Usage errors exit 2 too.
    let out = caiclust()
        .args(["probe", "--tree", "/tmp", "--python", "/usr/bin/python3"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_malformed_facts_document_is_rejected_with_a_reason() {
    assert!(Facts::from_json("{").is_err());
    let err = Facts::from_json(r#"{"schema_version": 999}"#).expect_err("newer schema");
    assert!(err.to_string().contains("999"));
}
