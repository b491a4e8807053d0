//! `caiclust-check`: pre-flight diagnostics for CI. Probes the environment
//! (or replays saved facts), runs the rules, prints the findings, and
//! exits 0 (nothing at the deny level), 1 (something is) or 2 (usage,
//! probe or configuration error).

use std::process::ExitCode;

use caiclust_cli::color::{self, ColorChoice};
use caiclust_cli::input::{InputArgs, PlanArgs};
use caiclust_cli::output::{self, CheckOutput, Format};
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
    let helper = std::env::current_exe().ok();
    let loaded = cli.input.load_facts(helper)?;
    let report = caiclust_rules::evaluate(&loaded.facts, &cli.plan.plan(), &config);
    let out = CheckOutput {
        facts: &loaded.facts,
        facts_path: loaded.facts_path.as_ref(),
        report: &report,
    };
    caiclust_cli::stdout::write_stdout(&output::render(cli.format, &out))?;
    Ok(if report.denied() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
