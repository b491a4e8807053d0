//! The Slurm allocation, from the `SLURM_*` variables of an environment.

use std::collections::BTreeMap;

use crate::facts::SlurmAllocation;

/// Variables that only a job (an allocation, a batch script, a step)
/// has; client settings such as `SLURM_CONF` or `SLURM_TIME_FORMAT`, which
/// users export in their shells, do not make an allocation.
const JOB_VARIABLES: &[&str] = &[
    "SLURM_JOB_ID",
    "SLURM_JOBID",
    "SLURM_CPUS_PER_TASK",
    "SLURM_CPUS_ON_NODE",
    "SLURM_NTASKS",
    "SLURM_NPROCS",
    "SLURM_JOB_NUM_NODES",
    "SLURM_NNODES",
    "SLURM_JOB_CPUS_PER_NODE",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
];

/// Read the Slurm allocation from `env`. `None` outside a job (none of
/// [`JOB_VARIABLES`] set). Values that should be counts but are not are
/// left out, with a note.
pub fn slurm_from_env(
    env: &BTreeMap<String, String>,
    notes: &mut Vec<String>,
) -> Option<SlurmAllocation> {
    if !JOB_VARIABLES.iter().any(|k| env.contains_key(*k)) {
        return None;
    }
    let text = |name: &str| {
        env.get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let mut count = |names: &[&str]| -> Option<usize> {
        let (name, value) = names
            .iter()
            .find_map(|n| env.get(*n).map(|v| (*n, v.trim())))?;
        match value.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                notes.push(format!("{name}={value:?} is not a count; ignored"));
                None
            }
        }
    };
    let alloc = SlurmAllocation {
        job_id: text("SLURM_JOB_ID").or_else(|| text("SLURM_JOBID")),
        cpus_per_task: count(&["SLURM_CPUS_PER_TASK"]),
        cpus_on_node: count(&["SLURM_CPUS_ON_NODE"]),
        ntasks: count(&["SLURM_NTASKS", "SLURM_NPROCS"]),
        nnodes: count(&["SLURM_JOB_NUM_NODES", "SLURM_NNODES"]),
        job_cpus_per_node: text("SLURM_JOB_CPUS_PER_NODE"),
        nodelist: text("SLURM_JOB_NODELIST").or_else(|| text("SLURM_NODELIST")),
    };
    if let Some(spec) = &alloc.job_cpus_per_node {
        if let Err(e) = parse_job_cpus_per_node(spec) {
            notes.push(format!("SLURM_JOB_CPUS_PER_NODE={spec:?}: {e}"));
        }
    }
    Some(alloc)
}

/// Expand Slurm's compressed per-node CPU counts (`4(x2),8`) into
/// `(cpus, nodes)` pairs: `[(4, 2), (8, 1)]`.
pub fn parse_job_cpus_per_node(spec: &str) -> Result<Vec<(usize, usize)>, String> {
    let mut out = Vec::new();
    for item in spec.trim().split(',') {
        let item = item.trim();
        let (cpus, nodes) = match item.split_once('(') {
            Some((cpus, rest)) => {
                let reps = rest
                    .strip_prefix('x')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("bad item '{item}'"))?;
                (cpus, reps)
            }
            None => (item, "1"),
        };
        let cpus = cpus
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("bad CPU count in '{item}'"))?;
        let nodes = nodes
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("bad repeat count in '{item}'"))?;
        out.push((cpus, nodes));
    }
    Ok(out)
}

/// The CPU bound a Slurm allocation puts on this process:
/// `SLURM_CPUS_PER_TASK` when set, else `SLURM_CPUS_ON_NODE`, else, in a
/// one-node allocation, `SLURM_JOB_CPUS_PER_NODE` (what `salloc` gives the
/// command it runs, which has neither of the others: seen with Slurm
/// 22.05), with the variable it came from. Zero counts are not bounds.
pub fn slurm_cpu_bound(alloc: &SlurmAllocation) -> Option<(usize, &'static str)> {
    match (alloc.cpus_per_task, alloc.cpus_on_node) {
        (Some(n), _) if n > 0 => return Some((n, "SLURM_CPUS_PER_TASK")),
        (_, Some(n)) if n > 0 => return Some((n, "SLURM_CPUS_ON_NODE")),
        _ => {}
    }
    if alloc.nnodes.is_some_and(|n| n > 1) {
        return None;
    }
    match parse_job_cpus_per_node(alloc.job_cpus_per_node.as_deref()?).ok()?[..] {
        [(n, 1)] if n > 0 => Some((n, "SLURM_JOB_CPUS_PER_NODE")),
        _ => None,
    }
}

impl SlurmAllocation {
    /// Every CPU of the allocation, over all its nodes
    /// (`SLURM_JOB_CPUS_PER_NODE`), if the variable says.
    pub fn total_cpus(&self) -> Option<usize> {
        slurm_total_cpus(self)
    }
}

/// Every CPU of the allocation, over all its nodes
/// (`SLURM_JOB_CPUS_PER_NODE`), if the variable says.
pub fn slurm_total_cpus(alloc: &SlurmAllocation) -> Option<usize> {
    let spec = alloc.job_cpus_per_node.as_deref()?;
    let total: usize = parse_job_cpus_per_node(spec)
        .ok()?
        .iter()
        .map(|(cpus, nodes)| cpus * nodes)
        .sum();
    (total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn host_slurm_absent_without_slurm_vars() {
        let mut notes = Vec::new();
        assert_eq!(slurm_from_env(&env(&[("PATH", "/bin")]), &mut notes), None);
        // A client's settings outside any job are no allocation.
        let client = env(&[
            ("SLURM_CONF", "/etc/slurm/slurm.conf"),
            ("SLURM_TIME_FORMAT", "relative"),
        ]);
        assert_eq!(slurm_from_env(&client, &mut notes), None);
        assert!(notes.is_empty());
    }

    #[test]
    fn host_slurm_reads_all_fields() {
        let mut notes = Vec::new();
        let alloc = slurm_from_env(
            &env(&[
                ("SLURM_JOB_ID", "4242"),
                ("SLURM_CPUS_PER_TASK", "4"),
                ("SLURM_CPUS_ON_NODE", "8"),
                ("SLURM_NTASKS", "2"),
                ("SLURM_NNODES", "3"),
                ("SLURM_JOB_CPUS_PER_NODE", "4(x2),8"),
                ("SLURM_JOB_NODELIST", "node[01-03]"),
            ]),
            &mut notes,
        )
        .expect("slurm vars present");
        assert_eq!(
            alloc,
            SlurmAllocation {
                job_id: Some("4242".into()),
                cpus_per_task: Some(4),
                cpus_on_node: Some(8),
                ntasks: Some(2),
                nnodes: Some(3),
                job_cpus_per_node: Some("4(x2),8".into()),
                nodelist: Some("node[01-03]".into()),
            }
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(slurm_cpu_bound(&alloc), Some((4, "SLURM_CPUS_PER_TASK")));
    }

    #[test]
    fn host_slurm_job_num_nodes_wins_over_nnodes() {
        let mut notes = Vec::new();
        let alloc = slurm_from_env(
            &env(&[("SLURM_JOB_NUM_NODES", "2"), ("SLURM_NNODES", "5")]),
            &mut notes,
        )
        .expect("slurm vars present");
        assert_eq!(alloc.nnodes, Some(2));
        assert_eq!(slurm_cpu_bound(&alloc), None);
    }

    #[test]
    fn host_slurm_garbage_counts_become_notes() {
        let mut notes = Vec::new();
        let alloc = slurm_from_env(
            &env(&[
                ("SLURM_CPUS_PER_TASK", "four"),
                ("SLURM_CPUS_ON_NODE", "6"),
                ("SLURM_JOB_CPUS_PER_NODE", "4(y2)"),
            ]),
            &mut notes,
        )
        .expect("slurm vars present");
        assert_eq!(alloc.cpus_per_task, None);
        assert_eq!(slurm_cpu_bound(&alloc), Some((6, "SLURM_CPUS_ON_NODE")));
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn host_slurm_job_cpus_per_node_expands() {
        assert_eq!(parse_job_cpus_per_node("4(x2),8"), Ok(vec![(4, 2), (8, 1)]));
        assert_eq!(parse_job_cpus_per_node("72"), Ok(vec![(72, 1)]));
        assert!(parse_job_cpus_per_node("").is_err());
        assert!(parse_job_cpus_per_node("4(x)").is_err());
        assert!(parse_job_cpus_per_node("4x2").is_err());
    }

    #[test]
    fn an_salloc_command_is_bound_by_its_one_nodes_job_cpus() {
        // What salloc -N1 -n1 gives its command (Slurm 22.05, measured).
        let one = |spec: &str, nodes: &str| {
            let mut notes = Vec::new();
            slurm_from_env(
                &env(&[
                    ("SLURM_JOB_ID", "3"),
                    ("SLURM_JOB_CPUS_PER_NODE", spec),
                    ("SLURM_JOB_NUM_NODES", nodes),
                    ("SLURM_NTASKS", "1"),
                ]),
                &mut notes,
            )
            .expect("slurm vars present")
        };
        assert_eq!(
            slurm_cpu_bound(&one("1", "1")),
            Some((1, "SLURM_JOB_CPUS_PER_NODE"))
        );
        // Several nodes: which one this process is on is not known.
        assert_eq!(slurm_cpu_bound(&one("2(x2)", "2")), None);
        assert_eq!(slurm_total_cpus(&one("2(x2),1", "3")), Some(5));
    }
}
