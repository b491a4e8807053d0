//! What the rules' integration tests share: the facts snapshots
//! (`snapshots/*.facts.json`, from real `caiclust probe --json` output,
//! each with its `*.plan.json`).

use std::path::{Path, PathBuf};

use caiclust_probe::Facts;
use caiclust_rules::Plan;

/// The snapshots folder.
pub fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Every snapshot, sorted by name: (name, facts, plan).
pub fn scenarios() -> Vec<(String, Facts, Plan)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(snapshot_dir())
        .expect("snapshots folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".facts.json"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 20,
        "expected the snapshot scenarios, found {}",
        names.len()
    );
    names
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".facts.json")
                .to_string();
            let facts = Facts::from_json(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let plan_path = snapshot_dir().join(format!("{name}.plan.json"));
            let plan: Plan = serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", plan_path.display()));
            (name, facts, plan)
        })
        .collect()
}
