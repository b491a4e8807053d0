//! What to start and how: the backend's configuration ([`IppConfig`],
//! with the launchers and the clusters to attach to), its checks, and the
//! JSON configuration the driver reads.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_json::{json, Value};

use super::IppError;

/// An ipyparallel launcher, by the name ipyparallel registers it under
/// (`ipcluster start --engines=NAME`), or a launcher class by its dotted
/// path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Launcher {
    /// Processes on this machine.
    #[default]
    Local,
    /// `mpiexec -n N`.
    Mpi,
    /// `srun -n N ipengine` inside a Slurm allocation: the engines land
    /// on the allocation's nodes (the driver's launcher class, ipyparallel's
    /// MPI launcher with `srun` for `mpiexec` and no MPI in the engines).
    Srun,
    /// One engine set per host over SSH.
    Ssh,
    /// A Slurm job (`sbatch`).
    Slurm,
    /// A PBS/Torque job (`qsub`).
    Pbs,
    /// A Sun Grid Engine job.
    Sge,
    /// An LSF job (`bsub`).
    Lsf,
    /// A launcher class, `package.module.ClassName`.
    Class(String),
}

impl Launcher {
    pub fn as_str(&self) -> &str {
        match self {
            Launcher::Local => "local",
            Launcher::Mpi => "mpi",
            Launcher::Srun => "srun",
            Launcher::Ssh => "ssh",
            Launcher::Slurm => "slurm",
            Launcher::Pbs => "pbs",
            Launcher::Sge => "sge",
            Launcher::Lsf => "lsf",
            Launcher::Class(c) => c,
        }
    }
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Launcher {
    type Err = IppError;
    fn from_str(s: &str) -> Result<Self, IppError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "local" => Launcher::Local,
            "mpi" | "mpiexec" => Launcher::Mpi,
            "srun" => Launcher::Srun,
            "ssh" => Launcher::Ssh,
            "slurm" => Launcher::Slurm,
            "pbs" => Launcher::Pbs,
            "sge" => Launcher::Sge,
            "lsf" => Launcher::Lsf,
            _ if is_class_path(s.trim()) => Launcher::Class(s.trim().to_string()),
            _ => {
                return Err(IppError::Config(format!(
                    "unknown ipyparallel launcher '{s}' (expected local, mpi, srun, ssh, slurm, \
                     pbs, sge, lsf, or a launcher class as package.module.ClassName)"
                )))
            }
        })
    }
}

fn is_class_path(s: &str) -> bool {
    s.contains('.')
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !part.starts_with(|c: char| c.is_ascii_digit())
        })
}

/// A running cluster to use instead of starting one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// The controller's client connection file
    /// (`<profile>/security/ipcontroller-<cluster id>-client.json`).
    ConnectionFile(PathBuf),
    /// A profile by name (in `$IPYTHONDIR`), and the cluster id it was
    /// started with (`ipcluster start --cluster-id`; none: the default).
    Profile {
        profile: String,
        cluster_id: Option<String>,
    },
    /// A profile folder, and the cluster id.
    ProfileDir {
        dir: PathBuf,
        cluster_id: Option<String>,
    },
}

/// How to start (or reach) the cluster and run tasks on it.
#[derive(Debug, Clone)]
pub struct IppConfig {
    /// The interpreter of the environment with ipyparallel; local engines
    /// and the controller run with it too.
    pub python: PathBuf,
    /// Engines to start (when attaching: engines to wait for).
    pub engines: usize,
    pub engine_launcher: Launcher,
    pub controller_launcher: Launcher,
    /// More launcher configuration, as ipyparallel's traitlets config:
    /// section (class name) → option → value, e.g.
    /// `SlurmEngineSetLauncher` → `account` → `"lab"`.
    pub launcher_config: BTreeMap<String, BTreeMap<String, Value>>,
    /// Where the controller listens (default `127.0.0.1`: loopback only;
    /// `*` or an interface's address for engines on other hosts).
    pub controller_ip: Option<String>,
    /// The address engines and clients use to reach the controller, when
    /// it listens on every interface.
    pub controller_location: Option<String>,
    /// More `ipcontroller` arguments.
    pub controller_args: Vec<String>,
    /// More `ipengine` arguments.
    pub engine_args: Vec<String>,
    /// Use this cluster instead of starting one: it is not stopped at the
    /// end, and tasks past their timeout are stopped only on engines of
    /// this host.
    pub attach: Option<Attach>,
    /// The engines' environment (on top of this process's, for local
    /// engines): the recommended thread limits and anything else.
    pub env: BTreeMap<String, String>,
    /// The engines' working folder (default: this process's).
    pub work_dir: Option<PathBuf>,
    /// Where the run's profile folder is made (default: the temporary
    /// folder). Batch launchers (Slurm, PBS) need a folder every node
    /// sees.
    pub profile_parent: Option<PathBuf>,
    /// The engines must have registered by then.
    pub startup_timeout: Duration,
    /// Per-task timeout (a task's own overrides it).
    pub timeout: Option<Duration>,
    /// How many times a task whose engine died is tried again on another
    /// engine (0: never).
    pub retries: u32,
    /// Between interrupting a cancelled task and killing its engine; also
    /// between TERM and KILL for commands past their timeout.
    pub grace: Duration,
    /// The controller's heartbeat period; an engine that misses three is
    /// taken for dead.
    pub heartbeat: Duration,
    /// Start a new engine in place of one stopped for a timeout or a
    /// cancellation (clusters this backend started).
    pub replace_engines: bool,
}

impl IppConfig {
    /// `engines` local engines with `python`, controller on loopback, 60 s
    /// startup deadline, no task timeout, 1 retry, 2 s grace, 1 s
    /// heartbeat.
    pub fn new(python: impl Into<PathBuf>, engines: usize) -> IppConfig {
        IppConfig {
            python: python.into(),
            engines,
            engine_launcher: Launcher::Local,
            controller_launcher: Launcher::Local,
            launcher_config: BTreeMap::new(),
            controller_ip: None,
            controller_location: None,
            controller_args: Vec::new(),
            engine_args: Vec::new(),
            attach: None,
            env: BTreeMap::new(),
            work_dir: None,
            profile_parent: None,
            startup_timeout: Duration::from_secs(60),
            timeout: None,
            retries: 1,
            grace: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
            replace_engines: true,
        }
    }

    /// Probe `python`'s environment, ask the rules for a plan with
    /// `engines` workers and add the recommended environment (thread
    /// limits of every runtime present) to the engines' (explicit entries
    /// stay).
    pub fn recommended(mut self) -> Result<IppConfig, IppError> {
        let options = caiclust_probe::ProbeOptions {
            python: Some(self.python.clone()),
            ..caiclust_probe::ProbeOptions::default()
        };
        let facts = caiclust_probe::probe_python(&options).map_err(|e| IppError::Probe {
            python: self.python.clone(),
            message: e.to_string(),
        })?;
        let config = caiclust_rules::Config {
            workers: Some(self.engines.max(1)),
            ..caiclust_rules::Config::default()
        };
        let rec = caiclust_rules::recommend(&facts, &config);
        self.apply_recommendation(&rec);
        Ok(self)
    }

    /// Add a recommendation's environment to the engines' (explicit
    /// entries stay).
    pub fn apply_recommendation(&mut self, rec: &caiclust_rules::Recommendation) {
        for e in &rec.env {
            self.env
                .entry(e.name.clone())
                .or_insert_with(|| e.value.clone());
        }
    }

    pub(super) fn validate(&self) -> Result<(), IppError> {
        if self.attach.is_none() && self.engines == 0 {
            return Err(IppError::Config(
                "an ipyparallel cluster needs at least one engine (engines = 0)".into(),
            ));
        }
        if self.startup_timeout.is_zero() {
            return Err(IppError::Config(
                "the startup deadline must be longer than zero".into(),
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(IppError::Config(
                "the task timeout must be longer than zero".into(),
            ));
        }
        if self.heartbeat < Duration::from_millis(100) {
            return Err(IppError::Config(format!(
                "the heartbeat period {} ms is too short (at least 100 ms)",
                self.heartbeat.as_millis()
            )));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(IppError::Config(format!(
                    "bad engine environment variable {k:?}={v:?}"
                )));
            }
        }
        if let Some(dir) = &self.work_dir {
            if self.engine_launcher == Launcher::Local && !dir.is_dir() {
                return Err(IppError::Config(format!(
                    "the engines' working folder {} does not exist",
                    dir.display()
                )));
            }
        }
        if let Some(Attach::ConnectionFile(f)) = &self.attach {
            if !f.is_file() {
                return Err(IppError::Config(format!(
                    "the ipyparallel connection file {} does not exist",
                    f.display()
                )));
            }
        }
        for section in self.launcher_config.keys() {
            if section.is_empty()
                || !section
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(IppError::Config(format!(
                    "bad launcher configuration section '{section}' (expected a class name such \
                     as SlurmEngineSetLauncher)"
                )));
            }
        }
        super::reach::check_controller_reach(self)
    }
}

/// The configuration the driver reads (the second line of its input):
/// every choice of `config`, with the run's profile folder and cluster id.
pub(super) fn driver_config(config: &IppConfig, profile_dir: &Path, cluster_id: &str) -> Value {
    let attach = config.attach.as_ref().map(|a| match a {
        Attach::ConnectionFile(f) => json!({"url_file": f}),
        Attach::Profile {
            profile,
            cluster_id,
        } => json!({"profile": profile, "cluster_id": cluster_id}),
        Attach::ProfileDir { dir, cluster_id } => {
            json!({"profile_dir": dir, "cluster_id": cluster_id})
        }
    });
    json!({
        "mode": if attach.is_some() { "attach" } else { "start" },
        "attach": attach,
        "engines": config.engines,
        "min_engines": config.engines.max(1),
        "profile_dir": profile_dir,
        "cluster_id": cluster_id,
        "engine_launcher": config.engine_launcher.as_str(),
        "controller_launcher": config.controller_launcher.as_str(),
        "launcher_config": config.launcher_config,
        "controller_ip": config.controller_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
        "controller_location": config.controller_location,
        "controller_args": config.controller_args,
        "engine_args": config.engine_args,
        "engine_env": config.env,
        "work_dir": config.work_dir,
        "startup_timeout": config.startup_timeout.as_secs_f64(),
        "heartbeat_ms": config.heartbeat.as_millis() as u64,
        "retries": config.retries,
        "grace": config.grace.as_secs_f64(),
        "replace_engines": config.replace_engines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launchers_parse_by_ipyparallel_name_or_class() {
        for l in [
            Launcher::Local,
            Launcher::Mpi,
            Launcher::Srun,
            Launcher::Ssh,
            Launcher::Slurm,
            Launcher::Pbs,
            Launcher::Sge,
            Launcher::Lsf,
            Launcher::Class("my_pkg.launch.Engines".into()),
        ] {
            assert_eq!(l.as_str().parse::<Launcher>().unwrap(), l);
        }
        assert_eq!("MPIEXEC".parse::<Launcher>().unwrap(), Launcher::Mpi);

        for bad in ["", "torque", "a..b", "1pkg.X", "pkg.", "has space.X"] {
            let e = bad.parse::<Launcher>().unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn bad_configurations_are_refused_with_their_reason() {
        let ok = IppConfig::new("python3", 2);
        assert!(ok.validate().is_ok());
        let mut cases: Vec<(IppConfig, &str)> = Vec::new();
        let mut c = ok.clone();
        c.engines = 0;
        cases.push((c, "at least one engine"));
        let mut c = ok.clone();
        c.startup_timeout = Duration::ZERO;
        cases.push((c, "startup deadline"));
        let mut c = ok.clone();
        c.timeout = Some(Duration::ZERO);
        cases.push((c, "task timeout"));
        let mut c = ok.clone();
        c.heartbeat = Duration::from_millis(10);
        cases.push((c, "heartbeat"));
        let mut c = ok.clone();
        c.env.insert("A=B".into(), "x".into());
        cases.push((c, "\"A=B\""));
        let mut c = ok.clone();
        c.launcher_config
            .insert("Slurm Engines".into(), BTreeMap::new());
        cases.push((c, "'Slurm Engines'"));
        let mut c = ok.clone();
        c.work_dir = Some(PathBuf::from("/no/such/work/dir"));
        cases.push((c, "/no/such/work/dir"));
        for (c, want) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
        // Attaching needs no engine count.
        let mut c = ok.clone();
        c.engines = 0;
        c.attach = Some(Attach::Profile {
            profile: "default".into(),
            cluster_id: None,
        });
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_driver_configuration_carries_every_choice() {
        let mut c = IppConfig::new("python3", 3);
        c.engine_launcher = Launcher::Slurm;
        c.env.insert("OMP_NUM_THREADS".into(), "1".into());
        c.timeout = Some(Duration::from_secs(5));
        c.launcher_config.insert(
            "SlurmEngineSetLauncher".into(),
            BTreeMap::from([("account".to_string(), json!("lab"))]),
        );
        let v = driver_config(&c, Path::new("/tmp/p"), "cid");
        assert_eq!(v["mode"], "start");
        assert_eq!(v["engines"], 3);
        assert_eq!(v["engine_launcher"], "slurm");
        assert_eq!(v["controller_ip"], "127.0.0.1", "loopback by default");
        assert_eq!(v["engine_env"]["OMP_NUM_THREADS"], "1");
        assert_eq!(
            v["launcher_config"]["SlurmEngineSetLauncher"]["account"],
            "lab"
        );
        assert_eq!(v["cluster_id"], "cid");
        assert_eq!(v["heartbeat_ms"], 1000);
        c.attach = Some(Attach::ConnectionFile("/x/client.json".into()));
        let v = driver_config(&c, Path::new("/tmp/p"), "cid");
        assert_eq!(v["mode"], "attach");
        assert_eq!(v["attach"]["url_file"], "/x/client.json");
    }
}
