//! `caiclust-check` exit codes: 0 nothing at the deny level, 1 something
//! is, 2 usage, probe or configuration errors.

mod check_support;
use check_support::*;

#[test]
fn clean_windows_snapshot_with_spawn_exits_0() {
    let f = numpy_windows();
    let o = run(
        CHECK,
        &[
            "--facts",
            f.to_str().unwrap(),
            "--start-method",
            "spawn",
            "--color",
            "never",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn gnu_openmp_run_across_fork_exits_1() {
    let f = pypi_linux();
    let script = kmeans_across_fork();
    let o = run(
        CHECK,
        &[
            "--facts",
            f.to_str().unwrap(),
            "--start-method",
            "fork",
            "--format",
            "json",
            script.to_str().unwrap(),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "GNU OpenMP (scikit-learn's libgomp) with fork must fail the check\nstdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(doc["denied"], true);
    assert!(doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["level"] == "error"));
}

#[test]
fn json_report_names_subject_and_snapshot() {
    let f = numpy_windows();
    let o = run(CHECK, &["--facts", f.to_str().unwrap(), "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(doc["facts_path"], f.to_str().unwrap());
    assert_eq!(doc["subject"]["kind"], "tree");
    assert_eq!(doc["target_os"], "windows");
    assert_eq!(doc["deny_level"], "error");
    // Windows numpy has no OpenMP and spawn is its only start method:
    // nothing to deny.
    assert!(doc["findings"].is_array());
    assert_eq!(doc["denied"], false, "{}", stdout(&o));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn missing_snapshot_exits_2_with_message() {
    let o = run(CHECK, &["--facts", "/nonexistent/facts.json"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.starts_with("caiclust-check: error:"), "{e}");
    assert!(e.contains("/nonexistent/facts.json"), "{e}");
}

#[test]
fn malformed_snapshot_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"schema_version\": 1, \"oops\"").unwrap();
    let o = run(CHECK, &["--facts", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("bad.json"), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    let f = numpy_windows();
    let f = f.to_str().unwrap();
    for args in [
        vec!["--no-such-flag"],
        vec!["--format", "xml"],
        vec!["--start-method", "vfork"],
        vec!["--workers", "0"],
        vec!["--facts", f, "--tree", "."],
        vec!["--facts", f, "--python", "python3"],
        vec!["--target-os", "windows"],
    ] {
        let o = run(CHECK, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn bad_config_argument_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    // Any file name is read as caiclust.toml; an unknown key is an error
    // naming the file, line and column.
    let other = dir.path().join("settings.toml");
    std::fs::write(&other, "workers = 2\ncolour = true\n").unwrap();
    let f = numpy_windows();
    for cfg in [dir.path().join("missing/caiclust.toml"), other.clone()] {
        let o = run(
            CHECK,
            &[
                "--facts",
                f.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("caiclust-check: error:"),
            "{}",
            stderr(&o)
        );
    }
    let o = run(
        CHECK,
        &[
            "--facts",
            f.to_str().unwrap(),
            "--config",
            other.to_str().unwrap(),
        ],
    );
    assert!(stderr(&o).contains("settings.toml:2:1"), "{}", stderr(&o));
}

#[test]
fn missing_tree_exits_2() {
    let o = run(
        CHECK,
        &["--tree", "/nonexistent/tree", "--target-os", "windows"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn tree_for_another_os_is_checked() {
    let tree = std::env::var_os("CAICLUST_WHEELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.fixtures/wheels")
        })
        .join("numpy-win-amd64");
    assert!(
        tree.is_dir(),
        "{} missing: run scripts/setup-test-envs.sh",
        tree.display()
    );
    let o = run(
        CHECK,
        &[
            "--tree",
            tree.to_str().unwrap(),
            "--target-os",
            "windows",
            "--format",
            "json",
        ],
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(doc["target_os"], "windows");
}

#[test]
fn gnu_openmp_only_installed_is_a_presumed_warning_and_exits_0() {
    // No script, no live process: nothing shows the pool in use (issue
    // #14, point 5). The report warns; the policy still presumes it.
    let f = pypi_linux();
    let o = run(
        CHECK,
        &[
            "--facts",
            f.to_str().unwrap(),
            "--start-method",
            "fork",
            "--format",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let cc001 = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule_id"] == "CC001")
        .expect("CC001 reported");
    assert_eq!(cc001["level"], "warning", "{cc001}");
    assert_eq!(cc001["presumed"], true, "{cc001}");
    assert_eq!(doc["verdict"]["start_method_hazards"][0], "CC001");
}
