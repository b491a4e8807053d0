//! The cluster a map runs on: what the rules recommend, with the user's
//! choices on top (`-j`, `--start-method`, `--backend`, `--timeout`,
//! `--env`, ...); or, instead of starting it, `--print-plan`'s JSON. Also
//! `--verbose`'s one-line description of it.

use caiclust_core::{Cluster, ClusterBuilder, CoreError};

use super::options::{MapArgs, Timeout};
use super::prepare::CheckedOptions;
use super::reaper;
use super::{MapError, ERROR_EXIT};

/// What starting the cluster came to.
pub enum Launch {
    /// It runs (boxed: a cluster is large, and the other case tiny).
    Ready(Box<Cluster>),
    /// The map ends here with this status: the plan was printed, or fork
    /// was refused (and the user told why).
    Exit(u8),
}

/// A token naming this run (its jobs carry it, for the [`reaper`]).
pub fn run_token() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Start the cluster for the run marked `token` (or print its plan).
pub fn launch(args: &MapArgs, options: &CheckedOptions, token: &str) -> Result<Launch, MapError> {
    let builder = builder(args, options, token)?;
    if args.print_plan {
        return print_plan(builder).map(Launch::Exit);
    }
    match builder.build() {
        Ok(c) => Ok(Launch::Ready(Box::new(c))),
        Err(CoreError::ForkRefused { findings }) => {
            eprintln!(
                "caiclust map: error: the fork start method is refused: the rules see a fork hazard here:"
            );
            for f in &findings {
                eprintln!("  {f}");
            }
            eprintln!("use --start-method spawn or forkserver, or --force-fork if you know better");
            Ok(Launch::Exit(ERROR_EXIT))
        }
        Err(e) => Err(e.into()),
    }
}

/// The cluster, as the rules recommend, with the user's choices on top.
fn builder(
    args: &MapArgs,
    options: &CheckedOptions,
    token: &str,
) -> Result<ClusterBuilder, MapError> {
    let mut builder = Cluster::builder()
        .auto(!args.no_auto)
        .env(reaper::MARK_ENV, token.to_string())
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
        builder = builder.ipp(ipp_config(args)?);
    }
    // With fork, the template imports the function's module first, as the
    // parent of Python's fork Pool has (its state is what workers inherit).
    if let Some((module, _)) = args.function.as_deref().and_then(|f| f.split_once(':')) {
        builder = builder.preload(module);
    }
    if let Some(Timeout::Fixed(t)) = options.timeout {
        builder = builder.timeout(t);
    }
    if args.retries > 1 {
        builder = builder.attempts(args.retries);
    }
    if let Some(s) = options.stall {
        builder = builder.stall_after(s);
    }
    if let Some(g) = options.grace {
        builder = builder.grace(g);
    }
    for (k, v) in &options.env {
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
    Ok(builder)
}

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
    c.controller_ip = args.controller_ip.clone();
    c.controller_location = args.controller_location.clone();
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

/// `--print-plan`: the pool's plan as JSON, or the refusal.
fn print_plan(builder: ClusterBuilder) -> Result<u8, MapError> {
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

/// `--verbose`: how the `todo` of `total` jobs will run.
pub fn describe(cluster: &Cluster, todo: usize, total: u64) -> String {
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
