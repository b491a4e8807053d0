//! `caiclust`: probe a machine and a Python environment, explain the
//! rules, print the recommended environment, run one program under it
//! (`run`) or many jobs on a pool (`map`).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context as _;
use caiclust_core::probe::{
    probe_pid, probe_python, probe_python_imports, probe_tree, OsFamily, ProbeOptions,
};
use clap::{Parser, Subcommand};

use crate::color::{self, ColorChoice};
use crate::envfmt::{self, Shell};
use crate::input::{InputArgs, PlanArgs};
use crate::map::MapArgs;
use crate::ruledoc;
use crate::run::RunArgs;
use crate::self_program::SelfProgram;
use crate::stdout::write_stdout;

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
    /// Report what a Python environment will load, or a process has loaded:
    /// BLAS, LAPACK, OpenMP, TBB, OpenCV, with versions, threading layers
    /// and evidence. By default reads the binaries and imports nothing.
    Probe {
        /// The interpreter (or venv/conda folder). Default: the active
        /// VIRTUAL_ENV or CONDA_PREFIX, else python3 on PATH.
        #[arg(long, conflicts_with_all = ["tree", "pid"])]
        python: Option<PathBuf>,
        /// A folder of unpacked wheels or libraries, from any OS.
        #[arg(long, conflicts_with = "pid")]
        tree: Option<PathBuf>,
        /// A running process: what it has loaded, its threads and initial
        /// environment, and each runtime's own answers.
        #[arg(long)]
        pid: Option<u32>,
        /// Start the interpreter, import these modules (comma-separated,
        /// e.g. numpy,scipy,cv2), and probe that live process.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["tree", "pid"])]
        import: Vec<String>,
        /// Don't ask the libraries themselves (no child processes).
        #[arg(long)]
        no_runtime_queries: bool,
        /// Seconds each runtime query may take.
        #[arg(long, default_value_t = 10.0)]
        query_timeout: f64,
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
    /// Print a rule's explanation (Markdown), by id (CC001) or name.
    Explain {
        /// The rule's id or name.
        rule: String,
    },
    /// List the rules: id, name, default level, summary.
    Rules {
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the recommended environment variables for a shell or file,
    /// e.g. `eval "$(caiclust env)"` or `caiclust env --shell github >> "$GITHUB_ENV"`.
    Env {
        /// The form to print.
        #[arg(long, value_enum, default_value_t = Shell::Bash)]
        shell: Shell,
        #[command(flatten)]
        input: InputArgs,
        /// The start method and worker count the values are for (default:
        /// the interpreter's default start method).
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Run one program (e.g. `python script.py`) with the recommended
    /// thread variables set, the script linted, signals passed on, and its
    /// exit status.
    Run(RunArgs),
    /// Run a command or Python function once per input, GNU parallel style:
    /// `caiclust map -j 4 --joblog log -- CMD {} ::: inputs`.
    Map(Box<MapArgs>),
}

/// Run `caiclust` with the command line `argv` (program name first):
/// print what it prints, return its exit status.
pub fn main(argv: Vec<OsString>) -> u8 {
    super::prepare();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                crate::usage_exit_status(&argv)
            } else {
                0
            };
        }
    };
    color::apply(cli.color);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caiclust: error: {e:#}");
            2
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Probe {
            python,
            tree,
            pid,
            import,
            no_runtime_queries,
            query_timeout,
            target_os,
            json,
            verbose,
        } => {
            let options = ProbeOptions {
                python,
                target_os,
                env: None,
            };
            if !(query_timeout.is_finite() && query_timeout > 0.0) {
                anyhow::bail!("--query-timeout must be a positive number of seconds");
            }
            let helper = if no_runtime_queries {
                None
            } else {
                Some(SelfProgram::current().context("locating this program")?)
            };
            let mut live = SelfProgram::live_options(helper);
            live.query_deadline = std::time::Duration::from_secs_f64(query_timeout);
            let facts = match (&tree, pid) {
                (_, Some(pid)) => probe_pid(pid, &live)?,
                _ if !import.is_empty() => probe_python_imports(&options, &import, &live)?,
                (Some(dir), None) => probe_tree(dir, &options)
                    .with_context(|| format!("probing {}", dir.display()))?,
                (None, None) => probe_python(&options)?,
            };
            let text = if json {
                let mut s = serde_json::to_string_pretty(&facts)?;
                s.push('\n');
                s
            } else {
                crate::summary::render(&facts, verbose)
            };
            write_stdout(&text)?;
            Ok(0)
        }
        Command::Explain { rule } => match ruledoc::explain(&rule) {
            Ok(text) => {
                write_stdout(&text)?;
                Ok(0)
            }
            Err(unknown) => {
                eprintln!(
                    "caiclust: error: unknown rule '{rule}'; {unknown}\n(`caiclust rules` lists them all)"
                );
                Ok(2)
            }
        },
        Command::Rules { json } => {
            write_stdout(&if json {
                ruledoc::json()
            } else {
                ruledoc::table()
            })?;
            Ok(0)
        }
        Command::Env { shell, input, plan } => {
            let config = input.load_config()?;
            let loaded = input.load_facts(SelfProgram::current())?;
            let advice = envfmt::safe_env(&loaded.facts, &config, &plan.plan());
            let mut text = envfmt::header(shell, &envfmt::assumption(&advice));
            text.push_str(&envfmt::render(shell, &advice.env));
            write_stdout(&text)?;
            Ok(0)
        }
        Command::Run(args) => Ok(crate::run::main(args)),
        Command::Map(args) => Ok(crate::map::main(*args)),
    }
}
