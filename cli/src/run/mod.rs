//! `caiclust run -- CMD ARGS...`: run one program (a CaImAn script, say)
//! the safe way.
//!
//! caiclust probes the interpreter (the command's own when the command is
//! `python ...`, else `--python`, the active environment or `python3`),
//! reads the script of `python script.py` (its pools, worker counts,
//! start methods, `__main__` guard) and lets the hazard policy plan the
//! run ([`caiclust_core::program::plan_program`]): thread variables sized
//! for the workers the program really starts, the default start method
//! changed when fork would hang (or, where it cannot be, the environment
//! that makes fork safe), one line on standard error per change with the
//! finding it answers. The script is linted, then the command runs as a
//! child watched by the hang watchdog: a forked worker stuck in a runtime
//! stops the whole tree, and run exits with [`HANG_EXIT`] naming the rule,
//! the pid and the fix (see [`child`]).
//!
//! ```text
//! caiclust run -- python caiman_pipeline.py --fnames movie.tif
//! caiclust run --print-env                  # the variables, without running
//! ```

pub mod child;

use std::path::{Path, PathBuf};
use std::time::Duration;

use caiclust_core::probe::{probe_python, Facts, ProbeError, ProbeOptions};
use caiclust_core::program::{self, Applied, Origin, ProgramOptions, ProgramPlan};
use caiclust_core::rules::{lint_scripts, recommend, Config, Level, Plan};
use caiclust_core::StartMethod;
use colored::Colorize as _;

/// caiclust's own errors (as `env`, `nice` and `timeout` use it).
pub const ERROR_EXIT: u8 = 125;
/// The hang watchdog stopped the program: a forked worker hung in a
/// runtime (as `timeout` uses 124 for a time limit).
pub const HANG_EXIT: u8 = 124;

/// Run one program under the recommended environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// The interpreter (or venv/conda folder) to probe. Default: the
    /// command's own when it runs python, else the active VIRTUAL_ENV or
    /// CONDA_PREFIX, else python3 on PATH.
    #[arg(long, value_name = "P")]
    pub python: Option<PathBuf>,
    /// Set a variable (repeatable); wins over the recommendation and over
    /// the environment.
    #[arg(long, value_name = "K=V")]
    pub env: Vec<String>,
    /// Print each variable applied and why: to standard error before
    /// running, or to standard output when no command is given.
    #[arg(long)]
    pub print_env: bool,
    /// No summary line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't lint the script of `python script.py`.
    #[arg(long)]
    pub no_lint: bool,
    /// The configuration file (`caiclust.toml` or `pyproject.toml`).
    /// Default: the nearest one above the working folder.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Force this start method on every pool of the program, explicit
    /// requests (`get_context("fork")`) included.
    #[arg(long, value_name = "M")]
    pub start_method: Option<StartMethod>,
    /// Run the program as it is: no variable, no start method changed
    /// (it is still watched for hangs).
    #[arg(long)]
    pub no_fix: bool,
    /// Plan with a saved facts snapshot (`caiclust probe --json`) instead
    /// of probing the interpreter.
    #[arg(long, value_name = "FILE")]
    pub facts: Option<PathBuf>,
    /// Print the plan as JSON (the hazard policy's verdict on the program
    /// as it is and as it will run, workers, threads, start method,
    /// variables, changes) and exit without running anything.
    #[arg(long)]
    pub print_plan: bool,
    /// Diagnose a forked worker stuck in a runtime for this many seconds
    /// (the hang watchdog); 0 turns the watchdog off.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    pub stall: f64,
    /// Start an ipyparallel cluster of N engines for the program (engines
    /// with the recommended environment, controller on loopback, a fresh
    /// profile), pass its connection file in CAICLUST_IPP_CONNECTION_FILE,
    /// and stop it when the program ends.
    #[arg(long, value_name = "N")]
    pub engines: Option<usize>,
    /// How the --engines start: local (default), srun (inside a Slurm
    /// allocation: on its nodes), slurm (one sbatch job per engine), mpi,
    /// ssh, pbs, sge, lsf.
    #[arg(long, value_name = "L", default_value = "local")]
    pub engine_launcher: String,
    /// Where the controller listens: `*` (every interface) or an address
    /// the engines reach. Engines on other hosts need it (default:
    /// loopback, refused for launchers that may start engines elsewhere).
    #[arg(long, value_name = "ADDR")]
    pub controller_ip: Option<String>,
    /// The address engines dial, when the controller listens on `*`.
    #[arg(long, value_name = "ADDR")]
    pub controller_location: Option<String>,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub use caiclust_core::program::{decide_env, is_python, script_of};

/// The facts for the interpreter that will run (or the host's alone when
/// there is no Python), and a warning when probing fell back.
fn probe(python: Option<PathBuf>) -> Result<(Facts, Option<String>), ProbeError> {
    let explicit = python.is_some();
    let options = ProbeOptions {
        python,
        ..ProbeOptions::default()
    };
    match probe_python(&options) {
        Ok(f) => Ok((f, None)),
        Err(e @ ProbeError::PythonNotFound(_)) if !explicit => Ok((
            caiclust_core::plan::host_only_facts(),
            Some(format!("{e}; only the machine was probed")),
        )),
        Err(e) => Err(e),
    }
}

/// One line: the thread variables applied and why.
fn summary(facts: &Facts, plan: &ProgramPlan) -> String {
    let set: Vec<String> = plan
        .env
        .iter()
        .filter(|a| matches!(a.origin, Origin::Recommended(_)))
        .map(|a| format!("{}={}", a.name, a.value))
        .collect();
    let python = facts
        .python
        .as_ref()
        .map(|p| p.executable.display().to_string());
    let sizing = format!(
        "{} thread(s) per process for {} worker(s): {}{}",
        plan.threads,
        plan.workers.0,
        plan.workers.1,
        python
            .as_ref()
            .map(|p| format!("; {p}"))
            .unwrap_or_default()
    );
    let mut s = if !set.is_empty() {
        format!("caiclust: running with {} ({sizing})", set.join(" "))
    } else if plan.env.is_empty() {
        format!(
            "caiclust: no thread variables to set (no threaded runtime found{})",
            python.map(|p| format!(" for {p}")).unwrap_or_default()
        )
    } else {
        format!("caiclust: every recommended variable is set already ({sizing})")
    };
    for a in &plan.env {
        match &a.origin {
            Origin::Environment { recommended } => s.push_str(&format!(
                "; kept {}={} from your environment (recommended {recommended})",
                a.name, a.value
            )),
            Origin::Explicit => s.push_str(&format!("; {}={} from --env", a.name, a.value)),
            Origin::Recommended(_) | Origin::Replaced { .. } => {}
        }
    }
    s
}

/// One line per change the plan makes, with the finding it answers; and
/// a warning for a hazard nothing here removes.
fn change_lines(plan: &ProgramPlan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .changes
        .iter()
        .map(|c| format!("caiclust: changed {} (answers {})", c.what, c.answers))
        .collect();
    if !plan.after.safe() {
        out.push(format!(
            "caiclust: {} {}; running it watched for hangs: {}",
            "warning:".yellow().bold(),
            plan.after.summary(),
            plan.after.hazard_lines().join("; ")
        ));
    }
    if let Some(e) = &plan.script_error {
        out.push(format!(
            "caiclust: {} cannot read the script's pools ({e}); planning for the interpreter's defaults",
            "note:".bold()
        ));
    }
    out
}

/// The plan as one JSON document (`--print-plan`).
fn plan_json(plan: &ProgramPlan) -> String {
    let env: serde_json::Map<String, serde_json::Value> = plan
        .env
        .iter()
        .map(|a| (a.name.clone(), a.value.clone().into()))
        .collect();
    let doc = serde_json::json!({
        "workers": plan.workers.0,
        "workers_reason": plan.workers.1,
        "threads": plan.threads,
        "start_method": plan.after.start_method,
        "hook": plan.hook.map(|(m, force)| serde_json::json!({"start_method": m.as_str(), "force": force})),
        "env": env,
        "changes": plan.changes.iter().map(|c| serde_json::json!({"what": c.what, "answers": c.answers})).collect::<Vec<_>>(),
        "before": plan.before,
        "after": plan.after,
        "script": plan.script.as_ref().map(|p| p.display().to_string()),
        "script_error": plan.script_error,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

fn print_env_lines(applied: &[Applied]) -> String {
    let mut s = String::new();
    for a in applied {
        let why = match &a.origin {
            Origin::Recommended(r) => r.clone(),
            Origin::Environment { recommended } => {
                format!("kept from the environment; the recommendation is {recommended}")
            }
            Origin::Replaced { was } => {
                format!("your {}={was} causes a fork hazard; replaced", a.name)
            }
            Origin::Explicit => "given with --env".to_string(),
        };
        s.push_str(&format!(
            "{}={}  # {why}\n",
            a.name,
            crate::envfmt::posix_quote(&a.value)
        ));
    }
    s
}

/// Lint the script of a `python script.py` command, with the start
/// method its pools will use; the warnings to print.
fn lint(script: &Path, facts: &Facts, config: &Config, method: &str) -> Vec<String> {
    let plan = Plan {
        start_method: Some(method.to_string()),
        ..Plan::default()
    };
    let lint = lint_scripts(&[script], Some(facts), &plan, config);
    let mut out: Vec<String> = lint
        .findings
        .iter()
        .map(|f| {
            let level = match f.level {
                Level::Error => "error".red().bold(),
                Level::Warning => "warning".yellow().bold(),
                _ => f.level.as_str().normal(),
            };
            let mut s = format!(
                "caiclust: {level}: {}{} {}: {}",
                f.location
                    .as_deref()
                    .map(|l| format!("{l}: "))
                    .unwrap_or_default(),
                f.rule_id,
                f.rule_name,
                f.message
            );
            if let Some(fix) = &f.fix {
                s.push_str(&format!("\n  fix: {fix}"));
            }
            if !f
                .fix
                .as_deref()
                .is_some_and(|x| x.contains("caiclust explain"))
            {
                s.push_str(&format!("\n  (caiclust explain {})", f.rule_id));
            }
            s
        })
        .collect();
    for e in &lint.errors {
        out.push(format!(
            "caiclust: {} cannot lint the script: {e}",
            "warning:".yellow().bold()
        ));
    }
    out
}

/// Run it; the exit status.
pub fn main(args: RunArgs) -> u8 {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caiclust run: error: {e:#}");
            ERROR_EXIT
        }
    }
}

/// Where `--engines` tells the program its cluster's client connection
/// file is.
pub const IPP_CONNECTION_ENV: &str = "CAICLUST_IPP_CONNECTION_FILE";
/// And its cluster id.
pub const IPP_CLUSTER_ID_ENV: &str = "CAICLUST_IPP_CLUSTER_ID";

fn run(args: RunArgs) -> anyhow::Result<u8> {
    if args.command.is_empty() && !args.print_env && !args.print_plan {
        anyhow::bail!("no command: caiclust run [OPTIONS] -- COMMAND [ARGS...]");
    }
    let explicit: Vec<(String, String)> = args
        .env
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(anyhow::anyhow!("--env '{p}': expected NAME=VALUE")),
        })
        .collect::<Result<_, _>>()?;
    let input = crate::input::InputArgs {
        config: args.config.clone(),
        ..Default::default()
    };
    let config = input.load_config()?;
    let python = args.python.clone().or_else(|| {
        args.command
            .first()
            .filter(|p| is_python(p))
            .map(PathBuf::from)
    });
    let (facts, fallback) = match &args.facts {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading facts from {}: {e}", path.display()))?;
            let facts = Facts::from_json(&text)
                .map_err(|e| anyhow::anyhow!("reading facts from {}: {e}", path.display()))?;
            (facts, None)
        }
        None => probe(python)?,
    };
    if let Some(w) = fallback {
        if !args.quiet {
            eprintln!("caiclust: {} {w}", "note:".bold());
        }
    }
    let options = ProgramOptions {
        start_method: args.start_method,
        no_fix: args.no_fix,
        explicit_env: explicit.clone(),
    };
    let plan = program::plan_program(&args.command, &facts, &config, &options, |k| {
        std::env::var(k).ok()
    });

    if args.print_plan {
        crate::stdout::write_stdout(&plan_json(&plan))?;
        return Ok(0);
    }
    if args.command.is_empty() {
        crate::stdout::write_stdout(&print_env_lines(&plan.env))?;
        return Ok(0);
    }
    if !args.quiet {
        eprintln!("{}", summary(&facts, &plan));
        for line in change_lines(&plan) {
            eprintln!("{line}");
        }
    }
    if args.print_env {
        eprint!("{}", print_env_lines(&plan.env));
    }
    if !args.no_lint {
        if let Some(script) = &plan.script {
            let method = plan.after.start_method.clone();
            for w in lint(script, &facts, &config, &method) {
                eprintln!("{w}");
            }
        }
    }
    let mut env = plan.env_pairs();
    // The startup hook, for as long as the program runs.
    let _hook = match plan.hook {
        Some((method, force)) => {
            let pythonpath = explicit
                .iter()
                .rev()
                .find(|(k, _)| k == "PYTHONPATH")
                .map(|(_, v)| v.into())
                .or_else(|| std::env::var_os("PYTHONPATH"));
            let (hook, vars) = program::hook::Hook::install(method, force, pythonpath)
                .map_err(|e| anyhow::anyhow!("cannot write the start-method hook: {e}"))?;
            env.retain(|(k, _)| k != "PYTHONPATH");
            env.extend(vars);
            Some(hook)
        }
        None => None,
    };
    // --engines N: an ipyparallel cluster for the program, its engines
    // with the same environment (local, or by --engine-launcher), the
    // controller on loopback unless --controller-ip; stopped when it ends.
    let cluster = match args.engines {
        Some(n) => {
            let python = args
                .python
                .clone()
                .or_else(|| facts.python.as_ref().map(|p| p.executable.clone()))
                .unwrap_or_else(|| PathBuf::from("python3"));
            let mut c = caiclust_core::ipp::IppConfig::new(python, n.max(1));
            c.engine_launcher = args
                .engine_launcher
                .parse()
                .map_err(|e| anyhow::anyhow!("--engine-launcher: {e}"))?;
            c.controller_ip = args.controller_ip.clone();
            c.controller_location = args.controller_location.clone();
            let rec_n = recommend(
                &facts,
                &caiclust_core::rules::Config {
                    workers: Some(n.max(1)),
                    ..config.clone()
                },
            );
            c.apply_recommendation(&rec_n);
            for (k, v) in &explicit {
                c.env.insert(k.clone(), v.clone());
            }
            let backend = caiclust_core::ipp::IppBackend::start(c)
                .map_err(|e| anyhow::anyhow!("the ipyparallel cluster did not start: {e}"))?;
            if let Some(f) = backend.connection_file() {
                env.push((IPP_CONNECTION_ENV.into(), f.display().to_string()));
            }
            env.push((IPP_CLUSTER_ID_ENV.into(), backend.cluster_id().to_string()));
            if !args.quiet {
                eprintln!(
                    "caiclust: {} {n} ipyparallel engines ready; connect with ipyparallel.Client(os.environ[\"{IPP_CONNECTION_ENV}\"])",
                    "note:".bold()
                );
            }
            Some(backend)
        }
        None => None,
    };
    let stall = (args.stall > 0.0).then(|| Duration::from_secs_f64(args.stall));
    let outcome = child::run(&args.command, &env, stall);
    if let Some(backend) = cluster {
        backend.shutdown();
    }
    match outcome {
        Ok(child::Ended::Exited(code)) => Ok(code),
        Ok(child::Ended::Hung(hang)) => {
            eprintln!("{}", hang_message(&hang, &plan));
            Ok(HANG_EXIT)
        }
        Err(e) => {
            eprintln!("caiclust run: error: {e}");
            Ok(e.exit_status())
        }
    }
}

/// `caiclust: CC001: worker 4242 hung in libgomp after fork; ...`.
fn hang_message(hang: &caiclust_core::hang::Hang, plan: &ProgramPlan) -> String {
    let runtime = hang
        .runtime
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| format!(" in {}", n.to_string_lossy()))
        .unwrap_or_default();
    let rerun = match plan.after.safer_start_method() {
        Some(m) if m != "fork" => format!("rerun with --start-method {m}"),
        _ => "rerun with --start-method forkserver".to_string(),
    };
    format!(
        "caiclust: {}: worker {} hung{runtime} after fork ({}, {:.0} s); {} stopped the program and its processes; {rerun}\n  {} {}: {}{}",
        hang.rule_id,
        hang.pid,
        hang.how.as_str(),
        hang.stalled.as_secs_f64(),
        "the hang watchdog".bold(),
        hang.rule_id,
        hang.rule_name,
        hang.message,
        hang.fix
            .as_ref()
            .map(|f| format!("\n  fix: {f}"))
            .unwrap_or_default()
    )
}
