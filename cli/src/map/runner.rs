//! The map itself: read the inputs, skip what the job log says is done,
//! start the cluster, keep every slot busy, and report each job as it
//! ends.
//!
//! For commands, caiclust hands the cluster one job per free slot rather
//! than all at once: it then knows each job's slot when building its
//! command (`{%}`) and that every job it has handed out is running. Python
//! calls (`-f`) are handed out further ahead, so that tiny calls travel in
//! batches. Either way, when the run stops starting jobs (halt, Ctrl-C, a
//! closed output), what the cluster holds and has not begun is withdrawn.

use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::time::Duration;

use caiclust_core::{
    Cluster, CoreError, HaltPolicy, HaltTrigger, HaltWhen, Outcome, TaskId, Threshold,
};
use colored::Colorize as _;

use super::inputs::{self, Origin, SourceSpec};
use super::interrupt::Interrupts;
use super::joblog::{Joblog, Writer};
use super::jobs::{self, Work};
use super::options::{self, MapArgs, Timeout};
use super::output::{Finished, Printer};
use super::placeholders::Template;
use super::progress::{BarMode, Progress};
use super::reaper::{self, Reaper};
use super::{MapError, ERROR_EXIT, INTERRUPTED_EXIT};

/// How often the loop looks at Ctrl-C and the cluster's notices while
/// waiting for a result.
const POLL: Duration = Duration::from_millis(100);

/// Python calls handed to the cluster ahead, per worker: four of its
/// largest batches (two in the worker, two queued).
const CALLS_AHEAD_PER_WORKER: usize = 2048;

/// A job handed to the cluster.
struct Running {
    seq: u64,
    slot: usize,
    tag: String,
    command: String,
    call_input: Option<serde_json::Value>,
}

/// Why no more jobs start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Interrupted,
    Halted,
    OutputClosed,
    JoblogFailed,
}

/// Run a map; the exit status.
pub fn run(args: MapArgs) -> Result<u8, MapError> {
    // Everything about the command line is checked before anything runs.
    if let Some(f) = &args.function {
        options::check_function(f)?;
    }
    if args.jobs == Some(0) {
        return Err(MapError::Usage("-j/--jobs must be at least 1".into()));
    }
    let timeout = args.timeout.as_deref().map(Timeout::parse).transpose()?;
    let stall = args
        .stall
        .as_deref()
        .map(|s| options::parse_duration("--stall", s))
        .transpose()?;
    let grace = args
        .grace
        .as_deref()
        .map(|s| options::parse_duration("--grace", s))
        .transpose()?;
    let halt = args.halt.as_deref().map(options::parse_halt).transpose()?;
    let env = options::parse_env(&args.env)?;

    let mut line = inputs::split(&args.command, &args.arg_file)?;
    if let (Some(f), Some(first)) = (&args.function, line.command.first()) {
        return Err(MapError::Usage(format!(
            "give a command or -f {f}, not both (the command starts with '{first}')"
        )));
    }
    if line.sources.is_empty() {
        if std::io::stdin().is_terminal() {
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
    let sources = inputs::read_all(line.sources, args.null, &mut std::io::stdin().lock())?;
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
    let rows = inputs::combine(&sources);
    let total = rows.len() as u64;

    // The job log: what is done already.
    let previous = match &args.joblog {
        Some(p) if args.resume || args.resume_failed => Joblog::read(p)?,
        Some(p) => {
            if !args.dry_run {
                if let Ok(Some(old)) = Joblog::read(p) {
                    if !old.entries.is_empty() {
                        warn(&format!(
                            "replacing the job log {} ({} jobs logged); --resume would continue it",
                            p.display(),
                            old.entries.len()
                        ));
                    }
                }
            }
            None
        }
        None => None,
    };
    let done = previous
        .as_ref()
        .map(|log| log.done(args.resume_failed))
        .unwrap_or_default();
    let todo: Vec<usize> = (0..rows.len())
        .filter(|&i| !done.contains(&(i as u64 + 1)))
        .collect();
    if let (Some(log), Some(path)) = (&previous, &args.joblog) {
        check_resumed_commands(log, path, &work, &sources, &rows);
    }

    if args.dry_run {
        let mut out = String::new();
        for &i in &todo {
            let seq = i as u64 + 1;
            let p = work.prepare(&sources, &rows[i], seq, 1, total);
            out.push_str(&p.command.replace('\n', "\\n"));
            out.push('\n');
        }
        crate::stdout::write_stdout(&out).map_err(|e| MapError::Input {
            what: "standard output".into(),
            message: e.to_string(),
        })?;
        return Ok(0);
    }
    if rows.is_empty() {
        warn("no inputs: nothing to run");
    }
    if todo.is_empty() {
        if let Some(p) = &args.joblog {
            if previous.is_none() {
                Writer::create(p)?;
            }
        }
        return Ok(0);
    }

    // The cluster, as the rules recommend, with the user's choices on top.
    let token = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let mut builder = Cluster::builder()
        .auto(!args.no_auto)
        .env(reaper::MARK_ENV, token.clone())
        .force_fork(args.force_fork);
    if let Some(j) = args.jobs {
        builder = builder.workers(j);
    }
    if let Some(m) = args.start_method {
        builder = builder.start_method(m);
    }
    if let Some(p) = &args.python {
        builder = builder.python(p);
    }
    if let Some(b) = args.backend {
        builder = builder.backend(b);
    }
    if args.backend == Some(caiclust_core::rules::Backend::Ipyparallel) {
        builder = builder.ipp(ipp_config(&args)?);
    }
    // With fork, the template imports the function's module first, as the
    // parent of Python's fork Pool has (its state is what workers inherit).
    if let Some((module, _)) = args.function.as_deref().and_then(|f| f.split_once(':')) {
        builder = builder.preload(module);
    }
    if let Some(Timeout::Fixed(t)) = timeout {
        builder = builder.timeout(t);
    }
    if args.retries > 1 {
        builder = builder.attempts(args.retries);
    }
    if let Some(s) = stall {
        builder = builder.stall_after(s);
    }
    if let Some(g) = grace {
        builder = builder.grace(g);
    }
    for (k, v) in &env {
        builder = builder.env(k, v);
    }
    if let Some(path) = &args.facts {
        let bad = |message: String| MapError::Input {
            what: format!("--facts {}", path.display()),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let facts =
            caiclust_core::probe::Facts::from_json(&text).map_err(|e| bad(e.to_string()))?;
        builder = builder.facts(facts);
    }
    if args.print_plan {
        return print_plan(builder);
    }
    let cluster = match builder.build() {
        Ok(c) => c,
        Err(CoreError::ForkRefused { findings }) => {
            eprintln!(
                "caiclust map: error: the fork start method is refused: the rules see a fork hazard here:"
            );
            for f in &findings {
                eprintln!("  {f}");
            }
            eprintln!("use --start-method spawn or forkserver, or --force-fork if you know better");
            return Ok(ERROR_EXIT);
        }
        Err(e) => return Err(e.into()),
    };
    let workers = cluster.settings().workers;
    if args.verbose {
        eprintln!("caiclust: {}", describe_plan(&cluster, todo.len(), total));
    }

    let interrupts = match Interrupts::install() {
        Ok(i) => i,
        Err(e) => {
            warn(&e);
            Interrupts::default()
        }
    };
    let mut joblog = match (&args.joblog, &previous) {
        (Some(p), Some(log)) => Some(Writer::append(p, log)?),
        (Some(p), None) => Some(Writer::create(p)?),
        (None, _) => None,
    };
    let reaper = Reaper::start(&token);
    let mode = if args.no_bar {
        BarMode::Off
    } else if args.bar {
        BarMode::On
    } else {
        BarMode::Auto
    };
    let mut progress = Progress::new(mode, todo.len() as u64);
    let mut printer = Printer::new(args.tag, args.keep_order);

    let mut queue = todo.iter().copied();
    let mut running: HashMap<TaskId, Running> = HashMap::new();
    // Python functions have no `{%}`: keep enough calls queued in the
    // cluster for it to hand each worker two full batches (tiny calls then
    // travel hundreds to a message); commands keep one per slot: `{%}`
    // names a slot no other running job has. Calls queued and not begun
    // are withdrawn when the run stops starting jobs.
    let ahead = if args.function.is_some() {
        workers * CALLS_AHEAD_PER_WORKER
    } else {
        workers
    };
    let mut free_slots: BTreeSet<usize> = (1..=ahead).collect();
    let (mut succeeded, mut failed, mut cancelled) = (0u64, 0u64, 0u64);
    let mut stop: Option<Stop> = None;
    let mut halt_exit: Option<u8> = None;
    let mut stopping_running = false;
    let mut withdrawn = false;
    let mut runtimes: Vec<f64> = Vec::new();
    let run_total = todo.len() as u64;

    loop {
        let n = interrupts.count();
        if n >= 1 && stop != Some(Stop::Interrupted) {
            stop = Some(Stop::Interrupted);
            progress.suspend(|| {
                eprintln!(
                    "caiclust: interrupted: starting no more jobs, waiting for the {} running (Ctrl-C again stops them)",
                    running.len()
                )
            });
        }
        if n >= 2 && !stopping_running {
            stopping_running = true;
            progress.suspend(|| eprintln!("caiclust: stopping the {} running jobs", running.len()));
            for id in running.keys() {
                cluster.cancel(*id);
            }
        }
        if n >= 3 {
            break;
        }
        if stop.is_none() && printer.stdout_closed() {
            stop = Some(Stop::OutputClosed);
        }
        if stop.is_some() && !withdrawn {
            // Starting no more jobs: those handed to the cluster and not
            // begun are not started either.
            withdrawn = true;
            cluster.withdraw(running.keys().copied());
        }
        // Refill in one submission: calls once a quarter of the window has
        // drained (a batch's worth per worker), commands at every free slot.
        let mut new_tasks = Vec::new();
        let mut new_jobs = Vec::new();
        let refill = running.len() < ahead - ahead / 4 || running.len() < workers;
        while refill && stop.is_none() && running.len() + new_jobs.len() < ahead {
            let Some(i) = queue.next() else { break };
            let seq = i as u64 + 1;
            let slot = free_slots.pop_first().unwrap_or(1);
            let mut prepared = work.prepare(&sources, &rows[i], seq, slot, total);
            if let Some(Timeout::PercentOfMedian(p)) = timeout {
                if let Some(m) = median(&mut runtimes) {
                    let secs = (m * p / 100.0).max(0.001);
                    if let Ok(d) = Duration::try_from_secs_f64(secs) {
                        prepared.task = prepared.task.timeout(d);
                    }
                }
            }
            let tag = rows[i]
                .iter()
                .enumerate()
                .map(|(s, &v)| sources[s].values[v].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            printer.submitted(seq);
            new_tasks.push(prepared.task);
            new_jobs.push(Running {
                seq,
                slot,
                tag,
                command: prepared.command,
                call_input: prepared.call_input,
            });
        }
        if !new_jobs.is_empty() {
            let ids = cluster.submit_many(new_tasks);
            running.extend(ids.into_iter().zip(new_jobs));
        }
        if running.is_empty() {
            break;
        }
        for notice in cluster.notices() {
            let about = notice
                .task
                .and_then(|id| running.get(&id))
                .map(|r| format!("job {}: ", r.seq))
                .unwrap_or_default();
            progress.suspend(|| eprintln!("caiclust: note: {about}{}", notice.message));
        }
        // What is ready; before waiting, print what has gathered.
        let result = match cluster.recv_timeout(Duration::ZERO) {
            Some(r) => Some(r),
            None => {
                printer.flush(&progress);
                cluster.recv_timeout(POLL)
            }
        };
        let Some(result) = result else {
            continue;
        };
        let Some(job) = running.remove(&result.id) else {
            continue;
        };
        free_slots.insert(job.slot);
        if let Outcome::Cancelled { .. } = result.outcome {
            if result.attempts > 0 {
                cancelled += 1;
            }
            printer.finished(job.seq, None, &progress);
            continue;
        }
        let ok = result.outcome.is_success();
        if ok {
            succeeded += 1;
            runtimes.push(result.runtime.as_secs_f64());
        } else {
            failed += 1;
        }
        if let Some(w) = &mut joblog {
            if let Some(entry) = jobs::log_entry(job.seq, &result, &job.command) {
                if let Err(e) = w.write(&entry) {
                    progress.suspend(|| {
                        eprintln!(
                            "caiclust map: error: writing the job log {e}; starting no more jobs"
                        )
                    });
                    stop = Some(Stop::JoblogFailed);
                    joblog = None;
                }
            }
        }
        progress.job_done(!ok);
        let halting = match halt {
            Some(h) if halt_exit.is_none() && h.triggered(succeeded, failed, run_total) => {
                halt_exit = Some(halt_status(&h, &result, failed, run_total));
                Some(h.when == HaltWhen::Now)
            }
            _ => None,
        };
        printer.finished(
            job.seq,
            Some(Finished {
                seq: job.seq,
                tag: job.tag,
                command: job.command,
                call_input: job.call_input,
                result,
            }),
            &progress,
        );
        if let Some(now) = halting {
            if stop.is_none() {
                stop = Some(Stop::Halted);
            }
            let others = running.len();
            if now {
                for id in running.keys() {
                    cluster.cancel(*id);
                }
            }
            progress.suspend(|| {
                eprintln!(
                    "caiclust: halting (--halt {}): starting no more jobs{}",
                    args.halt.as_deref().unwrap_or(""),
                    match (now, others) {
                        (_, 0) => String::new(),
                        (true, n) => format!(", stopping the {n} running"),
                        (false, n) => format!(", waiting for the {n} running"),
                    }
                )
            });
        }
    }
    printer.drain(&progress);
    progress.finish();
    // Anything still running (a third Ctrl-C) stops with the cluster.
    drop(cluster);
    reaper.finish();

    let ended = succeeded + failed;
    let not_run = run_total - ended;
    if failed > 0 || not_run > 0 || progress.is_shown() {
        let mut s = format!(
            "caiclust: {run_total} job{}: {succeeded} succeeded, {}",
            if run_total == 1 { "" } else { "s" },
            if failed > 0 {
                format!("{failed} failed").red().bold().to_string()
            } else {
                "0 failed".to_string()
            }
        );
        if not_run > 0 {
            s.push_str(&format!(", {not_run} not run"));
            s.push_str(match stop {
                Some(Stop::Interrupted) => " (interrupted)",
                Some(Stop::Halted) => " (halted)",
                Some(Stop::OutputClosed) => " (standard output was closed)",
                Some(Stop::JoblogFailed) => " (the job log could not be written)",
                None => "",
            });
            if cancelled > 0 {
                s.push_str(&format!(", {cancelled} of them stopped while running"));
            }
            if args.joblog.is_some() {
                s.push_str("; --resume runs them");
            }
        }
        eprintln!("{s}");
    }
    Ok(match stop {
        Some(Stop::JoblogFailed) => ERROR_EXIT,
        Some(Stop::Interrupted) => INTERRUPTED_EXIT,
        _ => match (halt_exit, halt.map(|h| h.trigger)) {
            (Some(code), _) => code,
            // GNU parallel: with a percentage, the exit status is the
            // failed percentage even when the run was not halted.
            (
                None,
                Some(
                    HaltTrigger::Failures(Threshold::Percent(_))
                    | HaltTrigger::Done(Threshold::Percent(_)),
                ),
            ) => (failed * 100).div_ceil(ended.max(1)).min(100) as u8,
            (None, _) => failures_status(failed),
        },
    })
}

/// 0, the number of failures up to 100, or 101.
/// The ipyparallel cluster of `--backend ipyparallel`: engines as -j (0:
/// the recommended worker count), the launcher, or an existing cluster.
fn ipp_config(args: &MapArgs) -> Result<caiclust_core::ipp::IppConfig, MapError> {
    use caiclust_core::ipp::{Attach, IppConfig, Launcher};
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("python3"));
    let mut c = IppConfig::new(python, args.jobs.unwrap_or(0));
    if let Some(l) = &args.launcher {
        c.engine_launcher = l.parse::<Launcher>().map_err(|e| MapError::Input {
            what: format!("--launcher {l}"),
            message: e.to_string(),
        })?;
    }
    if let Some(f) = &args.connection_file {
        if !f.is_file() {
            return Err(MapError::Input {
                what: format!("--connection-file {}", f.display()),
                message: "no such file".into(),
            });
        }
        c.attach = Some(Attach::ConnectionFile(f.clone()));
    }
    Ok(c)
}

fn failures_status(failed: u64) -> u8 {
    failed.min(101) as u8
}

/// GNU parallel's exit status after a halt: with `fail=1` (or `done=1`)
/// the job's own, with a percentage the failed share of all jobs rounded
/// up, with a count the failures (at most 101), 0 when halted on
/// successes.
fn halt_status(h: &HaltPolicy, trigger: &caiclust_core::TaskResult, failed: u64, total: u64) -> u8 {
    match h.trigger {
        HaltTrigger::Failures(Threshold::Count(1)) | HaltTrigger::Done(Threshold::Count(1)) => {
            jobs::exit_status_of(trigger)
        }
        HaltTrigger::Failures(Threshold::Percent(_)) | HaltTrigger::Done(Threshold::Percent(_)) => {
            (failed * 100).div_ceil(total.max(1)).min(100) as u8
        }
        HaltTrigger::Successes(_) => 0,
        _ => failures_status(failed),
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `--resume` goes by job number, as GNU parallel: say so when the job
/// log's commands are not what the same numbers run now.
fn check_resumed_commands(
    log: &Joblog,
    path: &std::path::Path,
    work: &Work,
    sources: &[inputs::Source],
    rows: &[Vec<usize>],
) {
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
        // {%} differs from run to run; compare only when it is not used.
        let uses_slot = matches!(work, Work::Argv(t) | Work::Shell(t) if t.uses_slot());
        if !uses_slot && now != command {
            changed.push(format!(
                "{}:{line}: job {seq} ran `{command}`, now it would run `{now}`",
                path.display()
            ));
        }
    }
    if !changed.is_empty() {
        warn(&format!(
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
        warn(&format!(
            "{}: {beyond} logged jobs have numbers beyond the {} jobs of these inputs",
            path.display(),
            rows.len()
        ));
    }
}

/// `--print-plan`: the pool's plan as JSON, or the refusal.
fn print_plan(builder: caiclust_core::ClusterBuilder) -> Result<u8, MapError> {
    let doc = match builder.plan() {
        Ok((settings, advice)) => serde_json::json!({
            "workers": settings.workers,
            "start_method": settings.start_method.as_str(),
            "env": settings.env.iter().filter(|(k, _)| k.as_str() != reaper::MARK_ENV).collect::<std::collections::BTreeMap<_, _>>(),
            "verdict": advice.verdict,
            "refused": null,
        }),
        Err(CoreError::ForkRefused { findings }) => serde_json::json!({ "refused": findings }),
        Err(e) => return Err(e.into()),
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    crate::stdout::write_stdout(&s).map_err(|e| MapError::Input {
        what: "standard output".into(),
        message: e.to_string(),
    })?;
    Ok(0)
}

fn describe_plan(cluster: &Cluster, todo: usize, total: u64) -> String {
    let s = cluster.settings();
    let env: Vec<String> = s
        .env
        .iter()
        .filter(|(k, _)| k.as_str() != reaper::MARK_ENV)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut text = format!(
        "{todo} of {total} jobs, {} at a time, start method {}",
        s.workers, s.start_method
    );
    if !env.is_empty() {
        text.push_str(&format!(", with {}", env.join(" ")));
    }
    if let Some(t) = s.timeout {
        text.push_str(&format!(", timeout {:.1} s", t.as_secs_f64()));
    }
    if s.max_attempts > 1 {
        text.push_str(&format!(", {} attempts", s.max_attempts));
    }
    text
}

fn warn(message: &str) {
    eprintln!("caiclust map: {} {message}", "warning:".yellow().bold());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_follow_gnu_parallel() {
        assert_eq!(failures_status(0), 0);
        assert_eq!(failures_status(7), 7);
        assert_eq!(failures_status(100), 100);
        assert_eq!(failures_status(150), 101);
        let mut v = vec![3.0, 1.0, 2.0];
        assert_eq!(median(&mut v), Some(2.0));
        let mut v = vec![4.0, 1.0];
        assert_eq!(median(&mut v), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
