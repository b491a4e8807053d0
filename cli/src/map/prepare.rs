//! The preparation of a map, before anything runs: the command line's
//! values checked, the inputs read and combined into jobs, and what the job
//! log says is done already (`--resume`, `--resume-failed`), hence which
//! jobs run and which are skipped; then, when the run starts, the job-log
//! writer.
//!
//! Nothing here prints: what deserves a warning is collected in
//! [`Preparation::warnings`] for the driver to show.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use caiclust_core::HaltPolicy;

use super::dispatch::Start;
use super::inputs::{self, Origin, Source, SourceSpec};
use super::joblog::{Joblog, Writer};
use super::jobs::{Prepared, Work};
use super::options::{self, MapArgs, Timeout};
use super::placeholders::Template;
use super::MapError;

/// The values of the command line that need checking, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedOptions {
    pub timeout: Option<Timeout>,
    pub stall: Option<Duration>,
    pub grace: Option<Duration>,
    pub halt: Option<HaltPolicy>,
    pub env: Vec<(String, String)>,
}

impl CheckedOptions {
    /// Check everything about the command line that can be checked before
    /// reading any input.
    pub fn check(args: &MapArgs) -> Result<CheckedOptions, MapError> {
        if let Some(f) = &args.function {
            options::check_function(f)?;
        }
        if args.jobs == Some(0) {
            return Err(MapError::Usage("-j/--jobs must be at least 1".into()));
        }
        let duration = |flag: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|s| options::parse_duration(flag, s))
                .transpose()
        };
        Ok(CheckedOptions {
            timeout: args.timeout.as_deref().map(Timeout::parse).transpose()?,
            stall: duration("--stall", &args.stall)?,
            grace: duration("--grace", &args.grace)?,
            halt: args.halt.as_deref().map(options::parse_halt).transpose()?,
            env: options::parse_env(&args.env)?,
        })
    }
}

/// Everything a map knows before its cluster starts.
#[derive(Debug)]
pub struct Preparation {
    pub options: CheckedOptions,
    /// What every job does.
    pub work: Work,
    pub sources: Vec<Source>,
    /// Every job's inputs (an index into each source), job `i + 1` at `i`.
    pub rows: Vec<Vec<usize>>,
    /// The rows to run, in order: all but those the job log has done.
    pub todo: Vec<usize>,
    /// The job log read back, when resuming from it.
    pub previous: Option<Joblog>,
    /// What the user should hear about before the run (a job log about to
    /// be replaced, one whose commands no longer match the inputs).
    pub warnings: Vec<String>,
}

impl Preparation {
    /// Check the command line, read the inputs (standard input from
    /// `stdin` when it is a source; with no source given, it is one unless
    /// `stdin_is_terminal`), and read the job log when resuming.
    pub fn new(
        args: &MapArgs,
        stdin: &mut dyn Read,
        stdin_is_terminal: bool,
    ) -> Result<Preparation, MapError> {
        let options = CheckedOptions::check(args)?;
        let (work, sources) = read_inputs(args, stdin, stdin_is_terminal)?;
        let rows = inputs::combine(&sources);
        let mut warnings = Vec::new();
        let previous = previous_joblog(args, &mut warnings)?;
        let todo = to_run(rows.len(), previous.as_ref(), args.resume_failed);
        let mut prep = Preparation {
            options,
            work,
            sources,
            rows,
            todo,
            previous,
            warnings,
        };
        if let (Some(log), Some(path)) = (&prep.previous, &args.joblog) {
            let changed = resume_warnings(log, path, &prep.work, &prep.sources, &prep.rows);
            prep.warnings.extend(changed);
        }
        Ok(prep)
    }

    /// Jobs in all (done before or not).
    pub fn total(&self) -> u64 {
        self.rows.len() as u64
    }

    /// The job `start` names: its task and command, built from its inputs.
    pub fn job(&self, start: &Start) -> Prepared {
        self.work.prepare(
            &self.sources,
            &self.rows[start.row],
            start.seq,
            start.slot,
            self.total(),
        )
    }

    /// The inputs of `row` joined by spaces (the `--tag` text).
    pub fn tag(&self, row: usize) -> String {
        self.rows[row]
            .iter()
            .enumerate()
            .map(|(s, &v)| self.sources[s].values[v].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `--dry-run`: the commands that would run, one per line (a newline
    /// in one reads `\n`).
    pub fn dry_run(&self) -> String {
        let mut out = String::new();
        for &i in &self.todo {
            let seq = i as u64 + 1;
            let p = self
                .work
                .prepare(&self.sources, &self.rows[i], seq, 1, self.total());
            out.push_str(&p.command.replace('\n', "\\n"));
            out.push('\n');
        }
        out
    }

    /// The job log's writer for the run (`--joblog`): the log read back
    /// continued, or a new one.
    pub fn open_joblog(&self, path: Option<&Path>) -> Result<Option<Writer>, MapError> {
        Ok(match (path, &self.previous) {
            (Some(p), Some(log)) => Some(Writer::append(p, log)?),
            (Some(p), None) => Some(Writer::create(p)?),
            (None, _) => None,
        })
    }

    /// Nothing to run: a job log asked for and not resumed still starts
    /// afresh (its header alone).
    pub fn log_nothing_run(&self, path: Option<&Path>) -> Result<(), MapError> {
        if let (Some(p), None) = (path, &self.previous) {
            Writer::create(p)?;
        }
        Ok(())
    }
}

/// The inputs, read, and the work each job does with them.
fn read_inputs(
    args: &MapArgs,
    stdin: &mut dyn Read,
    stdin_is_terminal: bool,
) -> Result<(Work, Vec<Source>), MapError> {
    let mut line = inputs::split(&args.command, &args.arg_file)?;
    if let (Some(f), Some(first)) = (&args.function, line.command.first()) {
        return Err(MapError::Usage(format!(
            "give a command or -f {f}, not both (the command starts with '{first}')"
        )));
    }
    if line.sources.is_empty() {
        if stdin_is_terminal {
            return Err(MapError::Usage(
                "no inputs: give them after ::: (or :::: FILE, -a FILE), or pipe them in, one per line".into(),
            ));
        }
        line.sources.push(SourceSpec {
            origin: Origin::Stdin,
            values: Vec::new(),
            linked: false,
        });
    }
    let sources = inputs::read_all(line.sources, args.null, stdin)?;
    let work = match &args.function {
        Some(f) => Work::Call {
            function: f.clone(),
            json: if args.json_args {
                Some(Work::parse_json_inputs(&sources)?)
            } else {
                None
            },
        },
        None if line.command.is_empty() => Work::InputIsCommand,
        None => {
            let t = Template::parse(&line.command, sources.len()).map_err(MapError::Usage)?;
            if args.shell {
                Work::Shell(t)
            } else {
                Work::Argv(t)
            }
        }
    };
    Ok((work, sources))
}

/// The job log to continue (`--resume`, `--resume-failed`), read. Without
/// either, a log about to be replaced that has jobs in it earns a warning
/// (not for `--dry-run`, which writes none).
fn previous_joblog(args: &MapArgs, warnings: &mut Vec<String>) -> Result<Option<Joblog>, MapError> {
    let Some(path) = &args.joblog else {
        return Ok(None);
    };
    if args.resume || args.resume_failed {
        return Ok(Joblog::read(path)?);
    }
    if !args.dry_run {
        if let Ok(Some(old)) = Joblog::read(path) {
            if !old.entries.is_empty() {
                warnings.push(format!(
                    "replacing the job log {} ({} jobs logged); --resume would continue it",
                    path.display(),
                    old.entries.len()
                ));
            }
        }
    }
    Ok(None)
}

/// The rows to run of `rows`: those the job log `previous` does not list
/// (`--resume`), or does not list as succeeded (`--resume-failed`).
pub fn to_run(rows: usize, previous: Option<&Joblog>, resume_failed: bool) -> Vec<usize> {
    let done = previous
        .map(|log| log.done(resume_failed))
        .unwrap_or_default();
    (0..rows)
        .filter(|&i| !done.contains(&(i as u64 + 1)))
        .collect()
}

/// `--resume` goes by job number, as GNU parallel: the warnings to give
/// when the job log's commands are not what the same numbers run now, or
/// it logs jobs these inputs do not have.
pub fn resume_warnings(
    log: &Joblog,
    path: &Path,
    work: &Work,
    sources: &[Source],
    rows: &[Vec<usize>],
) -> Vec<String> {
    // {%} differs from run to run; compare only when it is not used.
    let uses_slot = matches!(work, Work::Argv(t) | Work::Shell(t) if t.uses_slot());
    let mut changed = Vec::new();
    let mut beyond = 0usize;
    for (seq, (line, command)) in log.commands() {
        let Some(row) = usize::try_from(seq - 1).ok().and_then(|i| rows.get(i)) else {
            beyond += 1;
            continue;
        };
        let now = work
            .prepare(sources, row, seq, 1, rows.len() as u64)
            .command;
        if !uses_slot && now != command {
            changed.push(format!(
                "{}:{line}: job {seq} ran `{command}`, now it would run `{now}`",
                path.display()
            ));
        }
    }
    let mut warnings = Vec::new();
    if !changed.is_empty() {
        warnings.push(format!(
            "the inputs seem to have changed since the job log was written; --resume skips jobs by number, as GNU parallel does:\n  {}{}",
            changed.iter().take(3).cloned().collect::<Vec<_>>().join("\n  "),
            if changed.len() > 3 {
                format!("\n  ... and {} more", changed.len() - 3)
            } else {
                String::new()
            }
        ));
    }
    if beyond > 0 {
        warnings.push(format!(
            "{}: {beyond} logged jobs have numbers beyond the {} jobs of these inputs",
            path.display(),
            rows.len()
        ));
    }
    warnings
}
