//! Whether the engines can reach the controller, checked before anything
//! starts (issue #15, point 3).
//!
//! ipyparallel's best-known multi-host failure: the controller listens on
//! loopback (its default, and this backend's: safe for local runs), the
//! engines start on other hosts, and they never connect; the run waits
//! for engines that cannot register. Here a launcher that may put engines
//! on other hosts (Slurm, PBS, SGE and LSF jobs, SSH to a host that is not
//! this one, MPI over several hosts) with a controller that listens only on
//! loopback is refused, and the error says what to set.

use serde_json::Value;

use super::config::{IppConfig, Launcher};
use super::IppError;

/// Refuse a loopback-only controller when engines may run elsewhere.
pub(super) fn check_controller_reach(config: &IppConfig) -> Result<(), IppError> {
    if config.attach.is_some() {
        return Ok(());
    }
    let Some(why) = engines_elsewhere(config) else {
        return Ok(());
    };
    let ip = config.controller_ip.as_deref().unwrap_or("127.0.0.1");
    if !is_loopback(ip) {
        return Ok(());
    }
    let was = if config.controller_ip.is_none() {
        "listens only on loopback (127.0.0.1, the default)".to_string()
    } else {
        format!("listens only on loopback ({ip})")
    };
    Err(IppError::Config(format!(
        "the controller {was}, but {why}: engines there could never connect. Let it listen on \
         an address they reach: controller_ip = \"*\" (every interface) or this host's address \
         on their network, and controller_location = the address the engines should dial \
         (`caiclust run --controller-ip ADDR`, IppConfig::controller_ip)"
    )))
}

/// Why the engines may run on other hosts, if they may.
fn engines_elsewhere(config: &IppConfig) -> Option<String> {
    let launcher = &config.engine_launcher;
    match launcher {
        Launcher::Local | Launcher::Class(_) => None,
        Launcher::Slurm | Launcher::Pbs | Launcher::Sge | Launcher::Lsf => Some(format!(
            "the {launcher} launcher starts the engines as batch jobs on the cluster's compute nodes"
        )),
        Launcher::Ssh => {
            let remote: Vec<String> = ssh_hosts(config)
                .into_iter()
                .filter(|h| !is_local_host(h))
                .collect();
            (!remote.is_empty()).then(|| {
                format!(
                    "the ssh launcher starts engines on {}",
                    remote.join(", ")
                )
            })
        }
        Launcher::Mpi | Launcher::Srun => mpi_over_hosts(config),
    }
}

/// The hosts of `SSHEngineSetLauncher.engines` (`{"host": n}`, or
/// `user@host`).
fn ssh_hosts(config: &IppConfig) -> Vec<String> {
    let Some(Value::Object(engines)) = config
        .launcher_config
        .get("SSHEngineSetLauncher")
        .and_then(|s| s.get("engines"))
    else {
        return Vec::new();
    };
    engines
        .keys()
        .map(|k| k.rsplit('@').next().unwrap_or(k).to_string())
        .collect()
}

/// mpiexec given hosts (`-host`, `-hostfile`, `-machinefile`), or run in
/// a Slurm allocation of more than one node.
fn mpi_over_hosts(config: &IppConfig) -> Option<String> {
    let args: Vec<String> = ["MPILauncher", "MPIEngineSetLauncher"]
        .iter()
        .filter_map(|s| config.launcher_config.get(*s))
        .filter_map(|s| s.get("mpi_args"))
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    if let Some(a) = args.iter().find(|a| {
        let a = a.trim_start_matches('-');
        a.starts_with("host") || a.starts_with("machinefile") || a == "H"
    }) {
        return Some(format!("mpiexec is given other hosts ({a})"));
    }
    let nodes: usize = std::env::var("SLURM_JOB_NUM_NODES")
        .or_else(|_| std::env::var("SLURM_NNODES"))
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    (nodes > 1).then(|| format!("mpiexec runs in a Slurm allocation of {nodes} nodes"))
}

/// `127.0.0.1`, `::1`, any `127.x`, `localhost`.
fn is_loopback(ip: &str) -> bool {
    let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
    ip.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// A host name that is this machine for certain: loopback, `localhost`,
/// or this host's own name.
fn is_local_host(host: &str) -> bool {
    if is_loopback(host) {
        return true;
    }
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let own = own.trim();
    !own.is_empty()
        && (host.eq_ignore_ascii_case(own)
            || host
                .split('.')
                .next()
                .is_some_and(|h| h.eq_ignore_ascii_case(own)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn config(launcher: Launcher, ip: Option<&str>) -> IppConfig {
        let mut c = IppConfig::new("python3", 2);
        c.engine_launcher = launcher;
        c.controller_ip = ip.map(str::to_string);
        c
    }

    fn with_ssh_hosts(mut c: IppConfig, hosts: &[&str]) -> IppConfig {
        let engines: serde_json::Map<String, Value> =
            hosts.iter().map(|h| (h.to_string(), json!(1))).collect();
        c.launcher_config.insert(
            "SSHEngineSetLauncher".into(),
            BTreeMap::from([("engines".to_string(), Value::Object(engines))]),
        );
        c
    }

    #[test]
    fn batch_launchers_with_a_loopback_controller_are_refused_with_the_fix() {
        for l in [Launcher::Slurm, Launcher::Pbs, Launcher::Sge, Launcher::Lsf] {
            for ip in [None, Some("127.0.0.1"), Some("localhost"), Some("::1")] {
                let err = check_controller_reach(&config(l.clone(), ip))
                    .expect_err("refused")
                    .to_string();
                assert!(err.contains("loopback"), "{err}");
                assert!(err.contains(&format!("the {l} launcher")), "{err}");
                assert!(err.contains("controller_ip = \"*\""), "{err}");
            }
            assert!(check_controller_reach(&config(l.clone(), Some("*"))).is_ok());
            assert!(check_controller_reach(&config(l, Some("10.0.0.5"))).is_ok());
        }
    }

    #[test]
    fn ssh_to_other_hosts_is_refused_and_to_this_host_is_not() {
        let remote = with_ssh_hosts(config(Launcher::Ssh, None), &["localhost", "root@10.9.0.2"]);
        let err = check_controller_reach(&remote)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("10.9.0.2"), "{err}");
        assert!(!err.contains("localhost,"), "{err}");
        let local = with_ssh_hosts(config(Launcher::Ssh, None), &["localhost", "me@127.0.0.1"]);
        assert!(check_controller_reach(&local).is_ok());
    }

    #[test]
    fn local_engines_and_attached_clusters_keep_loopback() {
        assert!(check_controller_reach(&config(Launcher::Local, None)).is_ok());
        let mut attached = config(Launcher::Slurm, None);
        attached.attach = Some(super::super::config::Attach::Profile {
            profile: "default".into(),
            cluster_id: None,
        });
        assert!(check_controller_reach(&attached).is_ok());
    }

    #[test]
    fn mpi_given_hosts_is_refused() {
        let mut c = config(Launcher::Mpi, None);
        c.launcher_config.insert(
            "MPILauncher".into(),
            BTreeMap::from([("mpi_args".to_string(), json!(["--hostfile", "nodes.txt"]))]),
        );
        let err = check_controller_reach(&c).expect_err("refused").to_string();
        assert!(err.contains("hostfile"), "{err}");
    }
}
