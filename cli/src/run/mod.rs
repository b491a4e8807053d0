//! `caiclust run -- CMD ARGS...`: run one program (a CaImAn script, say)
//! with the recommended environment.
//!
//! caiclust probes the interpreter (the command's own when the command is
//! `python ...`, else `--python`, the active environment or `python3`),
//! asks the rules for their recommendation, sets the thread variables it
//! names (a variable already set in the environment, or given with
//! `--env`, wins, and the summary says so), lints the script when the
//! command is `python script.py`, then runs the command as its child and
//! exits as it did (see [`child`]).
//!
//! ```text
//! caiclust run -- python caiman_pipeline.py --fnames movie.tif
//! caiclust run --print-env                  # the variables, without running
//! ```

pub mod child;

use std::path::{Path, PathBuf};

use caiclust_core::probe::{probe_python, Facts, ProbeError, ProbeOptions};
use caiclust_core::rules::{
    lint_scripts, recommend, Config, EnvSetting, Level, Plan, Recommendation,
};
use colored::Colorize as _;

/// caiclust's own errors (as `env`, `nice` and `timeout` use it).
pub const ERROR_EXIT: u8 = 125;

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
    /// The program and its arguments.
    /// Start an ipyparallel cluster of N engines for the program (engines
    /// with the recommended environment, controller on loopback, a fresh
    /// profile), pass its connection file in CAICLUST_IPP_CONNECTION_FILE,
    /// and stop it when the program ends.
    #[arg(long, value_name = "N")]
    pub engines: Option<usize>,
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Where an applied variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The recommendation, with its reason.
    Recommended(String),
    /// Already set in the environment to something else; kept.
    Environment { recommended: String },
    /// `--env`.
    Explicit,
}

/// One variable the program runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub name: String,
    pub value: String,
    pub origin: Origin,
}

/// Decide every variable: `--env` first, then what the environment
/// already sets (non-empty), then the recommendation.
pub fn decide_env(
    recommended: &[EnvSetting],
    explicit: &[(String, String)],
    current: impl Fn(&str) -> Option<String>,
) -> Vec<Applied> {
    let mut out: Vec<Applied> = Vec::new();
    for (k, v) in explicit {
        out.retain(|a| &a.name != k);
        out.push(Applied {
            name: k.clone(),
            value: v.clone(),
            origin: Origin::Explicit,
        });
    }
    for e in recommended {
        if out.iter().any(|a| a.name == e.name) {
            continue;
        }
        match current(&e.name).filter(|v| !v.is_empty()) {
            Some(v) if v != e.value => out.push(Applied {
                name: e.name.clone(),
                value: v,
                origin: Origin::Environment {
                    recommended: e.value.clone(),
                },
            }),
            _ => out.push(Applied {
                name: e.name.clone(),
                value: e.value.clone(),
                origin: Origin::Recommended(e.reason.clone()),
            }),
        }
    }
    out
}

/// Is `program` a Python interpreter (`python`, `python3.12`,
/// `.venv/bin/python`, `python.exe`)?
pub fn is_python(program: &str) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".exe").unwrap_or(&name);
    name.strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// The script of `python [options] script.py args...`; `None` for
/// `python -m mod`, `python -c code`, an interactive interpreter or a
/// command that is not Python.
pub fn script_of(argv: &[String]) -> Option<PathBuf> {
    let (program, args) = argv.split_first()?;
    if !is_python(program) {
        return None;
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-" || a == "--" {
            return it.next().filter(|s| *s != "-").map(PathBuf::from);
        }
        if let Some(opts) = a.strip_prefix('-') {
            if opts.starts_with('-') {
                // --version, --help and the like: nothing runs.
                continue;
            }
            // Options are bundled (-uOO); -c and -m end the interpreter's
            // options; -X and -W take a value (attached or next).
            for (i, c) in opts.char_indices() {
                match c {
                    'c' | 'm' => return None,
                    'X' | 'W' => {
                        if i + 1 == opts.len() {
                            it.next();
                        }
                        break;
                    }
                    _ => {}
                }
            }
            continue;
        }
        return Some(PathBuf::from(a));
    }
    None
}

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

/// One line: what is applied and why.
fn summary(facts: &Facts, rec: &Recommendation, applied: &[Applied]) -> String {
    let set: Vec<String> = applied
        .iter()
        .filter(|a| a.origin != Origin::Explicit && !matches!(a.origin, Origin::Environment { .. }))
        .map(|a| format!("{}={}", a.name, a.value))
        .collect();
    let python = facts
        .python
        .as_ref()
        .map(|p| p.executable.display().to_string());
    let sizing = format!(
        "{} thread(s) per process for {} worker(s){}",
        rec.threads_per_worker.value,
        rec.workers.value,
        python
            .as_ref()
            .map(|p| format!("; {p}"))
            .unwrap_or_default()
    );
    let mut s = if !set.is_empty() {
        format!("caiclust: running with {} ({sizing})", set.join(" "))
    } else if rec.env.is_empty() {
        format!(
            "caiclust: no thread variables to set (no threaded runtime found{})",
            python.map(|p| format!(" for {p}")).unwrap_or_default()
        )
    } else {
        format!("caiclust: every recommended variable is set already ({sizing})")
    };
    for a in applied {
        match &a.origin {
            Origin::Environment { recommended } => s.push_str(&format!(
                "; kept {}={} from your environment (recommended {recommended})",
                a.name, a.value
            )),
            Origin::Explicit => s.push_str(&format!("; {}={} from --env", a.name, a.value)),
            Origin::Recommended(_) => {}
        }
    }
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

/// Lint the script of a `python script.py` command; the warnings to print.
fn lint(script: &Path, facts: &Facts, config: &Config) -> Vec<String> {
    let lint = lint_scripts(&[script], Some(facts), &Plan::default(), config);
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
    if args.command.is_empty() && !args.print_env {
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
    let (facts, fallback) = probe(python)?;
    if let Some(w) = fallback {
        if !args.quiet {
            eprintln!("caiclust: {} {w}", "note:".bold());
        }
    }
    let rec = recommend(&facts, &config);
    let applied = decide_env(&rec.env, &explicit, |k| std::env::var(k).ok());

    if args.command.is_empty() {
        crate::stdout::write_stdout(&print_env_lines(&applied))?;
        return Ok(0);
    }
    if !args.quiet {
        eprintln!("{}", summary(&facts, &rec, &applied));
    }
    if args.print_env {
        eprint!("{}", print_env_lines(&applied));
    }
    if !args.no_lint {
        if let Some(script) = script_of(&args.command) {
            for w in lint(&script, &facts, &config) {
                eprintln!("{w}");
            }
        }
    }
    let mut env: Vec<(String, String)> = applied.into_iter().map(|a| (a.name, a.value)).collect();
    // --engines N: an ipyparallel cluster for the program, its engines
    // with the same environment, on loopback; stopped when it ends.
    let cluster = match args.engines {
        Some(n) => {
            let python = args
                .python
                .clone()
                .or_else(|| facts.python.as_ref().map(|p| p.executable.clone()))
                .unwrap_or_else(|| PathBuf::from("python3"));
            let mut c = caiclust_core::ipp::IppConfig::new(python, n.max(1));
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
    let outcome = child::run(&args.command, &env);
    if let Some(backend) = cluster {
        backend.shutdown();
    }
    match outcome {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("caiclust run: error: {e}");
            Ok(e.exit_status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn finds_the_script_of_a_python_command() {
        assert_eq!(
            script_of(&w(&["python", "-u", "-X", "dev", "run.py", "-m"])),
            Some("run.py".into())
        );
        assert_eq!(
            script_of(&w(&["/venv/bin/python3.12", "-Wignore", "a.py"])),
            Some("a.py".into())
        );
        assert_eq!(script_of(&w(&["python3", "-m", "caiman"])), None);
        assert_eq!(script_of(&w(&["python3", "-uc", "print(1)"])), None);
        assert_eq!(script_of(&w(&["python3"])), None);
        assert_eq!(script_of(&w(&["sh", "x.py"])), None);
        assert_eq!(script_of(&w(&["pythonista", "x.py"])), None);
        assert!(is_python("C:\\Python311\\python.exe") || cfg!(unix));
    }

    #[test]
    fn explicit_and_environment_values_win() {
        let rec = vec![
            EnvSetting {
                name: "OMP_NUM_THREADS".into(),
                value: "2".into(),
                reason: "r1".into(),
            },
            EnvSetting {
                name: "OPENBLAS_NUM_THREADS".into(),
                value: "2".into(),
                reason: "r2".into(),
            },
            EnvSetting {
                name: "MKL_NUM_THREADS".into(),
                value: "2".into(),
                reason: "r3".into(),
            },
        ];
        let explicit = vec![("MKL_NUM_THREADS".to_string(), "4".to_string())];
        let env = |k: &str| match k {
            "OMP_NUM_THREADS" => Some("8".to_string()),
            "OPENBLAS_NUM_THREADS" => Some(String::new()),
            _ => None,
        };
        let a = decide_env(&rec, &explicit, env);
        let find = |n: &str| a.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(find("MKL_NUM_THREADS").origin, Origin::Explicit);
        assert_eq!(find("MKL_NUM_THREADS").value, "4");
        assert_eq!(
            find("OMP_NUM_THREADS").origin,
            Origin::Environment {
                recommended: "2".into()
            }
        );
        assert_eq!(find("OMP_NUM_THREADS").value, "8");
        assert_eq!(find("OPENBLAS_NUM_THREADS").value, "2", "empty is unset");
        assert_eq!(a.len(), 3);
    }
}
