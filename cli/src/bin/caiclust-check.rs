//! `caiclust-check`: pre-flight diagnostics for CI. The rules arrive with
//! the rules issue; until then it probes and reports what it found, and
//! fails (exit 2) only when probing itself fails.

use std::process::ExitCode;

use caiclust_core::probe::{probe_python, ProbeOptions};

fn main() -> ExitCode {
    caiclust_cli::quiet_contained_panics();
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("caiclust-check: probes the current Python environment (rules arrive with a later release)");
        return ExitCode::SUCCESS;
    }
    match probe_python(&ProbeOptions::default()) {
        Ok(facts) => {
            println!("{}", caiclust_cli::summary::render(&facts, false));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("caiclust-check: error: {e}");
            ExitCode::from(2)
        }
    }
}
