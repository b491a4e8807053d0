//! `caiclust-check`: pre-flight diagnostics for CI. Probes the environment
//! (or replays saved facts), runs the rules, prints the findings, and
//! exits 0 (nothing at the deny level), 1 (something is) or 2 (usage,
//! probe, configuration or script error). Python scripts and Jupyter
//! notebooks given as arguments are linted too; given alone, only they are
//! checked (a script lint: `--start-method` still says how workers start).
//! A script that cannot be read or parsed is reported on standard error
//! and the others are still linted; the exit code is then 2.

use std::ffi::OsString;
use std::path::PathBuf;

use caiclust_rules::{Plan, Report, ScriptError, ScriptPlan};
use clap::Parser;

use crate::color::{self, ColorChoice};
use crate::input::{InputArgs, PlanArgs};
use crate::output::{self, CheckOutput, Format};
use crate::self_program::SelfProgram;

#[derive(Parser)]
#[command(
    name = "caiclust-check",
    version,
    about = "Check that parallel scientific Python will run safely here",
    after_help = "Exit status: 0 no finding at the deny level, 1 some finding at the deny level, \
                  2 usage, probe or configuration error. `caiclust explain ID` describes a rule."
)]
struct Cli {
    /// Python scripts or Jupyter notebooks (.ipynb) to lint (CC201-CC209).
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

/// What one check produced, before it is printed.
#[derive(Debug)]
pub struct Checked {
    /// The report in the format asked for, as `caiclust-check` prints it
    /// on standard output.
    pub output: String,
    /// The exit status: 0, 1 or 2 (a script could not be linted).
    pub exit_code: u8,
    /// The scripts that could not be linted (printed on standard error by
    /// the program; also in the report).
    pub script_errors: Vec<ScriptError>,
}

/// Why a check produced no report.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The command line does not parse (or asks for `--help`/`--version`:
    /// see [`clap::Error::kind`]).
    #[error("{0}")]
    Usage(#[from] clap::Error),
    /// The facts could not be probed or read, or the configuration is
    /// wrong (exit status 2).
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// Run `caiclust-check` with the command line `argv` (program name
/// first): print what it prints, return its exit status.
pub fn main(argv: Vec<OsString>) -> u8 {
    super::prepare();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    color::apply(cli.color);
    let checked = match check(&cli) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("caiclust-check: error: {e:#}");
            return 2;
        }
    };
    for e in &checked.script_errors {
        eprintln!("caiclust-check: error: {e}");
    }
    match crate::stdout::write_stdout(&checked.output) {
        Ok(()) => checked.exit_code,
        Err(e) => {
            eprintln!("caiclust-check: error: {e:#}");
            2
        }
    }
}

/// The plan as the scripts show it: what they import and call on each
/// side of the fork (the environment's hazards are judged by that use),
/// and the start method they force when none was given. A script that
/// cannot be read adds nothing here (the lint reports it).
fn with_scripts(plan: Plan, scripts: &[PathBuf]) -> Plan {
    if scripts.is_empty() {
        return plan;
    }
    let plans: Vec<ScriptPlan> = scripts
        .iter()
        .filter_map(|s| caiclust_rules::read_script_plan(s).ok())
        .collect();
    let forced = plans
        .iter()
        .find_map(|p| p.forced_start_method().map(str::to_string));
    let mut plan = plan.with_scripts(&plans);
    if plan.start_method.is_none() {
        plan.start_method = forced;
    }
    plan
}

/// Check as `caiclust-check` would with the command line `argv`, but
/// print nothing: the report as it would be printed, and the exit status.
/// Colour follows the process-wide setting ([`crate::color::apply`]),
/// which `--color` does not change here.
pub fn run(argv: Vec<OsString>) -> Result<Checked, CheckError> {
    let cli = Cli::try_parse_from(argv)?;
    check(&cli).map_err(CheckError::Failed)
}

fn check(cli: &Cli) -> anyhow::Result<Checked> {
    let config = cli.input.load_config()?;
    let plan = cli.plan.plan();
    // The environment is judged for what the scripts run (each script's
    // own lint reads its own start method).
    let env_plan = with_scripts(plan.clone(), &cli.scripts);
    let scripts_only = !cli.scripts.is_empty() && !cli.input.names_environment();
    let (loaded, mut report, verdict) = if scripts_only {
        let report = Report {
            findings: Vec::new(),
            deny_level: config.deny_level(),
        };
        (None, report, None)
    } else {
        let loaded = cli.input.load_facts(SelfProgram::current())?;
        let report = caiclust_rules::evaluate(&loaded.facts, &env_plan, &config);
        let verdict = caiclust_rules::assess(&loaded.facts, &env_plan, &config);
        (Some(loaded), report, Some(verdict))
    };
    let mut script_errors = Vec::new();
    if !cli.scripts.is_empty() {
        let facts = loaded.as_ref().map(|l| &l.facts);
        let linted = caiclust_rules::lint_scripts(&cli.scripts, facts, &plan, &config);
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
    let output = output::render(cli.format, &out);
    let exit_code = if out.failed() {
        2
    } else if report.denied() {
        1
    } else {
        0
    };
    Ok(Checked {
        output,
        exit_code,
        script_errors,
    })
}
