//! `caiclust`: probe a machine and a Python environment (more commands
//! arrive with the rules and core issues).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use caiclust_cli::color::{self, ColorChoice};
use caiclust_core::probe::{probe_python, probe_tree, OsFamily, ProbeOptions};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "caiclust",
    version,
    about = "Make parallel scientific Python safe and fast"
)]
struct Cli {
    /// When to use colour (also honours NO_COLOR).
    #[arg(long, value_enum, global = true, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report what a Python environment will load: BLAS, LAPACK, OpenMP,
    /// TBB, OpenCV, with versions, threading layers and evidence. Reads the
    /// binaries; imports nothing.
    Probe {
        /// The interpreter (or venv/conda folder). Default: the active
        /// VIRTUAL_ENV or CONDA_PREFIX, else python3 on PATH.
        #[arg(long, conflicts_with = "tree")]
        python: Option<PathBuf>,
        /// A folder of unpacked wheels or libraries, from any OS.
        #[arg(long)]
        tree: Option<PathBuf>,
        /// The OS the tree's binaries are for (default: inferred).
        #[arg(long, requires = "tree")]
        target_os: Option<OsFamily>,
        /// Print the full facts as JSON.
        #[arg(long)]
        json: bool,
        /// Show the evidence behind every conclusion.
        #[arg(long, short)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    caiclust_cli::quiet_contained_panics();
    let cli = Cli::parse();
    color::apply(cli.color);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caiclust: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Probe {
            python,
            tree,
            target_os,
            json,
            verbose,
        } => {
            let options = ProbeOptions {
                python,
                target_os,
                env: None,
            };
            let facts = match &tree {
                Some(dir) => probe_tree(dir, &options)
                    .with_context(|| format!("probing {}", dir.display()))?,
                None => probe_python(&options)?,
            };
            let text = if json {
                let mut s = serde_json::to_string_pretty(&facts)?;
                s.push('\n');
                s
            } else {
                caiclust_cli::summary::render(&facts, verbose)
            };
            write_stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
