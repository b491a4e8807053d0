//! Thread counts a script sets itself, in code: `omp_set_num_threads(n)`
//! (any library that exports it, ctypes' `CDLL` objects included),
//! `numba.set_num_threads(n)`, `torch.set_num_threads(n)`,
//! `mkl.set_num_threads(n)`, threadpoolctl's `threadpool_limits(n)` and
//! `ThreadpoolController().limit(n)`, and the thread-count keywords of
//! library calls (`nthread=`, `num_threads=`, `n_jobs=`, ...: xgboost,
//! LightGBM, CatBoost, ...; not scikit-learn's `n_jobs`, which sizes
//! joblib's workers, not its OpenMP threads).
//!
//! Such a count is the runtime's own setting: it wins over
//! `OMP_NUM_THREADS` and friends, which only give the default. A
//! libgomp pool started that way in the parent of a fork hangs the
//! forked workers that run OpenMP code, with `OMP_NUM_THREADS=1` set
//! before the interpreter started (HAZARDS, "An environment fix is not
//! always a fix"). What is recognised is data: [`COUNT_FUNCTIONS`] and
//! [`COUNT_KEYWORDS`], with [`NOT_THREADS`] for the libraries whose
//! same-named keywords count processes, not threads.
//!
//! A count of 1 (one thread: the pool never starts a thread), `0` or
//! `None` (the library's default, which the variables do size) and a
//! string (threadpoolctl's `'sequential_blas_under_openmp'`) are not
//! explicit counts here.

use rustpython_parser::ast::{self, Constant, Expr, Ranged, UnaryOp};

use super::constants::Literal;
use super::model::Call;
use super::Script;

/// The variables that size BLAS and OpenMP pools, which a
/// threadpoolctl limit replaces.
const BLAS_AND_OPENMP: &[&str] = &[
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
];

/// How a callee is recognised.
#[derive(Clone, Copy)]
enum Callee {
    /// The resolved name, exactly (`numba.set_num_threads`).
    Exact(&'static str),
    /// The last part of the resolved name, whatever the object
    /// (`ctypes.CDLL().omp_set_num_threads`, `faiss.omp_set_num_threads`).
    LastPart(&'static str),
    /// A method (the suffix) of a value that starts with the prefix:
    /// `threadpoolctl.ThreadpoolController().limit`, also after
    /// `.select(...)`.
    Method(&'static str, &'static str),
}

impl Callee {
    fn matches(self, callee: &str) -> bool {
        match self {
            Self::Exact(name) => callee == name,
            Self::LastPart(last) => callee == last || callee.rsplit('.').next() == Some(last),
            Self::Method(prefix, method) => {
                callee.starts_with(prefix) && callee.rsplit('.').next() == Some(method)
            }
        }
    }
}

/// How a count argument reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// A number of threads.
    Count,
    /// threadpoolctl's `limits`: a number, a dict of numbers by library
    /// or API, or a string.
    Limits,
}

/// A function that sets a runtime's thread count.
pub(crate) struct CountFunction {
    callee: Callee,
    /// Where its count is: position, keyword.
    position: usize,
    keyword: &'static str,
    reads: Reads,
    /// The runtime whose pool it sizes, for messages.
    pub runtime: &'static str,
    /// The variables whose value the count replaces.
    pub overrides: &'static [&'static str],
    /// The package whose pools it sizes; `None`: every OpenMP runtime.
    pub package: Option<&'static str>,
}

/// Functions that set a thread count.
pub(crate) const COUNT_FUNCTIONS: &[CountFunction] = &[
    // OpenMP's own call: GNU libgomp, LLVM libomp, Intel libiomp5,
    // through ctypes (`CDLL("libgomp.so.1").omp_set_num_threads`) or a
    // wrapper (`faiss.omp_set_num_threads`).
    CountFunction {
        callee: Callee::LastPart("omp_set_num_threads"),
        position: 0,
        keyword: "num_threads",
        reads: Reads::Count,
        runtime: "OpenMP",
        overrides: &["OMP_NUM_THREADS"],
        package: None,
    },
    // numba sizes its pool from NUMBA_NUM_THREADS, never from
    // OMP_NUM_THREADS, and uses this count below that.
    CountFunction {
        callee: Callee::Exact("numba.set_num_threads"),
        position: 0,
        keyword: "n",
        reads: Reads::Count,
        runtime: "numba's threading layer",
        overrides: &["OMP_NUM_THREADS"],
        package: Some("numba"),
    },
    // PyTorch's intra-op pool (OpenMP; libgomp in the Linux wheels).
    CountFunction {
        callee: Callee::Exact("torch.set_num_threads"),
        position: 0,
        keyword: "int",
        reads: Reads::Count,
        runtime: "PyTorch's OpenMP pool",
        overrides: &["OMP_NUM_THREADS", "MKL_NUM_THREADS"],
        package: Some("torch"),
    },
    // TensorFlow's intra-op pool (Eigen, not OpenMP): the configured
    // count wins over TF_NUM_INTRAOP_THREADS.
    CountFunction {
        callee: Callee::Exact("tensorflow.config.threading.set_intra_op_parallelism_threads"),
        position: 0,
        keyword: "num_threads",
        reads: Reads::Count,
        runtime: "TensorFlow's intra-op pool",
        overrides: &["TF_NUM_INTRAOP_THREADS"],
        package: Some("tensorflow"),
    },
    // mkl-service.
    CountFunction {
        callee: Callee::Exact("mkl.set_num_threads"),
        position: 0,
        keyword: "num_threads",
        reads: Reads::Count,
        runtime: "MKL",
        overrides: &["MKL_NUM_THREADS", "OMP_NUM_THREADS"],
        package: Some("mkl"),
    },
    // threadpoolctl calls each runtime's own setter
    // (`omp_set_num_threads`, `openblas_set_num_threads`, ...).
    CountFunction {
        callee: Callee::Exact("threadpoolctl.threadpool_limits"),
        position: 0,
        keyword: "limits",
        reads: Reads::Limits,
        runtime: "every BLAS and OpenMP runtime threadpoolctl finds",
        overrides: BLAS_AND_OPENMP,
        package: None,
    },
    CountFunction {
        callee: Callee::Method("threadpoolctl.ThreadpoolController()", "limit"),
        position: 0,
        keyword: "limits",
        reads: Reads::Limits,
        runtime: "every BLAS and OpenMP runtime threadpoolctl finds",
        overrides: BLAS_AND_OPENMP,
        package: None,
    },
];

/// Keywords that give a library call its thread count: xgboost's
/// `nthread`/`n_jobs`, LightGBM's `num_threads`/`n_jobs`, CatBoost's
/// `thread_count`, and the like. The library passes them to its runtime
/// (OpenMP, mostly), where they win over `OMP_NUM_THREADS`.
pub(crate) const COUNT_KEYWORDS: &[&str] = &[
    "nthread",
    "nthreads",
    "num_threads",
    "n_threads",
    "n_jobs",
    "thread_count",
];

/// The variables a thread-count keyword replaces.
const KEYWORD_OVERRIDES: &[&str] = &["OMP_NUM_THREADS"];

/// Top-level modules whose thread-count keywords stay within
/// `OMP_NUM_THREADS`: the library takes the smaller of its count and the
/// OpenMP default, so the variable still limits the pool. Measured here:
/// xgboost 3.2 trained with `nthread=2` in the parent and the workers,
/// `OMP_NUM_THREADS=1` exported, fork: the workers finish; LightGBM 4.7
/// with `num_threads=2` hangs them (`tests/verdicts/`, VERDICTS.md).
pub(crate) const CAPPED_BY_VARIABLE: &[&str] = &["xgboost"];

/// Top-level modules whose count keywords count processes, or joblib's
/// workers, not a runtime's threads, or are the script's own
/// (`__main__`): `joblib.Parallel(n_jobs=4)` starts processes, each with
/// its threads limited by joblib; scikit-learn's `n_jobs` "always
/// controls the amount of parallelism managed by joblib", while its
/// OpenMP threads follow `OMP_NUM_THREADS` and threadpoolctl (its
/// "Parallelism" guide), so the variable does work there.
pub(crate) const NOT_THREADS: &[&str] = &[
    "__main__",
    "sklearn",
    "multiprocessing",
    "concurrent",
    "joblib",
    "loky",
    "dask",
    "distributed",
    "ray",
    "mpire",
    "pathos",
    "billiard",
    "ipyparallel",
    "caiman",
    "caiclust",
];

/// How many threads an explicit count asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// A literal above 1, or a name bound once to one.
    Given(usize),
    /// A negative count: all CPUs (and then some less), as `n_jobs=-1`.
    AllCpus,
    /// Computed at run time (`os.cpu_count()`, a parameter), or
    /// threadpoolctl limits by library.
    Computed,
}

impl Threads {
    /// `2 threads`, `all CPUs`, `a computed number of threads`.
    pub fn describe(self) -> String {
        match self {
            Self::Given(n) => format!("{n} threads"),
            Self::AllCpus => "a thread per CPU".into(),
            Self::Computed => "a number of threads computed at run time".into(),
        }
    }
}

/// A thread count the script sets in code.
pub(crate) struct ExplicitCount<'c, 'a> {
    pub call: &'c Call<'a>,
    /// As written, shortened: `omp_set_num_threads(2)`,
    /// `XGBClassifier(nthread=THREADS)`.
    pub what: String,
    pub threads: Threads,
    /// Whose pool it sizes: `OpenMP`, `xgboost`.
    pub runtime: String,
    /// The variables whose value it replaces (none where the library
    /// keeps within them, [`CAPPED_BY_VARIABLE`]).
    pub overrides: &'static [&'static str],
    /// The package whose pools it sizes (`lightgbm`), or `None` for every
    /// OpenMP runtime of the process (`omp_set_num_threads`,
    /// threadpoolctl).
    pub package: Option<String>,
}

impl ExplicitCount<'_, '_> {
    /// Does the script open a shared library itself for it (ctypes), so
    /// that the runtime may be one no probe of the environment sees?
    pub fn through_ctypes(&self) -> bool {
        self.call.callee.starts_with("ctypes.")
    }
}

/// Every explicit thread count above 1 the script sets, in source order.
pub(crate) fn explicit_counts<'c, 'a>(script: &'c Script<'a>) -> Vec<ExplicitCount<'c, 'a>> {
    let mut out = Vec::new();
    for call in &script.model.calls {
        let name = call.callee.rsplit('.').next().unwrap_or_default();
        if let Some(f) = COUNT_FUNCTIONS
            .iter()
            .find(|f| f.callee.matches(&call.callee))
        {
            let Some(arg) = call.arg(f.position, f.keyword) else {
                continue;
            };
            let Some(threads) = read(script, call, arg.expr, f.reads) else {
                continue;
            };
            out.push(ExplicitCount {
                call,
                what: match arg.keyword {
                    Some(k) => format!("{name}({k}={})", text(script, arg.expr)),
                    None => format!("{name}({})", text(script, arg.expr)),
                },
                threads,
                runtime: f.runtime.to_string(),
                overrides: f.overrides,
                package: f.package.map(str::to_string),
            });
            continue;
        }
        let top = call.callee.split('.').next().unwrap_or_default();
        if NOT_THREADS.contains(&top) {
            continue;
        }
        let overrides = if CAPPED_BY_VARIABLE.contains(&top) {
            &[]
        } else {
            KEYWORD_OVERRIDES
        };
        let keyword_count = call.args.iter().find_map(|a| {
            let keyword = a.keyword.filter(|k| COUNT_KEYWORDS.contains(k))?;
            let threads = read(script, call, a.expr, Reads::Count)?;
            Some((
                format!("{name}({keyword}={})", text(script, a.expr)),
                threads,
            ))
        });
        if let Some((what, threads)) = keyword_count.or_else(|| params_count(script, call, name)) {
            out.push(ExplicitCount {
                call,
                what,
                threads,
                runtime: top.to_string(),
                overrides,
                package: Some(top.to_string()),
            });
        }
    }
    out
}

/// A count in a dict of parameters (`lgb.train({"num_threads": 2}, ds)`,
/// `xgb.train({"nthread": 4}, dm)`): the first count key of a dict
/// literal among the call's arguments.
fn params_count(script: &Script<'_>, call: &Call<'_>, name: &str) -> Option<(String, Threads)> {
    call.args.iter().find_map(|a| {
        let Expr::Dict(d) = a.expr else { return None };
        d.keys.iter().zip(&d.values).find_map(|(k, v)| {
            let key = super::model::str_const(k.as_ref()?)?;
            if !COUNT_KEYWORDS.contains(&key) {
                return None;
            }
            let threads = read(script, call, v, Reads::Count)?;
            Some((format!("{name}({{{key:?}: {}}})", text(script, v)), threads))
        })
    })
}

/// The count an argument asks for, if it is an explicit count above 1.
fn read(script: &Script<'_>, call: &Call<'_>, e: &Expr, reads: Reads) -> Option<Threads> {
    match script.constants.value(e, call.function) {
        Some(Literal::Int(0 | 1) | Literal::None) => return None,
        Some(Literal::Int(n)) => return Some(Threads::Given(n)),
        None => {}
    }
    match e {
        Expr::UnaryOp(u) if u.op == UnaryOp::USub && Literal::of(&u.operand).is_some() => {
            Some(Threads::AllCpus)
        }
        // A string (threadpoolctl's 'sequential_blas_under_openmp'), a
        // bool, a float: not a count.
        Expr::Constant(ast::ExprConstant {
            value: Constant::Str(_) | Constant::Bool(_) | Constant::Float(_),
            ..
        }) => None,
        // threadpoolctl's limits by library or API: a count unless all 1.
        Expr::Dict(d) if reads == Reads::Limits => {
            let all_one = d.values.iter().all(|v| {
                matches!(
                    script.constants.value(v, call.function),
                    Some(Literal::Int(0 | 1) | Literal::None)
                )
            });
            (!all_one).then_some(Threads::Computed)
        }
        _ => Some(Threads::Computed),
    }
}

/// The source text of an expression, on one line, shortened.
fn text(script: &Script<'_>, e: &Expr) -> String {
    let (start, end) = (e.range().start().to_usize(), e.range().end().to_usize());
    let one_line = script
        .source
        .text
        .get(start..end)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    const MAX: usize = 40;
    if one_line.chars().count() > MAX {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::source::Source;
    use super::*;

    /// (what, threads, runtime) of every explicit count in `src`.
    fn counts(src: &str) -> Vec<(String, Threads, String)> {
        let path = Path::new("t.py");
        let source = Source::new(path, src);
        let suite = source.parse().expect("parses");
        let script = Script::new(&source, &suite);
        explicit_counts(&script)
            .into_iter()
            .map(|c| (c.what, c.threads, c.runtime))
            .collect()
    }

    fn one(src: &str) -> (String, Threads, String) {
        let mut all = counts(src);
        assert_eq!(all.len(), 1, "{src}");
        all.remove(0)
    }

    #[test]
    fn openmp_through_ctypes_and_wrappers() {
        let (what, threads, runtime) =
            one("import ctypes\nlib = ctypes.CDLL('libgomp.so.1')\nlib.omp_set_num_threads(2)\n");
        assert_eq!(
            (what.as_str(), threads, runtime.as_str()),
            ("omp_set_num_threads(2)", Threads::Given(2), "OpenMP")
        );
        let (what, ..) = one("import faiss\nfaiss.omp_set_num_threads(8)\n");
        assert_eq!(what, "omp_set_num_threads(8)");
        let (what, ..) = one("from mylib import omp_set_num_threads\nomp_set_num_threads(4)\n");
        assert_eq!(what, "omp_set_num_threads(4)");
    }

    #[test]
    fn runtime_setters() {
        for (src, runtime) in [
            (
                "import numba\nnumba.set_num_threads(4)\n",
                "numba's threading layer",
            ),
            (
                "from numba import set_num_threads\nset_num_threads(n=4)\n",
                "numba's threading layer",
            ),
            (
                "import torch\ntorch.set_num_threads(4)\n",
                "PyTorch's OpenMP pool",
            ),
            ("import mkl\nmkl.set_num_threads(4)\n", "MKL"),
        ] {
            assert_eq!(one(src).2, runtime, "{src}");
        }
        // A setter the table does not know is not a count.
        assert_eq!(counts("import os\nos.set_num_threads(4)\n"), vec![]);
    }

    #[test]
    fn threadpoolctl_limits() {
        let src = "from threadpoolctl import threadpool_limits, ThreadpoolController\n\
                   threadpool_limits(4)\n\
                   threadpool_limits(limits=2, user_api='blas')\n\
                   with threadpool_limits(limits={'openblas': 2}):\n    pass\n\
                   ctl = ThreadpoolController()\n\
                   ctl.limit(limits=3)\n\
                   ThreadpoolController().select(user_api='openmp').limit(limits=-1)\n";
        let got: Vec<(String, Threads)> = counts(src).into_iter().map(|c| (c.0, c.1)).collect();
        assert_eq!(
            got,
            vec![
                ("threadpool_limits(4)".into(), Threads::Given(4)),
                ("threadpool_limits(limits=2)".into(), Threads::Given(2)),
                (
                    "threadpool_limits(limits={'openblas': 2})".into(),
                    Threads::Computed
                ),
                ("limit(limits=3)".into(), Threads::Given(3)),
                ("limit(limits=-1)".into(), Threads::AllCpus),
            ]
        );
        // One thread, no limit, a string policy, limits that are all 1.
        let none = "from threadpoolctl import threadpool_limits\n\
                    threadpool_limits(1)\n\
                    threadpool_limits(limits=None)\n\
                    threadpool_limits()\n\
                    threadpool_limits('sequential_blas_under_openmp')\n\
                    threadpool_limits({'blas': 1, 'openmp': 1})\n";
        assert_eq!(counts(none), vec![]);
    }

    #[test]
    fn thread_count_keywords_of_libraries() {
        let src =
            "import xgboost as xgb\nimport lightgbm\nfrom catboost import CatBoostRegressor\n\
                   import os\n\
                   N = 6\n\
                   xgb.XGBClassifier(nthread=N)\n\
                   lightgbm.train(params, data, num_threads=os.cpu_count())\n\
                   CatBoostRegressor(thread_count=-1)\n";
        let got: Vec<(String, Threads, String)> = counts(src);
        assert_eq!(
            got,
            vec![
                (
                    "XGBClassifier(nthread=N)".into(),
                    Threads::Given(6),
                    "xgboost".into()
                ),
                (
                    "train(num_threads=os.cpu_count())".into(),
                    Threads::Computed,
                    "lightgbm".into()
                ),
                (
                    "CatBoostRegressor(thread_count=-1)".into(),
                    Threads::AllCpus,
                    "catboost".into()
                ),
            ]
        );
    }

    #[test]
    fn defaults_one_thread_processes_and_own_functions_are_not_counts() {
        let src = "import xgboost as xgb\nimport joblib\nimport multiprocessing as mp\n\
                   from sklearn.cluster import KMeans\n\
                   def fit(n_jobs):\n    pass\n\
                   xgb.XGBClassifier(nthread=1)\n\
                   xgb.XGBClassifier(n_jobs=None)\n\
                   xgb.XGBClassifier(nthread=0)\n\
                   joblib.Parallel(n_jobs=4)\n\
                   KMeans(8, n_jobs=4)\n\
                   fit(n_jobs=4)\n\
                   unknown_object.train(num_threads=4)\n";
        assert_eq!(counts(src), vec![]);
    }
}
