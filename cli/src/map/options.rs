//! The `caiclust map` command line, and the values in it that need
//! checking: durations, `K=V` pairs, the halt policy, the function name.

use std::path::PathBuf;
use std::time::Duration;

use caiclust_core::{HaltPolicy, StartMethod};

use super::MapError;

/// Run a command (or a Python function) once per input, GNU parallel
/// style, on a pool sized and configured by the rules.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MapArgs {
    /// Jobs to run at once (default: the recommended number of workers).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    /// Stop a job (and its child processes: TERM, then KILL) that runs
    /// longer than this: seconds, or with a unit (90s, 5m, 2h, 1d, 1h30m),
    /// or a percentage of the median run time of the jobs that succeeded
    /// so far (300%).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Attempts per job, as GNU parallel: 3 runs a failing job at most 3
    /// times.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub retries: u32,
    /// When to stop early: never, soon|now,fail|success|done=N or N% (e.g.
    /// now,fail=1, soon,fail=10%). soon starts no more jobs; now also stops
    /// the running ones.
    #[arg(long, value_name = "POLICY")]
    pub halt: Option<String>,
    /// Log every finished job to FILE in GNU parallel's format.
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,
    /// Skip the jobs already in the job log (run the ones that did not
    /// finish). Needs --joblog.
    #[arg(long, requires = "joblog", conflicts_with = "resume_failed")]
    pub resume: bool,
    /// Skip the jobs the job log shows succeeded (run again the failed and
    /// the unfinished ones). Needs --joblog.
    #[arg(long, requires = "joblog")]
    pub resume_failed: bool,
    /// Print the jobs' output in input order (default: as they finish).
    #[arg(short = 'k', long)]
    pub keep_order: bool,
    /// Put each job's inputs and a tab before every line it prints.
    #[arg(long)]
    pub tag: bool,
    /// Run the command through `sh -c` (pipes, redirections, `$VAR`); the
    /// inputs are quoted where they are substituted. Default: no shell,
    /// each word one argument.
    #[arg(long, conflicts_with = "function")]
    pub shell: bool,
    /// Read inputs from FILE, one per line (repeatable; `-` is standard
    /// input).
    #[arg(short = 'a', long = "arg-file", value_name = "FILE")]
    pub arg_file: Vec<PathBuf>,
    /// Inputs in files and on standard input end with a NUL byte, not a
    /// newline (for `find -print0`).
    #[arg(short = '0', long)]
    pub null: bool,
    /// Call this Python function once per input: `package.module:function`
    /// (the working folder is importable). Each input is one string
    /// argument; the results are JSON lines on standard output.
    #[arg(short = 'f', long = "function", value_name = "MODULE:FUNC")]
    pub function: Option<String>,
    /// With -f: each input is JSON; an array is passed as positional
    /// arguments, an object as keyword arguments, anything else as the one
    /// argument.
    #[arg(long, requires = "function")]
    pub json_args: bool,
    /// The Python interpreter (or venv folder) to probe and to run -f
    /// functions in. Default: the active VIRTUAL_ENV or CONDA_PREFIX, else
    /// python3 on PATH.
    #[arg(long, value_name = "P")]
    pub python: Option<PathBuf>,
    /// Show a progress bar with an ETA on standard error (default: when it
    /// is a terminal; forced elsewhere, e.g. into a Slurm log: a line every
    /// two seconds).
    #[arg(long)]
    pub bar: bool,
    /// Never show the progress bar.
    #[arg(long, conflicts_with = "bar")]
    pub no_bar: bool,
    /// How workers start: spawn, forkserver or fork (default: the
    /// recommended one). Matters for -f; commands always start fresh.
    #[arg(long, value_name = "METHOD")]
    pub start_method: Option<StartMethod>,
    /// Use fork even when the rules see a fork hazard.
    #[arg(long)]
    pub force_fork: bool,
    /// Where jobs run: local (worker pools on this machine), ipyparallel
    /// (engines, started for this run with the recommended environment, or
    /// an existing cluster with --connection-file), or single. Default:
    /// the recommended one (ipyparallel on a multi-node Slurm allocation).
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<caiclust_core::rules::Backend>,
    /// ipyparallel: the engine launcher (local, mpi, srun, ssh, slurm,
    /// pbs, sge, lsf, or a launcher class name). -j is the number of
    /// engines.
    #[arg(long, value_name = "LAUNCHER", requires = "backend")]
    pub launcher: Option<String>,
    /// ipyparallel: where the controller listens (`*`, or an address the
    /// engines reach). Launchers that may start engines on other hosts
    /// need it: loopback, the default, is refused for them.
    #[arg(long, value_name = "ADDR", requires = "backend")]
    pub controller_ip: Option<String>,
    /// ipyparallel: the address engines dial when the controller listens
    /// on `*`.
    #[arg(long, value_name = "ADDR", requires = "backend")]
    pub controller_location: Option<String>,
    /// ipyparallel: attach to the running cluster of this client
    /// connection file (ipcontroller-client.json) instead of starting one.
    #[arg(long, value_name = "FILE", requires = "backend")]
    pub connection_file: Option<PathBuf>,
    /// Inspect a job that made no progress for this long and report why it
    /// hangs (same units as --timeout, no percentage).
    #[arg(long, value_name = "DURATION")]
    pub stall: Option<String>,
    /// Time between TERM and KILL when stopping a job (default 2s).
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Set a variable for every job (repeatable; wins over the
    /// recommendation).
    #[arg(long, value_name = "K=V")]
    pub env: Vec<String>,
    /// Don't probe the environment: no recommended thread variables,
    /// defaults for the rest (one job at a time unless -j).
    #[arg(long)]
    pub no_auto: bool,
    /// Print the commands that would run, one per line, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Plan with a saved facts snapshot (`caiclust probe --json`) instead
    /// of probing.
    #[arg(long, value_name = "FILE")]
    pub facts: Option<std::path::PathBuf>,
    /// Print the pool's plan as JSON (workers, start method, variables,
    /// the hazard policy's verdict) and run nothing.
    #[arg(long)]
    pub print_plan: bool,
    /// Say how the jobs run (workers, start method, variables) before
    /// starting.
    #[arg(short, long)]
    pub verbose: bool,
    /// The command, then the inputs: `CMD ARGS... ::: a b c`, `::::
    /// FILE`. Replacement strings: {} {.} {/} {//} {/.} {#} {%} {##} and
    /// {1} {2.} ... for several input sources; without any, the inputs are
    /// appended. No command: each input is a shell command line.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--timeout`: fixed, or relative to the median successful run time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timeout {
    Fixed(Duration),
    PercentOfMedian(f64),
}

impl Timeout {
    pub fn parse(s: &str) -> Result<Timeout, MapError> {
        if let Some(p) = s.trim().strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(p) if p.is_finite() && p > 0.0 => Ok(Timeout::PercentOfMedian(p)),
                _ => Err(MapError::Usage(format!(
                    "--timeout '{s}': a percentage must be a positive number, e.g. 300%"
                ))),
            };
        }
        parse_duration("--timeout", s).map(Timeout::Fixed)
    }
}

/// Seconds (`1.5`) or a sum of numbers with units s, m, h, d (`1h30m`).
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, MapError> {
    let bad = || {
        MapError::Usage(format!(
            "{flag} '{s}': expected seconds or a duration such as 90s, 5m, 2h, 1d, 1h30m"
        ))
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0f64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => return Err(bad()),
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() {
        total += num.parse::<f64>().map_err(|_| bad())?;
    }
    if !(total.is_finite() && total > 0.0) {
        return Err(bad());
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// `--halt`, through the core's parser.
pub fn parse_halt(s: &str) -> Result<HaltPolicy, MapError> {
    s.parse::<HaltPolicy>()
        .map_err(|e| MapError::Usage(format!("--halt: {e}")))
}

/// `--env K=V`.
pub fn parse_env(pairs: &[String]) -> Result<Vec<(String, String)>, MapError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') => {
                Ok((k.to_string(), v.to_string()))
            }
            _ => Err(MapError::Usage(format!("--env '{p}': expected NAME=VALUE"))),
        })
        .collect()
}

/// `-f package.module:function`.
pub fn check_function(f: &str) -> Result<(), MapError> {
    let ok = f.split_once(':').is_some_and(|(m, func)| {
        !m.is_empty()
            && !func.is_empty()
            && m.split('.').all(is_identifier)
            && func.split('.').all(is_identifier)
    });
    if ok {
        Ok(())
    } else {
        Err(MapError::Usage(format!(
            "-f '{f}': expected package.module:function, e.g. mypkg.tasks:process"
        )))
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| parse_duration("--timeout", s).map(|d| d.as_secs_f64());
        assert_eq!(d("1.5").unwrap(), 1.5);
        assert_eq!(d("90s").unwrap(), 90.0);
        assert_eq!(d("1h30m").unwrap(), 5400.0);
        assert_eq!(d("2d").unwrap(), 172800.0);
        for bad in ["", "0", "-1", "5x", "m", "1..2s", "inf"] {
            let e = d(bad).unwrap_err().to_string();
            assert!(e.contains("--timeout") && e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(
            Timeout::parse("300%").unwrap(),
            Timeout::PercentOfMedian(300.0)
        );
        assert!(Timeout::parse("0%").is_err());
    }

    #[test]
    fn env_pairs_and_functions() {
        assert_eq!(
            parse_env(&["A=1=2".into(), "B=".into()]).unwrap(),
            [("A".into(), "1=2".into()), ("B".into(), String::new())]
        );
        assert!(parse_env(&["=1".into()]).is_err());
        assert!(parse_env(&["A".into()]).is_err());
        assert!(check_function("pkg.mod:f").is_ok());
        assert!(check_function("mod:Class.method").is_ok());
        for bad in ["mod", "mod:", ":f", "a b:f", "mod:f()"] {
            assert!(check_function(bad).is_err(), "{bad}");
        }
        assert!(parse_halt("now,fail=1").is_ok());
        assert!(parse_halt("sometimes")
            .unwrap_err()
            .to_string()
            .contains("--halt"));
    }
}
