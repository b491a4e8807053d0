//! Which packages a script runs, and where: in the parent before its
//! workers are forked, and in the workers (the functions it sends them).
//!
//! A GNU OpenMP pool hangs forked workers only when the parent started its
//! threads before the fork *and* a worker enters an OpenMP region again
//! (issue #14: CaImAn's own pipeline never hangs under fork; it hangs when
//! OpenMP ran in the parent first). The hazard rules read this, through
//! [`crate::Workload`], to tell a runtime that is only installed from one
//! the script really uses on both sides of the fork.
//!
//! Calls count by the top-level package their callee resolves to (`KMeans(...).fit`
//! after `from sklearn.cluster import KMeans` is `sklearn`); the script's
//! own functions count for what they call, directly or through others.
//! A package is *imported* when any `import` names it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use rustpython_parser::ast::{self, Constant, Expr, Ranged};

use super::model::{Call, Model};
use super::pools;

/// The packages a script imports and calls, by where the calls run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptUsage {
    /// Top-level packages the script imports (`numpy`, `sklearn`).
    pub imports: BTreeSet<String>,
    /// Packages the parent calls before a call that may fork workers
    /// (a pool, `Process().start()`, `os.fork()`), as far as the source
    /// shows the order.
    pub before_fork: BTreeSet<String>,
    /// Packages the functions sent to workers call (tasks, initializers,
    /// `Process` targets), directly or through the script's own functions.
    pub in_workers: BTreeSet<String>,
    /// Thread counts set in code before a fork that the variables do not
    /// undo, by the package whose pools they size (`*`: every OpenMP
    /// runtime, as `omp_set_num_threads` or threadpoolctl), the largest
    /// given (`null`: computed at run time or all CPUs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub threads_before_fork: BTreeMap<String, Option<usize>>,
    /// Code the script runs that is not read: its own modules (a
    /// `NAME.py` or `NAME/` package beside it) and native libraries it
    /// loads itself (`ctypes.CDLL(path)`, cffi's `dlopen`). What they run
    /// on either side of the fork is unknown, so a runtime the script does
    /// not reach itself is judged as if no script were known.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unread_code: BTreeSet<String>,
    /// The parent initialises CUDA before a call that may fork workers
    /// ([`initialises_cuda`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cuda_before_fork: bool,
}

impl ScriptUsage {
    /// Add another script's usage (a program of several).
    pub fn merge(&mut self, other: &ScriptUsage) {
        self.imports.extend(other.imports.iter().cloned());
        self.before_fork.extend(other.before_fork.iter().cloned());
        self.cuda_before_fork |= other.cuda_before_fork;
        self.in_workers.extend(other.in_workers.iter().cloned());
        for (package, threads) in &other.threads_before_fork {
            record_threads(&mut self.threads_before_fork, package, *threads);
        }
        self.unread_code.extend(other.unread_code.iter().cloned());
    }

    /// The thread count set in code for a pool reached by `packages`, if
    /// any (`Some(None)`: set, computed at run time).
    pub fn threads_for<'p>(
        &self,
        mut packages: impl Iterator<Item = &'p String>,
    ) -> Option<Option<usize>> {
        let mut found = self.threads_before_fork.get("*").copied();
        for p in packages.by_ref() {
            if let Some(t) = self.threads_before_fork.get(p) {
                found = Some(bigger(found.flatten(), *t, found.is_some()));
            }
        }
        found
    }
}

/// Keep the larger count (`None`, computed, wins: it may be any number).
fn bigger(have: Option<usize>, new: Option<usize>, had: bool) -> Option<usize> {
    match (had, have, new) {
        (false, _, n) => n,
        (true, None, _) | (true, _, None) => None,
        (true, Some(a), Some(b)) => Some(a.max(b)),
    }
}

pub(crate) fn record_threads(
    map: &mut BTreeMap<String, Option<usize>>,
    package: &str,
    threads: Option<usize>,
) {
    let had = map.get(package).copied();
    let value = bigger(had.flatten(), threads, had.is_some());
    map.insert(package.to_string(), value);
}

/// Read the usage of a script's model.
pub(crate) fn usage_of(model: &Model<'_>) -> ScriptUsage {
    let imports: BTreeSet<String> = model
        .imports
        .iter()
        .map(|i| top_level(&i.module).to_string())
        .filter(|m| !m.is_empty() && m != "__future__")
        .collect();
    // The package a call runs: its callee's, or for the script's own
    // function compiled by a package's decorator (numba's `@njit`), the
    // decorator's.
    let package_of = |call: &Call<'_>| -> Vec<String> {
        let top = top_level(&call.callee);
        if imports.contains(top) {
            return vec![top.to_string()];
        }
        call.callee
            .strip_prefix("__main__.")
            .map(|own| package_of_function(model, &imports, own))
            .unwrap_or_default()
    };
    let forks: Vec<&Call<'_>> = model
        .calls
        .iter()
        .filter(|c| pools::forks_workers(c).is_some())
        .collect();
    // A decorator call (`@njit(parallel=True)`) compiles nothing and
    // starts no pool when the function is defined: it is no use.
    let decorating: BTreeSet<usize> = model
        .functions
        .iter()
        .flat_map(|d| {
            d.decorator_calls
                .iter()
                .map(|c| c.range().start().to_usize())
        })
        .collect();
    let parent_calls: Vec<&Call<'_>> = model
        .calls
        .iter()
        .filter(|c| !decorating.contains(&c.node.range().start().to_usize()))
        .filter(|c| forks.iter().any(|f| model.runs_before(c, f)))
        .collect();
    let before_fork = parent_calls.iter().flat_map(|c| package_of(c)).collect();
    let cuda_before_fork = parent_calls.iter().any(|c| initialises_cuda(c));
    let mut in_workers = BTreeSet::new();
    let mut tasks: BTreeSet<&str> = BTreeSet::new();
    for call in &model.calls {
        for task in pools::task_calls(call) {
            let Some(value) = task.task.value.as_deref() else {
                continue;
            };
            match value.strip_prefix("__main__.") {
                Some(function) => {
                    tasks.insert(function);
                    // A compiled function sent as the task itself.
                    in_workers.extend(package_of_function(model, &imports, function));
                }
                None if imports.contains(top_level(value)) => {
                    in_workers.insert(top_level(value).to_string());
                }
                None => {}
            }
        }
    }
    let run_in_workers = functions_run_by(model, tasks);
    in_workers.extend(
        model
            .calls
            .iter()
            .filter(|c| c.function.is_some_and(|f| run_in_workers.contains(f)))
            .flat_map(package_of),
    );
    ScriptUsage {
        imports,
        before_fork,
        in_workers,
        threads_before_fork: BTreeMap::new(),
        unread_code: native_loads(model),
        cuda_before_fork,
    }
}

/// A call that initialises CUDA in its process: any CuPy call, anything
/// under a `cuda` attribute (`torch.cuda.*`, `numba.cuda.*`,
/// `model.cuda()`), or a call given a `"cuda…"` device (`x.to("cuda")`,
/// `torch.zeros(3, device="cuda:0")`).
fn initialises_cuda(call: &Call<'_>) -> bool {
    top_level(&call.callee) == "cupy"
        || call.callee.split('.').any(|part| part == "cuda")
        || call.args.iter().any(|a| {
            matches!(a.expr, Expr::Constant(ast::ExprConstant { value: Constant::Str(s), .. })
                if s.starts_with("cuda"))
        })
}

/// Calls that load a native library the probe cannot see (a path the
/// script computes): `ctypes.CDLL(...)`, `ctypes.cdll.LoadLibrary(...)`,
/// numpy's `ctypeslib.load_library`, cffi's `dlopen`.
fn native_loads(model: &Model<'_>) -> BTreeSet<String> {
    const LOADERS: &[&str] = &[
        "ctypes.CDLL",
        "ctypes.PyDLL",
        "ctypes.WinDLL",
        "ctypes.OleDLL",
        "ctypes.cdll.LoadLibrary",
        "ctypes.pydll.LoadLibrary",
        "ctypes.windll.LoadLibrary",
        "numpy.ctypeslib.load_library",
    ];
    model
        .calls
        .iter()
        .filter(|c| {
            LOADERS.contains(&c.callee.as_str())
                || (c.callee.starts_with("cffi.") && c.callee.ends_with(".dlopen"))
        })
        .map(|c| format!("a native library loaded with {}", c.callee))
        .collect()
}

/// The `imports` that name a module of the script's own (as
/// [`ScriptUsage::unread_code`] entries): `NAME.py`,
/// a `NAME/` folder or a `NAME.*.so`-style extension beside the script
/// (Python puts the script's folder first on `sys.path`).
pub(crate) fn local_modules(script: &Path, imports: &BTreeSet<String>) -> BTreeSet<String> {
    let dir = match script.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeSet::new();
    };
    let names: BTreeSet<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                return Some(name);
            }
            let stem = name.split('.').next()?.to_string();
            (name.ends_with(".py") || name.ends_with(".so") || name.ends_with(".pyd"))
                .then_some(stem)
        })
        .collect();
    imports
        .iter()
        .filter(|i| names.contains(*i))
        .map(|i| format!("module {i} beside the script"))
        .collect()
}

/// The imported packages whose decorators compile the script's own
/// `function` (`numba` for `@njit`).
fn package_of_function(
    model: &Model<'_>,
    imports: &BTreeSet<String>,
    function: &str,
) -> Vec<String> {
    model
        .functions
        .iter()
        .filter(|d| d.name == function)
        .flat_map(|d| d.decorators.iter())
        .map(|d| top_level(d))
        .filter(|p| imports.contains(*p))
        .map(str::to_string)
        .collect()
}

/// `functions` and every script function they call, directly or through
/// others.
fn functions_run_by<'a>(model: &Model<'a>, functions: BTreeSet<&'a str>) -> BTreeSet<&'a str> {
    let mut set = functions;
    loop {
        let before = set.len();
        let called: Vec<&'a str> = model
            .calls
            .iter()
            .filter(|c| c.function.is_some_and(|f| set.contains(f)))
            .filter_map(|c| c.callee.strip_prefix("__main__."))
            .filter_map(|f| model.functions.iter().find(|d| d.name == f).map(|d| d.name))
            .collect();
        set.extend(called);
        if set.len() == before {
            return set;
        }
    }
}

/// `sklearn` of `sklearn.cluster.KMeans().fit`.
fn top_level(dotted: &str) -> &str {
    let end = dotted.find(['.', '(', '[']).unwrap_or(dotted.len());
    &dotted[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn usage(src: &str) -> ScriptUsage {
        crate::script_plan(Path::new("t.py"), src)
            .unwrap_or_else(|e| panic!("{e}"))
            .usage
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn calls_in_the_parent_before_the_pool_and_in_the_tasks() {
        let u = usage(
            "import multiprocessing\nimport numpy as np\nfrom sklearn.cluster import KMeans\n\
             def fit(seed):\n    return KMeans(n_clusters=2).fit(np.ones((4, 2)))\n\
             if __name__ == '__main__':\n    fit(0)\n\
             \x20   with multiprocessing.get_context('fork').Pool(2) as p:\n\
             \x20       p.map(fit, range(3))\n",
        );
        assert_eq!(u.imports, set(&["multiprocessing", "numpy", "sklearn"]));
        assert_eq!(u.before_fork, set(&["numpy", "sklearn"]));
        assert_eq!(u.in_workers, set(&["numpy", "sklearn"]));
    }

    #[test]
    fn a_task_the_parent_never_runs_is_not_before_the_fork() {
        let u = usage(
            "import multiprocessing\nimport numpy as np\nfrom sklearn.cluster import KMeans\n\
             def fit(seed):\n    return KMeans().fit(np.ones((4, 2)))\n\
             def helper(x):\n    return fit(x)\n\
             if __name__ == '__main__':\n    x = np.zeros(3)\n\
             \x20   with multiprocessing.Pool(2) as p:\n        p.map(helper, range(3))\n",
        );
        assert_eq!(u.before_fork, set(&["numpy"]));
        assert_eq!(u.in_workers, set(&["numpy", "sklearn"]));
    }

    #[test]
    fn calls_after_the_pool_and_unimported_names_do_not_count() {
        let u = usage(
            "import multiprocessing\nimport lightgbm as lgb\n\
             def task(x):\n    return float(x)\n\
             with multiprocessing.Pool(2) as p:\n    p.map(task, range(3))\n\
             lgb.train({}, None)\n",
        );
        assert!(u.before_fork.is_empty(), "{:?}", u.before_fork);
        assert!(u.in_workers.is_empty(), "{:?}", u.in_workers);
        assert!(u.imports.contains("lightgbm"));
    }

    #[test]
    fn a_native_library_the_script_loads_itself_is_unread_code() {
        let u = usage(
            "import ctypes, os, multiprocessing\nlib = ctypes.CDLL(os.environ['LIB'])\n\
             def task(n):\n    return lib.work(n)\n\
             if __name__ == '__main__':\n    task(0)\n\
             \x20   with multiprocessing.Pool(2) as p:\n        p.map(task, range(3))\n",
        );
        assert_eq!(
            u.unread_code,
            set(&["a native library loaded with ctypes.CDLL"])
        );
        assert!(usage("import numpy\n").unread_code.is_empty());
    }

    #[test]
    fn a_function_compiled_by_a_packages_decorator_runs_that_package() {
        let u = usage(
            "import multiprocessing\nimport numpy as np\nfrom numba import njit, prange\n\
             @njit(parallel=True)\ndef total(a):\n    s = 0.0\n    for i in prange(a.shape[0]):\n        s += a[i]\n    return s\n\
             def task(n):\n    return total(np.ones(n))\n\
             if __name__ == '__main__':\n    total(np.ones(10))\n\
             \x20   with multiprocessing.Pool(2) as p:\n        p.map(task, range(3))\n\
             \x20       p.map(total, [np.ones(3)])\n",
        );
        assert_eq!(u.before_fork, set(&["numba", "numpy"]));
        assert_eq!(u.in_workers, set(&["numba", "numpy"]));
        // Defined (decorated) before the fork, first run in the workers.
        let defined_only = usage(
            "import multiprocessing\nfrom numba import njit\n\
             @njit(parallel=True)\ndef total(n):\n    return n\n\
             if __name__ == '__main__':\n\
             \x20   with multiprocessing.Pool(2) as p:\n        p.map(total, range(3))\n",
        );
        assert!(
            defined_only.before_fork.is_empty(),
            "{:?}",
            defined_only.before_fork
        );
        assert_eq!(defined_only.in_workers, set(&["numba"]));
        let undecorated = usage(
            "import multiprocessing\nimport numba\n\
             def total(a):\n    return sum(a)\n\
             if __name__ == '__main__':\n    total([1])\n\
             \x20   with multiprocessing.Pool(2) as p:\n        p.map(total, [[1]])\n",
        );
        assert!(
            undecorated.before_fork.is_empty(),
            "{:?}",
            undecorated.before_fork
        );
        assert!(
            undecorated.in_workers.is_empty(),
            "{:?}",
            undecorated.in_workers
        );
    }

    #[test]
    fn a_package_function_sent_as_the_task_runs_in_the_workers() {
        let u = usage(
            "import multiprocessing\nimport numpy\n\
             if __name__ == '__main__':\n    with multiprocessing.Pool(2) as p:\n\
             \x20       p.map(numpy.sum, [[1], [2]])\n",
        );
        assert_eq!(u.in_workers, set(&["numpy"]));
    }
}
