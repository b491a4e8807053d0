//! `caiclust-check script.py`: the script rules (CC201–CC204) from the
//! command line, alone or with an environment, in every output format;
//! exit codes; scripts that cannot be read or parsed.

mod check_support;
use check_support::*;

use std::path::PathBuf;

/// A fixture of the rules crate (`rules/tests/scripts/`).
fn script(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../rules/tests/scripts")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn github_annotations_point_at_the_script_line() {
    let bad = script("cc201_bad.py");
    let o = run(CHECK, &[&bad, "--format", "github"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let file = caiclust_cli::output::github::escape_property(&bad);
    for (l, (line, col)) in lines.iter().zip([(9, 6), (13, 10), (23, 1)]) {
        let want = format!(
            "::error file={file},line={line},col={col},title=CC201 pool-without-main-guard::"
        );
        assert!(l.starts_with(&want), "{l}\nwanted {want}");
    }
}

#[test]
fn exit_codes_follow_the_script_findings() {
    for (name, code) in [
        ("cc201_bad.py", 1),
        ("cc201_safe.py", 0),
        // Warnings only: below the default deny level.
        ("cc202_bad.py", 0),
        ("cc204_bad.py", 0),
    ] {
        let o = run(CHECK, &[&script(name)]);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{name}: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    let o = run(CHECK, &[&script("cc201_safe.py")]);
    assert!(stdout(&o).starts_with("ok: no findings"), "{}", stdout(&o));
}

#[test]
fn scripts_combine_with_an_environment() {
    // Fork on Linux: the unguarded pool is a warning there, so only the
    // environment's own findings decide; with spawn it is an error.
    let facts = pypi_linux();
    let bad = script("cc201_bad.py");
    let args = ["--facts", facts.to_str().unwrap(), &bad, "--format", "json"];
    let o = run(CHECK, &args);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let levels: Vec<(String, String)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule_id"] == "CC201")
        .map(|f| {
            (
                f["level"].as_str().unwrap().into(),
                f["location"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(levels.len(), 3, "{doc}");
    assert!(levels.iter().all(|(l, _)| l == "warning"), "{levels:?}");
    assert!(doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["rule_id"] != "CC201"));

    let mut spawn = args.to_vec();
    spawn.extend(["--start-method", "spawn"]);
    let o = run(CHECK, &spawn);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert!(doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule_id"] == "CC201")
        .all(|f| f["level"] == "error"));
}

#[test]
fn unreadable_and_invalid_scripts_are_tool_errors() {
    let broken = script("syntax_error.py");
    let o = run(CHECK, &[&broken]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{broken}:3:24: syntax error")),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));

    let latin1 = script("latin1.py");
    let o = run(CHECK, &[&latin1]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{latin1}:2:12: not UTF-8")),
        "{}",
        stderr(&o)
    );

    let o = run(CHECK, &["no-such-script.py"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no-such-script.py: cannot read the script"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn rules_and_explain_list_the_script_rules() {
    let o = run(CAICLUST, &["explain", "CC201"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("pool-without-main-guard"),
        "{}",
        stdout(&o)
    );
    let o = run(CAICLUST, &["rules"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for name in [
        "pool-without-main-guard",
        "thread-variable-after-import",
        "fork-forced-on-macos",
        "setup-cluster-single-thread-pool",
    ] {
        assert!(stdout(&o).contains(name), "{name}: {}", stdout(&o));
    }
}

#[test]
fn sarif_for_a_script_validates_and_points_at_the_file() {
    let bad = script("cc201_bad.py");
    let o = run(CHECK, &[&bad, &script("cc203_bad.py"), "--format", "sarif"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let log = stdout(&o);
    validate_sarif(&log);
    let doc: serde_json::Value = serde_json::from_str(&log).unwrap();
    let results = doc["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "{log}");
    let first = &results[0]["locations"][0]["physicalLocation"];
    assert!(
        first["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("cc201_bad.py"),
        "{first}"
    );
    assert_eq!(first["region"]["startLine"], 9);
    assert_eq!(first["region"]["startColumn"], 6);
}
