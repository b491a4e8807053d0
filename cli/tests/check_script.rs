//! `caiclust-check script.py`: the script rules (CC201–CC209) from the
//! command line, alone or with an environment, in every output format;
//! notebooks; exit codes; scripts that cannot be read or parsed.

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
        stderr(&o).contains(&format!("{latin1}:2:12: not valid UTF-8 text")),
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
        "task-function-not-importable",
        "engine-wait-without-deadline",
        "pool-alive-at-setup-cluster",
        "setup-cluster-counts-machine-cpus",
        "explicit-threads-before-fork",
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

#[test]
fn a_script_lint_says_so_and_honours_the_start_method() {
    let safe = script("cc201_safe.py");
    let o = run(CHECK, &[&safe]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        format!("ok: no findings for a script lint of {safe}\n")
    );
    let o = run(
        CHECK,
        &[&safe, &script("cc202_safe.py"), "--format", "json"],
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(doc["subject"]["kind"], "scripts");
    assert_eq!(doc["subject"]["paths"].as_array().unwrap().len(), 2);
    assert!(doc["target_os"].is_null(), "{doc}");

    // Without facts, --start-method decides: fork makes the unguarded
    // pools warnings (exit 0), spawn errors (exit 1).
    let bad = script("cc201_bad.py");
    let levels = |method: &str| {
        let o = run(CHECK, &[&bad, "--start-method", method, "--format", "json"]);
        let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
        let levels: Vec<String> = doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["level"].as_str().unwrap().to_string())
            .collect();
        (o.status.code(), levels)
    };
    assert_eq!(levels("fork"), (Some(0), vec!["warning".to_string(); 3]));
    assert_eq!(levels("spawn"), (Some(1), vec!["error".to_string(); 3]));
    // CC205: a notebook's function is fine with fork, an error with spawn.
    let nb = script("cc205_default_method.ipynb");
    let o = run(CHECK, &[&nb, "--start-method", "fork"]);
    assert!(stdout(&o).starts_with("ok: no findings"), "{}", stdout(&o));
    let o = run(CHECK, &[&nb, "--start-method", "spawn"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("error[CC205]"), "{}", stdout(&o));
    // Not knowing the start method: the portable worst case.
    let o = run(CHECK, &[&nb]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("error[CC205]"), "{}", stdout(&o));
}

#[test]
fn one_bad_file_is_reported_and_the_others_are_still_linted() {
    let broken = script("syntax_error.py");
    let bad = script("cc201_bad.py");
    let unknown = script("unknown_coding.py");
    let o = run(CHECK, &[&broken, &bad, "no-such-script.py", &unknown]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    for needle in [
        format!("{broken}:3:24: syntax error"),
        "no-such-script.py: cannot read the script".to_string(),
        format!("{unknown}:2: bad coding declaration: unknown encoding 'klingon'"),
    ] {
        assert!(err.contains(&needle), "{needle}: {err}");
    }
    let out = stdout(&o);
    assert_eq!(out.matches("error[CC201]").count(), 3, "{out}");
    assert!(
        out.trim_end()
            .ends_with("(3 files could not be linted: see the errors above): fails (findings at `error` or above)"),
        "{out}"
    );

    // SARIF: still valid, the failures are notifications of an invocation
    // that did not succeed.
    let o = run(CHECK, &[&broken, &bad, "--format", "sarif"]);
    assert_eq!(o.status.code(), Some(2));
    let log = stdout(&o);
    validate_sarif(&log);
    let doc: serde_json::Value = serde_json::from_str(&log).unwrap();
    let inv = &doc["runs"][0]["invocations"][0];
    assert_eq!(inv["executionSuccessful"], false);
    assert_eq!(inv["exitCode"], 2);
    let note = &inv["toolExecutionNotifications"][0];
    assert_eq!(note["level"], "error");
    assert!(note["message"]["text"]
        .as_str()
        .unwrap()
        .contains("syntax error"));
    assert_eq!(
        note["locations"][0]["physicalLocation"]["region"]["startLine"],
        3
    );
    assert_eq!(doc["runs"][0]["results"].as_array().unwrap().len(), 3);

    // GitHub: an annotation for the file that failed, too.
    let o = run(CHECK, &[&broken, &bad, "--format", "github"]);
    let out = stdout(&o);
    let file = caiclust_cli::output::github::escape_property(&broken);
    assert!(
        out.lines().any(|l| l.starts_with(&format!(
            "::error file={file},line=3,col=24,title=caiclust-check: cannot lint this file::"
        ))),
        "{out}"
    );
    // JSON: the errors, with their places.
    let o = run(CHECK, &[&broken, &bad, "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["errors"][0]["path"], broken.as_str());
    assert_eq!(doc["errors"][0]["line"], 3);
}

/// A notebook's findings: `cell N:line:column` for people and in JSON;
/// the line and column of the `.ipynb` file as stored for SARIF regions
/// and GitHub annotations (both address the file), the cell as SARIF
/// properties.
#[test]
fn notebook_findings_point_at_the_cell_and_at_the_file() {
    let nb = script("cc205_bad.ipynb");
    let text = std::fs::read_to_string(&nb).unwrap();
    let at = |line: u64, col: u64| -> String {
        text.lines()
            .nth(line as usize - 1)
            .unwrap()
            .chars()
            .skip(col as usize - 1)
            .collect()
    };

    let o = run(CHECK, &[&nb, "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let first = &doc["findings"][0];
    assert_eq!(first["rule_id"], "CC205");
    assert_eq!(first["location"], format!("{nb}:cell 4:2:21"));
    let span = &first["evidence"][0]["span"];
    assert_eq!(first["evidence"][0]["source"], "source_code");
    assert_eq!(
        (span["cell"].as_u64(), span["line"].as_u64()),
        (Some(4), Some(2))
    );
    let (fl, fc) = (
        span["file_line"].as_u64().unwrap(),
        span["file_column"].as_u64().unwrap(),
    );
    assert!(
        at(fl, fc).starts_with("work, 3).result())"),
        "{}",
        at(fl, fc)
    );

    let o = run(CHECK, &[&nb, "--format", "sarif"]);
    let log = stdout(&o);
    validate_sarif(&log);
    let doc: serde_json::Value = serde_json::from_str(&log).unwrap();
    let result = &doc["runs"][0]["results"][0];
    let loc = &result["locations"][0];
    let region = &loc["physicalLocation"]["region"];
    assert_eq!(
        (region["startLine"].as_u64(), region["startColumn"].as_u64()),
        (Some(fl), Some(fc))
    );
    assert_eq!(loc["properties"]["notebookCell"], 4);
    assert_eq!(loc["properties"]["cellLine"], 2);
    assert!(loc["physicalLocation"]["artifactLocation"]["uri"]
        .as_str()
        .unwrap()
        .ends_with("cc205_bad.ipynb"));
    // The definition of `work` (cell 3) as a related location.
    let related = &result["relatedLocations"][0];
    assert_eq!(related["properties"]["notebookCell"], 3);
    let r = &related["physicalLocation"]["region"];
    assert!(at(
        r["startLine"].as_u64().unwrap(),
        r["startColumn"].as_u64().unwrap()
    )
    .starts_with("def work(x):"));

    let o = run(CHECK, &[&nb, "--format", "github"]);
    let first = stdout(&o).lines().next().unwrap().to_string();
    let file = caiclust_cli::output::github::escape_property(&nb);
    assert!(
        first.starts_with(&format!(
            "::error file={file},line={fl},col={fc},title=CC205 task-function-not-importable::"
        )),
        "{first}"
    );
    assert!(first.contains("%0ALocation: "), "{first}");

    let o = run(CHECK, &[&nb, "--color", "never"]);
    let out = stdout(&o);
    assert!(out.contains(&format!("  --> {nb}:cell 4:2:21")), "{out}");
    assert!(out.contains("evidence (source code): "), "{out}");
}
