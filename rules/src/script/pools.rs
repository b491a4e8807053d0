//! What the script rules know about process pools: which resolved values
//! are pools, which of their methods send a function to the workers, the
//! constructors that take a function (`initializer=`, `target=`), the
//! calls that start worker processes (and those that may fork them), and
//! the start method each asks for.

use super::model::{self, Arg, Call};

/// A kind of process pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    /// `multiprocessing.Pool` (also from a context).
    Pool,
    /// `concurrent.futures.ProcessPoolExecutor`.
    Executor,
    /// CaImAn's `dview` from `setup_cluster` with the multiprocessing
    /// backend: a `multiprocessing.Pool`.
    CaimanPool,
}

/// A pool value: its kind and the start method it was created with
/// (`Some("")` for the default context, `None` when not known here).
pub(crate) struct PoolValue {
    pub kind: PoolKind,
    pub method: Option<String>,
}

/// Is this resolved value a process pool? `multiprocessing.Pool()`,
/// `multiprocessing.get_context(spawn).Pool()`,
/// `concurrent.futures.ProcessPoolExecutor(forkserver)`,
/// `caiman.cluster.setup_cluster(multiprocessing)[1]`.
pub(crate) fn pool_value(value: &str) -> Option<PoolValue> {
    let (plain, method) = model::strip_context(value);
    let method = method.map(str::to_string);
    match plain.as_str() {
        "multiprocessing.Pool()" | "multiprocessing.pool.Pool()" => Some(PoolValue {
            kind: PoolKind::Pool,
            method,
        }),
        _ => {
            for ctor in [
                "concurrent.futures.ProcessPoolExecutor(",
                "concurrent.futures.process.ProcessPoolExecutor(",
            ] {
                if let Some(rest) = plain.strip_prefix(ctor) {
                    let m = rest.strip_suffix(')')?;
                    return Some(PoolValue {
                        kind: PoolKind::Executor,
                        method: Some(m.to_string()),
                    });
                }
            }
            let backend = plain
                .strip_prefix("caiman.cluster.setup_cluster(")?
                .strip_suffix(")[1]")?;
            matches!(backend, "multiprocessing" | "local").then_some(PoolValue {
                kind: PoolKind::CaimanPool,
                method: None,
            })
        }
    }
}

/// A call that hands a function to worker processes: the function's
/// argument, what receives it, and the pool's start method as far as the
/// call shows it.
pub(crate) struct TaskCall<'c, 'a> {
    /// The function argument.
    pub task: &'c Arg<'a>,
    /// `Pool.map`, `ProcessPoolExecutor.submit`, `Process(target=...)`.
    pub what: String,
    pub kind: PoolKind,
    /// `Some("spawn")` when the pool asks for it; `Some("")` or `None`
    /// when it takes the default.
    pub method: Option<String>,
}

/// Methods of a `multiprocessing.Pool` whose first argument runs in the
/// workers.
const POOL_METHODS: &[&str] = &[
    "map",
    "map_async",
    "imap",
    "imap_unordered",
    "starmap",
    "starmap_async",
    "apply",
    "apply_async",
];

/// The task functions a call sends to worker processes.
pub(crate) fn task_calls<'c, 'a>(call: &'c Call<'a>) -> Vec<TaskCall<'c, 'a>> {
    let mut out = Vec::new();
    // A method of a pool value.
    if let Some((object, method)) = call.callee.rsplit_once('.') {
        if let Some(pool) = pool_value(object) {
            let sends = match pool.kind {
                PoolKind::Pool | PoolKind::CaimanPool => POOL_METHODS.contains(&method),
                PoolKind::Executor => matches!(method, "submit" | "map"),
            };
            let keyword = if pool.kind == PoolKind::Executor {
                "fn"
            } else {
                "func"
            };
            if let Some(task) = call.arg(0, keyword).filter(|_| sends) {
                let owner = match pool.kind {
                    PoolKind::Pool => "Pool",
                    PoolKind::Executor => "ProcessPoolExecutor",
                    PoolKind::CaimanPool => "dview",
                };
                out.push(TaskCall {
                    task,
                    what: format!("{owner}.{method}"),
                    kind: pool.kind,
                    method: pool.method,
                });
            }
        }
    }
    // Constructors that take a function.
    let (plain, method) = model::strip_context(&call.callee);
    let method = method.map(str::to_string);
    let (what, kind, position, keyword) = match plain.as_str() {
        "multiprocessing.Pool" | "multiprocessing.pool.Pool" => {
            ("Pool(initializer=...)", PoolKind::Pool, 1, "initializer")
        }
        "concurrent.futures.ProcessPoolExecutor"
        | "concurrent.futures.process.ProcessPoolExecutor" => (
            "ProcessPoolExecutor(initializer=...)",
            PoolKind::Executor,
            2,
            "initializer",
        ),
        "multiprocessing.Process" | "multiprocessing.process.Process" => {
            ("Process(target=...)", PoolKind::Pool, 1, "target")
        }
        _ => return out,
    };
    if let Some(task) = call.arg(position, keyword) {
        let method = if kind == PoolKind::Executor {
            // `mp_context=` as resolved in the executor's value.
            call.arg(1, "mp_context")
                .and_then(context_method)
                .map(str::to_string)
                .or(method)
        } else {
            method
        };
        out.push(TaskCall {
            task,
            what: what.to_string(),
            kind,
            method,
        });
    }
    out
}

/// The start method a context argument asks for
/// (`mp_context=mp.get_context("spawn")`, or a name bound to one):
/// `Some("")` for the default context or a computed method, `None` when it
/// is not a context at all.
pub(crate) fn context_method<'c>(context: &'c Arg<'_>) -> Option<&'c str> {
    context
        .value
        .as_deref()?
        .strip_prefix("multiprocessing.get_context(")?
        .strip_suffix(')')
}

/// Does this call start worker processes that stay alive until stopped?
/// Returns what it starts.
pub(crate) fn starts_processes(call: &Call<'_>) -> Option<&'static str> {
    let (plain, _) = model::strip_context(&call.callee);
    Some(match plain.as_str() {
        "multiprocessing.Pool" | "multiprocessing.pool.Pool" => "a multiprocessing.Pool",
        "multiprocessing.Manager" => "a multiprocessing.Manager",
        "concurrent.futures.ProcessPoolExecutor"
        | "concurrent.futures.process.ProcessPoolExecutor" => "a ProcessPoolExecutor",
        "multiprocessing.Process().start" | "multiprocessing.process.Process().start" => {
            "a multiprocessing.Process"
        }
        "dask.distributed.LocalCluster" | "distributed.LocalCluster" => "a Dask LocalCluster",
        // Without an address, a Client starts its own LocalCluster.
        "dask.distributed.Client" | "distributed.Client" => {
            if call.arg(0, "address").is_some() {
                return None;
            }
            "a Dask Client (with its LocalCluster)"
        }
        "caiman.cluster.setup_cluster" => {
            return caiman_backend(call)
                .filter(|b| matches!(*b, "multiprocessing" | "local"))
                .map(|_| "CaImAn's multiprocessing pool");
        }
        _ => return None,
    })
}

/// The backend a `setup_cluster` call asks for: the literal, the default
/// `multiprocessing`, or `None` when it is computed.
pub(crate) fn caiman_backend<'a>(call: &'a Call<'_>) -> Option<&'a str> {
    match call.arg(0, "backend") {
        None => Some("multiprocessing"),
        Some(a) => model::str_const(a.expr),
    }
}

/// A call that starts processes which may run the parent's code, so may
/// be forked: what it starts, and the start method it asks for itself
/// (`Some("fork")` for `os.fork()`, `Some("spawn")` for
/// `get_context("spawn").Pool()`, `None` for the default context).
/// A `Manager` (its server runs none of the script's code), Dask (spawn
/// by default) and ipyparallel engines (programs of their own) are not
/// counted.
pub(crate) fn forks_workers(call: &Call<'_>) -> Option<(&'static str, Option<String>)> {
    let (plain, method) = model::strip_context(&call.callee);
    let method = method.filter(|m| !m.is_empty()).map(str::to_string);
    let context = |position, keyword| {
        call.arg(position, keyword)
            .and_then(context_method)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
    };
    Some(match plain.as_str() {
        "os.fork" | "os.forkpty" => ("os.fork()", Some("fork".into())),
        "multiprocessing.Pool" => ("multiprocessing.Pool", method),
        "multiprocessing.pool.Pool" => ("multiprocessing.Pool", context(4, "context")),
        "concurrent.futures.ProcessPoolExecutor"
        | "concurrent.futures.process.ProcessPoolExecutor" => {
            ("a ProcessPoolExecutor", context(1, "mp_context"))
        }
        "multiprocessing.Process().start" | "multiprocessing.process.Process().start" => {
            ("a multiprocessing.Process", method)
        }
        "caiman.cluster.setup_cluster" => {
            caiman_backend(call).filter(|b| matches!(*b, "multiprocessing" | "local"))?;
            ("CaImAn's setup_cluster", None)
        }
        _ => return None,
    })
}
