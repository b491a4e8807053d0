//! `--format sarif` validates against the official SARIF 2.1.0 schema
//! (from the npm package `@microsoft/jest-sarif`, fetched by
//! `scripts/fetch-sarif-schema.sh` together with a Python `jsonschema`).
//! A missing schema fails the test: it is never skipped.
//!
//! Unix only: the SARIF schema is checked by the fixtures' Linux Python (jsonschema), fetched through bash.
#![cfg(unix)]

mod check_support;
use check_support::*;

use std::path::Path;

use caiclust_cli::output::{self, CheckOutput, Format};

fn check_sarif(facts: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--facts", facts.to_str().unwrap(), "--format", "sarif"];
    args.extend_from_slice(extra);
    let o = run(CHECK, &args);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let text = stdout(&o);
    validate_sarif(&text);
    serde_json::from_str(&text).unwrap()
}

#[test]
fn binary_output_validates_and_lists_every_rule() {
    let doc = check_sarif(&pypi_linux(), &["--start-method", "fork"]);
    assert_eq!(doc["version"], "2.1.0");
    let run = &doc["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "caiclust-check");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), caiclust_rules::all_rules().len());
    for (r, info) in rules.iter().zip(caiclust_rules::all_rules()) {
        let info = info.info();
        assert_eq!(r["id"], info.id);
        assert_eq!(r["name"], info.name);
        assert_eq!(r["help"]["markdown"], info.explanation);
        assert!(["error", "warning", "note", "none"]
            .contains(&r["defaultConfiguration"]["level"].as_str().unwrap()));
    }
    for result in run["results"].as_array().unwrap() {
        assert!(
            ["error", "warning", "note"].contains(&result["level"].as_str().unwrap()),
            "{result}"
        );
        let idx = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[idx]["id"], result["ruleId"]);
    }
}

#[test]
fn clean_output_validates() {
    check_sarif(&numpy_windows(), &["--start-method", "spawn"]);
}

#[test]
fn synthetic_findings_validate_with_each_kind_of_location() {
    let facts = facts(&pypi_linux());
    let report = synthetic_report();
    let path = pypi_linux();
    let text = output::render(
        Format::Sarif,
        &CheckOutput {
            facts: Some(&facts),
            facts_path: Some(&path),
            scripts: &[],
            script_errors: &[],
            report: &report,
            verdict: None,
        },
    );
    validate_sarif(&text);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let results = doc["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["level"], "error");
    assert_eq!(
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "file:///opt/my%20env/lib/libgomp-e985bcbb.so.1.0.0"
    );
    assert_eq!(results[1]["level"], "warning");
    assert_eq!(
        results[1]["locations"][0]["logicalLocations"][0]["name"],
        "OMP_NUM_THREADS"
    );
    assert_eq!(
        results[1]["locations"][0]["logicalLocations"][0]["kind"],
        "variable"
    );
    assert_eq!(results[2]["level"], "note");
    assert_eq!(
        results[2]["locations"][0]["logicalLocations"][0]["kind"],
        "module"
    );
    let phys = &results[3]["locations"][0]["physicalLocation"];
    assert_eq!(phys["artifactLocation"]["uri"], "src/run,job.py");
    assert_eq!(phys["region"]["startLine"], 12);
    assert_eq!(phys["region"]["startColumn"], 5);
}
