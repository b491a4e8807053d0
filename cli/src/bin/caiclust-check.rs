//! `caiclust-check`: pre-flight diagnostics for CI. Probes the environment
//! (or replays saved facts), runs the rules, prints the findings, and
//! exits 0 (nothing at the deny level), 1 (something is) or 2 (usage,
//! probe, configuration or script error). Python scripts and Jupyter
//! notebooks given as arguments are linted too; given alone, only they are
//! checked (a script lint: `--start-method` still says how workers start).
//! A script that cannot be read or parsed is reported on standard error
//! and the others are still linted; the exit code is then 2.

use std::path::PathBuf;
use std::process::ExitCode;

use caiclust_cli::color::{self, ColorChoice};
use caiclust_cli::input::{InputArgs, PlanArgs};
use caiclust_cli::output::{self, CheckOutput, Format};
use caiclust_rules::Report;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "caiclust-check",
    version,
    about = "Check that parallel scientific Python will run safely here",
    after_help = "Exit status: 0 no finding at the deny level, 1 some finding at the deny level, \
                  2 usage, probe or configuration error. `caiclust explain ID` describes a rule."
)]
struct Cli {
    /// Python scripts or Jupyter notebooks (.ipynb) to lint (CC201-CC207).
    /// Without --python, --pid, --facts or --tree only they are checked.
    #[arg(value_name = "SCRIPT")]
    scripts: Vec<PathBuf>,
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    plan: PlanArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// When to use colour (human format; also honours NO_COLOR).
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

fn main() -> ExitCode {
    caiclust_probe::serve_runtime_query_if_requested();
    caiclust_cli::quiet_contained_panics();
    let cli = Cli::parse();
    color::apply(cli.color);
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caiclust-check: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let config = cli.input.load_config()?;
    let plan = cli.plan.plan();
    let scripts_only = !cli.scripts.is_empty() && !cli.input.names_environment();
    let (loaded, mut report, verdict) = if scripts_only {
        let report = Report {
            findings: Vec::new(),
            deny_level: config.deny_level(),
        };
        (None, report, None)
    } else {
        let helper = std::env::current_exe().ok();
        let loaded = cli.input.load_facts(helper)?;
        let report = caiclust_rules::evaluate(&loaded.facts, &plan, &config);
        let verdict = caiclust_rules::assess(&loaded.facts, &plan, &config);
        (Some(loaded), report, Some(verdict))
    };
    let mut script_errors = Vec::new();
    if !cli.scripts.is_empty() {
        let facts = loaded.as_ref().map(|l| &l.facts);
        let linted = caiclust_rules::lint_scripts(&cli.scripts, facts, &plan, &config);
        for e in &linted.errors {
            eprintln!("caiclust-check: error: {e}");
        }
        script_errors = linted.errors;
        report.findings.extend(linted.findings);
        report.findings.sort_by(|a, b| {
            b.level
                .cmp(&a.level)
                .then_with(|| a.rule_id.cmp(&b.rule_id))
        });
    }
    let out = CheckOutput {
        facts: loaded.as_ref().map(|l| &l.facts),
        facts_path: loaded.as_ref().and_then(|l| l.facts_path.as_ref()),
        scripts: &cli.scripts,
        script_errors: &script_errors,
        report: &report,
        verdict: verdict.as_ref(),
    };
    caiclust_cli::stdout::write_stdout(&output::render(cli.format, &out))?;
    Ok(if out.failed() {
        ExitCode::from(2)
    } else if report.denied() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
