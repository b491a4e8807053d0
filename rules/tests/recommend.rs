//! The recommendation over the snapshot scenarios.

use std::path::Path;

use caiclust_probe::Facts;
use caiclust_rules::{recommend, Backend, Config, Recommendation};

fn advise(name: &str, config: &Config) -> Recommendation {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/snapshots/{name}.facts.json"));
    let facts = Facts::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let a = recommend(&facts, config);
    assert_eq!(a, recommend(&facts, config), "deterministic");
    let names: Vec<&str> = a.env.iter().map(|e| e.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "env sorted by name");
    for reason in [
        &a.backend.reason,
        &a.start_method.reason,
        &a.workers.reason,
        &a.threads_per_worker.reason,
    ] {
        assert!(!reason.is_empty());
    }
    assert!(a.env.iter().all(|e| !e.reason.is_empty()));
    a
}

fn env_names(a: &Recommendation) -> Vec<&str> {
    a.env.iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn pypi_fork_hazard_gives_forkserver_and_every_thread_variable() {
    let a = advise("linux-pypi-fork", &Config::default());
    assert_eq!(a.backend.value, Backend::Multiprocessing);
    assert_eq!(a.start_method.value, "forkserver");
    assert!(
        a.start_method.reason.contains("CC001"),
        "{}",
        a.start_method.reason
    );
    assert_eq!((a.workers.value, a.threads_per_worker.value), (1, 2));
    assert_eq!(
        env_names(&a),
        [
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "OPENCV_FOR_THREADS_NUM"
        ]
    );
}

#[test]
fn pthreads_only_keeps_fork() {
    let a = advise("linux-debian-openblas-pthreads-fork", &Config::default());
    assert_eq!(a.start_method.value, "fork");
    assert_eq!(env_names(&a), ["OPENBLAS_NUM_THREADS"]);
}

#[test]
fn openblas_openmp_needs_omp_num_threads() {
    let a = advise("linux-debian-openblas-openmp-fork", &Config::default());
    assert_eq!(a.start_method.value, "forkserver");
    assert!(env_names(&a).contains(&"OMP_NUM_THREADS"));
}

#[test]
fn slurm_allocation_sizes_workers() {
    let a = advise("linux-slurm-oversubscribed", &Config::default());
    assert_eq!((a.workers.value, a.threads_per_worker.value), (3, 1));
}

#[test]
fn mkl_with_libgomp_sets_the_gnu_layer() {
    let a = advise("linux-mkl-with-gomp", &Config::default());
    let layer = a
        .env
        .iter()
        .find(|e| e.name == "MKL_THREADING_LAYER")
        .expect("MKL_THREADING_LAYER");
    assert_eq!(layer.value, "GNU");
    assert!(env_names(&a).contains(&"MKL_NUM_THREADS"));
}

#[test]
fn numba_gets_numba_num_threads() {
    let a = advise("linux-numba-fork", &Config::default());
    assert_eq!(a.start_method.value, "forkserver");
    assert!(env_names(&a).contains(&"NUMBA_NUM_THREADS"));
}

#[test]
fn macos_and_windows_spawn() {
    let a = advise("macos-accelerate-default", &Config::default());
    assert_eq!(a.start_method.value, "spawn");
    assert_eq!(env_names(&a), ["VECLIB_MAXIMUM_THREADS"]);
    let w = advise("windows-64-workers", &Config::default());
    assert_eq!(w.start_method.value, "spawn");
    assert_eq!(
        w.workers.value, 60,
        "capped on Windows: {}",
        w.workers.reason
    );
}

#[test]
fn configuration_wins() {
    let config = Config {
        workers: Some(2),
        backend: Some(Backend::Ipyparallel),
        start_method: Some("spawn".into()),
        ..Config::default()
    };
    let a = advise("linux-pypi-fork", &config);
    assert_eq!(a.backend.value, Backend::Ipyparallel);
    assert_eq!(a.start_method.value, "spawn");
    assert_eq!((a.workers.value, a.threads_per_worker.value), (2, 1));
}

#[test]
fn one_cpu_is_single_and_multi_node_is_ipyparallel() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots/linux-slurm-oversubscribed.facts.json");
    let mut facts = Facts::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    facts.host.slurm.as_mut().unwrap().nnodes = Some(2);
    assert_eq!(
        recommend(&facts, &Config::default()).backend.value,
        Backend::Ipyparallel
    );
    facts.host.slurm = None;
    facts.host.usable_cpus.as_mut().unwrap().value = 1;
    let a = recommend(&facts, &Config::default());
    assert_eq!(
        (a.backend.value, a.workers.value, a.threads_per_worker.value),
        (Backend::Single, 1, 1)
    );
}
