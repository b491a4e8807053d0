//! What the rules see of a script: every call with its callee and its
//! arguments resolved through imports and simple assignments (`import
//! multiprocessing as mp`, `ctx = mp.get_context("spawn")`, `p =
//! ctx.Process(...)`, `c, dview, n = setup_cluster()`), whether it runs when
//! the module is imported (module level, outside any `def` and the `if
//! __name__ == "__main__":` guard), the loop it is in, the script's own
//! functions, the names bound to call results, the imports, the writes
//! to `os.environ` and the attributes of imported modules the script
//! replaces, all in source order.

use std::collections::{BTreeSet, HashMap};

use rustpython_parser::ast::{self, Constant, Expr, Ranged, Stmt};

/// One call in the script.
pub(crate) struct Call<'a> {
    /// The callee, resolved: `multiprocessing.Pool`,
    /// `multiprocessing.get_context(spawn).Pool`,
    /// `multiprocessing.Process().start`, `__main__.main` (a function of
    /// the script itself).
    pub callee: String,
    pub node: &'a ast::ExprCall,
    /// Runs when the module is imported: module level, outside any function
    /// and outside the `__main__` guard. Class bodies count as module level.
    pub import_time: bool,
    /// The module-level function the call is in, if any.
    pub function: Option<&'a str>,
    /// The innermost `for`/`while` loop the call is in (an id), if any.
    pub in_loop: Option<usize>,
    /// Inside a comprehension or generator expression (its element, its
    /// conditions or an inner `for`): may run once per item.
    pub in_comprehension: bool,
    /// The arguments, in order, each resolved.
    pub args: Vec<Arg<'a>>,
    /// For `x.method(...)` on a plain name: `x`.
    pub receiver: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// An argument by position (counted before any `*args`) or keyword.
    pub fn arg(&self, position: usize, keyword: &str) -> Option<&Arg<'a>> {
        self.args
            .iter()
            .find(|a| a.keyword == Some(keyword))
            .or_else(|| {
                self.args
                    .iter()
                    .filter(|a| a.keyword.is_none())
                    .take_while(|a| !matches!(a.expr, Expr::Starred(_)))
                    .nth(position)
            })
    }
}

/// One argument of a call.
pub(crate) struct Arg<'a> {
    /// `None` for a positional argument.
    pub keyword: Option<&'a str>,
    pub expr: &'a Expr,
    /// What it stands for, resolved like a callee (`__main__.work` for the
    /// script's own function, `tasks.work` for an imported one); a
    /// `functools.partial(f, ...)` stands for `f`.
    pub value: Option<String>,
    /// The local name it is, when it is a plain name.
    pub name: Option<&'a str>,
}

/// A function the script defines at module level (outside every function
/// and class body).
pub(crate) struct FunctionDef<'a> {
    pub name: &'a str,
    pub offset: usize,
    /// Defined inside the `if __name__ == "__main__":` guard.
    pub guarded: bool,
    /// Its decorators, qualified (`numba.njit` for `@njit(parallel=True)`
    /// after `from numba import njit`); those that do not resolve are left
    /// out.
    pub decorators: Vec<String>,
    /// Its decorators that are calls (`@njit(parallel=True)`).
    pub decorator_calls: Vec<&'a ast::ExprCall>,
}

/// A name bound to the result of a call: `pool = mp.Pool()`, or one
/// element of a tuple target (`c, dview, n = setup_cluster()`).
pub(crate) struct Binding<'a> {
    pub name: &'a str,
    /// The offset of the call whose result it holds.
    pub call_offset: usize,
}

/// One imported module.
pub(crate) struct Import {
    /// The full dotted name (`numpy`, `caiman.cluster`).
    pub module: String,
    pub offset: usize,
    /// Inside a function body (runs only when called).
    pub in_function: bool,
}

/// An assignment to an attribute of something imported, a monkeypatch:
/// `caiman.cluster.setup_cluster = caiclust.setup_cluster`.
pub(crate) struct Patch {
    /// The attribute, resolved: `caiman.cluster.setup_cluster`.
    pub target: String,
    /// What it is set to, resolved like an argument, if known.
    pub value: Option<String>,
}

/// `os.environ[NAME] = ...` and its relatives.
pub(crate) struct EnvWrite {
    pub name: String,
    pub offset: usize,
}

/// The script, as the rules see it.
#[derive(Default)]
pub(crate) struct Model<'a> {
    pub calls: Vec<Call<'a>>,
    pub imports: Vec<Import>,
    pub env_writes: Vec<EnvWrite>,
    pub patches: Vec<Patch>,
    pub functions: Vec<FunctionDef<'a>>,
    pub bindings: Vec<Binding<'a>>,
    /// Offsets of the calls that are the context of a `with` statement
    /// (closed when the block ends).
    pub with_contexts: BTreeSet<usize>,
    /// The byte range of each loop statement; loop id `n` is entry `n - 1`.
    pub loops: Vec<(usize, usize)>,
}

impl<'a> Model<'a> {
    pub fn build(suite: &'a [Stmt]) -> Self {
        let mut w = Walker::default();
        w.stmts(suite, State::default());
        w.model
    }

    /// The script's own functions that create `is_pool` work when called,
    /// directly or through other functions of the script.
    pub fn functions_calling(&self, is_target: impl Fn(&Call<'a>) -> bool) -> BTreeSet<&'a str> {
        let mut set: BTreeSet<&'a str> = self
            .calls
            .iter()
            .filter(|c| is_target(c))
            .filter_map(|c| c.function)
            .collect();
        loop {
            let before = set.len();
            for c in &self.calls {
                if let (Some(f), Some(callee)) = (c.function, c.callee.strip_prefix("__main__.")) {
                    if set.contains(callee) {
                        set.insert(f);
                    }
                }
            }
            if set.len() == before {
                return set;
            }
        }
    }
}

/// Where a call runs, seen from one scope (the module, or a module-level
/// function): the call itself, or a call of one of the script's functions
/// whose body runs it.
#[derive(Clone, Copy)]
struct Site<'a> {
    scope: Option<&'a str>,
    offset: usize,
    in_loop: Option<usize>,
}

impl<'a> Model<'a> {
    /// The places `call` runs from: itself, and every call of a script
    /// function that runs it (directly or through others).
    fn sites(&self, call: &Call<'a>) -> Vec<Site<'a>> {
        let mut sites = vec![Site {
            scope: call.function,
            offset: call.node.range().start().to_usize(),
            in_loop: call.in_loop,
        }];
        let Some(function) = call.function else {
            return sites;
        };
        // The script's functions whose run includes `function`.
        let mut reach: BTreeSet<&str> = BTreeSet::from([function]);
        loop {
            let before = reach.len();
            for c in &self.calls {
                if let (Some(f), Some(callee)) = (c.function, c.callee.strip_prefix("__main__.")) {
                    if reach.contains(callee) {
                        reach.insert(f);
                    }
                }
            }
            if reach.len() == before {
                break;
            }
        }
        sites.extend(
            self.calls
                .iter()
                .filter(|c| {
                    c.callee
                        .strip_prefix("__main__.")
                        .is_some_and(|f| reach.contains(f))
                })
                .map(|c| Site {
                    scope: c.function,
                    offset: c.node.range().start().to_usize(),
                    in_loop: c.in_loop,
                }),
        );
        sites
    }

    /// Does `first` run before `then`, as far as the source shows? In one
    /// scope (the module, or one of its functions), `first` or a call of a
    /// function that runs it comes before `then` or a call of a function
    /// that runs it, or both are in the same loop (the next pass runs
    /// `first` before `then` again). Notebook cells are one module, in
    /// order. Module-level code runs when the module is imported, before
    /// anything outside can call its functions: module-level `first` runs
    /// before `then` in a function that no module-level code runs.
    pub fn runs_before(&self, first: &Call<'a>, then: &Call<'a>) -> bool {
        let (a, b) = (self.sites(first), self.sites(then));
        if first.function.is_none() && b.iter().all(|y| y.scope.is_some()) {
            return true;
        }
        a.iter().any(|x| {
            b.iter().any(|y| {
                x.scope == y.scope
                    && (x.offset < y.offset || (x.in_loop.is_some() && x.in_loop == y.in_loop))
            })
        })
    }
}

#[derive(Clone, Copy, Default)]
struct State<'a> {
    /// The outermost enclosing `def` (or `lambda`: `Some("<lambda>")`).
    function: Option<&'a str>,
    /// Inside the `if __name__ == "__main__":` guard.
    guarded: bool,
    /// Inside a class body.
    in_class: bool,
    /// The innermost loop.
    in_loop: Option<usize>,
    /// Inside a comprehension, where it runs once per item.
    in_comprehension: bool,
}

impl State<'_> {
    fn import_time(self) -> bool {
        self.function.is_none() && !self.guarded
    }
}

#[derive(Default)]
struct Walker<'a> {
    /// Local name → what it stands for (`mp` → `multiprocessing`).
    names: HashMap<String, String>,
    /// Module-level names bound to a string so far, in source order
    /// (`METHOD = "spawn"` before `get_context(METHOD)`); any other
    /// binding of the name forgets it.
    strings: HashMap<String, String>,
    model: Model<'a>,
}

impl<'a> Walker<'a> {
    fn stmts(&mut self, body: &'a [Stmt], st: State<'a>) {
        for s in body {
            self.stmt(s, st);
        }
    }

    fn stmt(&mut self, s: &'a Stmt, st: State<'a>) {
        match s {
            Stmt::FunctionDef(ast::StmtFunctionDef {
                name,
                body,
                decorator_list,
                ..
            })
            | Stmt::AsyncFunctionDef(ast::StmtAsyncFunctionDef {
                name,
                body,
                decorator_list,
                ..
            }) => {
                self.exprs(decorator_list, st);
                if st.function.is_none() && !st.in_class {
                    self.names
                        .insert(name.to_string(), format!("__main__.{name}"));
                    let decorators = decorator_list
                        .iter()
                        .filter_map(|d| match d {
                            Expr::Call(c) => self.qualify(&c.func),
                            e => self.qualify(e),
                        })
                        .collect();
                    let decorator_calls = decorator_list
                        .iter()
                        .filter_map(|d| match d {
                            Expr::Call(c) => Some(c),
                            _ => None,
                        })
                        .collect();
                    self.model.functions.push(FunctionDef {
                        name: name.as_str(),
                        offset: s.range().start().to_usize(),
                        guarded: st.guarded,
                        decorators,
                        decorator_calls,
                    });
                }
                let inner = State {
                    function: Some(st.function.unwrap_or(name.as_str())),
                    in_class: false,
                    in_loop: None,
                    ..st
                };
                self.stmts(body, inner);
            }
            Stmt::ClassDef(c) => {
                self.exprs(&c.decorator_list, st);
                self.exprs(&c.bases, st);
                let body = State {
                    in_class: true,
                    ..st
                };
                self.stmts(&c.body, body);
            }
            Stmt::If(i) => {
                self.expr(&i.test, st);
                let guarded = State {
                    guarded: true,
                    ..st
                };
                match main_guard(&i.test) {
                    Some(true) => {
                        self.stmts(&i.body, guarded);
                        self.stmts(&i.orelse, st);
                    }
                    Some(false) => {
                        self.stmts(&i.body, st);
                        self.stmts(&i.orelse, guarded);
                    }
                    None => {
                        self.stmts(&i.body, st);
                        self.stmts(&i.orelse, st);
                    }
                }
            }
            Stmt::Import(i) => {
                for a in &i.names {
                    self.import(a.name.as_str(), usize::from(a.range.start()), st);
                    match &a.asname {
                        Some(asname) => {
                            self.names.insert(asname.to_string(), a.name.to_string());
                        }
                        None => {
                            let top = a.name.split('.').next().unwrap_or_default();
                            self.names.insert(top.to_string(), top.to_string());
                        }
                    }
                }
            }
            Stmt::ImportFrom(i) => {
                let relative = i.level.is_some_and(|l| l.to_u32() > 0);
                let Some(module) = i.module.as_ref().filter(|_| !relative) else {
                    return;
                };
                self.import(module.as_str(), usize::from(i.range.start()), st);
                for a in &i.names {
                    if a.name.as_str() == "*" {
                        continue;
                    }
                    let local = a.asname.as_ref().unwrap_or(&a.name);
                    self.names
                        .insert(local.to_string(), format!("{module}.{}", a.name));
                }
            }
            Stmt::Assign(a) => {
                self.expr(&a.value, st);
                let value = self.qualify(&a.value);
                for t in &a.targets {
                    self.string_constant(t, &a.value, st);
                    self.bind(t, &a.value);
                    self.target(t, value.clone(), st);
                }
            }
            Stmt::AnnAssign(a) => {
                if let Some(v) = &a.value {
                    self.expr(v, st);
                    let value = self.qualify(v);
                    self.bind(&a.target, v);
                    self.target(&a.target, value, st);
                }
            }
            Stmt::AugAssign(a) => {
                self.expr(&a.value, st);
                self.expr(&a.target, st);
            }
            Stmt::Expr(e) => self.expr(&e.value, st),
            Stmt::Return(r) => {
                if let Some(v) = &r.value {
                    self.expr(v, st);
                }
            }
            Stmt::For(ast::StmtFor {
                iter, body, orelse, ..
            })
            | Stmt::AsyncFor(ast::StmtAsyncFor {
                iter, body, orelse, ..
            }) => {
                self.expr(iter, st);
                let inner = self.enter_loop(st, s);
                self.stmts(body, inner);
                self.stmts(orelse, st);
            }
            Stmt::While(w) => {
                let inner = self.enter_loop(st, s);
                self.expr(&w.test, inner);
                self.stmts(&w.body, inner);
                self.stmts(&w.orelse, st);
            }
            Stmt::With(ast::StmtWith { items, body, .. })
            | Stmt::AsyncWith(ast::StmtAsyncWith { items, body, .. }) => {
                for item in items {
                    self.expr(&item.context_expr, st);
                    if let Expr::Call(c) = &item.context_expr {
                        self.model.with_contexts.insert(c.range.start().to_usize());
                    }
                    if let Some(v) = &item.optional_vars {
                        let value = self.qualify(&item.context_expr);
                        self.bind(v, &item.context_expr);
                        self.target(v, value, st);
                    }
                }
                self.stmts(body, st);
            }
            Stmt::Try(ast::StmtTry {
                body,
                handlers,
                orelse,
                finalbody,
                ..
            })
            | Stmt::TryStar(ast::StmtTryStar {
                body,
                handlers,
                orelse,
                finalbody,
                ..
            }) => {
                self.stmts(body, st);
                for h in handlers {
                    let ast::ExceptHandler::ExceptHandler(h) = h;
                    self.stmts(&h.body, st);
                }
                self.stmts(orelse, st);
                self.stmts(finalbody, st);
            }
            Stmt::Match(m) => {
                self.expr(&m.subject, st);
                for case in &m.cases {
                    self.stmts(&case.body, st);
                }
            }
            Stmt::Raise(r) => {
                if let Some(e) = &r.exc {
                    self.expr(e, st);
                }
            }
            Stmt::Assert(a) => self.expr(&a.test, st),
            _ => {}
        }
    }

    fn enter_loop(&mut self, st: State<'a>, s: &Stmt) -> State<'a> {
        self.model
            .loops
            .push((s.range().start().to_usize(), s.range().end().to_usize()));
        State {
            in_loop: Some(self.model.loops.len()),
            ..st
        }
    }

    /// Record the names that will hold a call's result.
    fn bind(&mut self, target: &'a Expr, value: &'a Expr) {
        let Expr::Call(c) = value else { return };
        let call_offset = c.range.start().to_usize();
        let mut names = Vec::new();
        match target {
            Expr::Name(n) => names.push(n.id.as_str()),
            Expr::Tuple(ast::ExprTuple { elts, .. }) | Expr::List(ast::ExprList { elts, .. }) => {
                names.extend(elts.iter().filter_map(|e| match e {
                    Expr::Name(n) => Some(n.id.as_str()),
                    _ => None,
                }))
            }
            _ => {}
        }
        for name in names {
            self.model.bindings.push(Binding { name, call_offset });
        }
    }

    /// Remember `NAME = "text"` at module level; forget NAME otherwise.
    fn string_constant(&mut self, target: &Expr, value: &Expr, st: State<'a>) {
        let Expr::Name(n) = target else { return };
        match str_const(value).filter(|_| st.function.is_none()) {
            Some(text) => {
                self.strings.insert(n.id.to_string(), text.to_string());
            }
            None => {
                self.strings.remove(n.id.as_str());
            }
        }
    }

    fn import(&mut self, module: &str, offset: usize, st: State<'a>) {
        self.model.imports.push(Import {
            module: module.to_string(),
            offset,
            in_function: st.function.is_some(),
        });
    }

    /// An assignment target: a name now stands for `value`;
    /// `os.environ["X"] = ...` is an environment write.
    fn target(&mut self, t: &'a Expr, value: Option<String>, st: State<'a>) {
        match t {
            Expr::Name(n) => match value {
                Some(v) => {
                    self.names.insert(n.id.to_string(), v);
                }
                None => {
                    self.names.remove(n.id.as_str());
                }
            },
            Expr::Attribute(_) => {
                if let Some(target) = self.qualify(t) {
                    self.model.patches.push(Patch { target, value });
                }
                self.expr(t, st);
            }
            Expr::Subscript(s) if self.is_environ(&s.value) => {
                if let Some(name) = str_const(&s.slice) {
                    self.model.env_writes.push(EnvWrite {
                        name: name.to_string(),
                        offset: usize::from(s.range.start()),
                    });
                }
                self.expr(&s.slice, st);
            }
            Expr::Tuple(ast::ExprTuple { elts, .. }) | Expr::List(ast::ExprList { elts, .. }) => {
                // `c, dview, n = f()`: element i of the result.
                let starred = elts.iter().any(|e| matches!(e, Expr::Starred(_)));
                for (i, e) in elts.iter().enumerate() {
                    let element = value
                        .as_ref()
                        .filter(|_| !starred)
                        .map(|v| format!("{v}[{i}]"));
                    self.target(e, element, st);
                }
            }
            other => self.expr(other, st),
        }
    }

    fn is_environ(&self, e: &Expr) -> bool {
        self.qualify(e).as_deref() == Some("os.environ")
    }

    fn exprs(&mut self, es: &'a [Expr], st: State<'a>) {
        for e in es {
            self.expr(e, st);
        }
    }

    fn expr(&mut self, e: &'a Expr, st: State<'a>) {
        match e {
            Expr::Call(c) => {
                if let Some(callee) = self.qualify(&c.func) {
                    self.env_write_call(&callee, c);
                    let mut args: Vec<Arg<'a>> =
                        c.args.iter().map(|e| self.argument(None, e)).collect();
                    for k in &c.keywords {
                        if let Some(name) = &k.arg {
                            args.push(self.argument(Some(name.as_str()), &k.value));
                        }
                    }
                    let receiver = match c.func.as_ref() {
                        Expr::Attribute(a) => match a.value.as_ref() {
                            Expr::Name(n) => Some(n.id.as_str()),
                            _ => None,
                        },
                        _ => None,
                    };
                    self.model.calls.push(Call {
                        callee,
                        node: c,
                        import_time: st.import_time(),
                        function: st.function,
                        in_loop: st.in_loop,
                        in_comprehension: st.in_comprehension,
                        args,
                        receiver,
                    });
                }
                self.expr(&c.func, st);
                self.exprs(&c.args, st);
                for k in &c.keywords {
                    self.expr(&k.value, st);
                }
            }
            Expr::Lambda(l) => {
                let inner = State {
                    function: Some(st.function.unwrap_or("<lambda>")),
                    ..st
                };
                self.expr(&l.body, inner);
            }
            Expr::BoolOp(b) => self.exprs(&b.values, st),
            Expr::NamedExpr(n) => self.expr(&n.value, st),
            Expr::BinOp(b) => {
                self.expr(&b.left, st);
                self.expr(&b.right, st);
            }
            Expr::UnaryOp(u) => self.expr(&u.operand, st),
            Expr::IfExp(i) => {
                self.expr(&i.test, st);
                self.expr(&i.body, st);
                self.expr(&i.orelse, st);
            }
            Expr::Dict(d) => {
                for k in d.keys.iter().flatten() {
                    self.expr(k, st);
                }
                self.exprs(&d.values, st);
            }
            Expr::Set(s) => self.exprs(&s.elts, st),
            Expr::List(l) => self.exprs(&l.elts, st),
            Expr::Tuple(t) => self.exprs(&t.elts, st),
            Expr::ListComp(c) => {
                let each = self.comprehensions(&c.generators, st);
                self.expr(&c.elt, each);
            }
            Expr::SetComp(c) => {
                let each = self.comprehensions(&c.generators, st);
                self.expr(&c.elt, each);
            }
            Expr::GeneratorExp(c) => {
                let each = self.comprehensions(&c.generators, st);
                self.expr(&c.elt, each);
            }
            Expr::DictComp(c) => {
                let each = self.comprehensions(&c.generators, st);
                self.expr(&c.key, each);
                self.expr(&c.value, each);
            }
            Expr::Await(a) => self.expr(&a.value, st),
            Expr::Yield(y) => {
                if let Some(v) = &y.value {
                    self.expr(v, st);
                }
            }
            Expr::YieldFrom(y) => self.expr(&y.value, st),
            Expr::Compare(c) => {
                self.expr(&c.left, st);
                self.exprs(&c.comparators, st);
            }
            Expr::FormattedValue(f) => self.expr(&f.value, st),
            Expr::JoinedStr(j) => self.exprs(&j.values, st),
            Expr::Attribute(a) => self.expr(&a.value, st),
            Expr::Subscript(s) => {
                self.expr(&s.value, st);
                self.expr(&s.slice, st);
            }
            Expr::Starred(s) => self.expr(&s.value, st),
            Expr::Slice(s) => {
                for part in [&s.lower, &s.upper, &s.step].into_iter().flatten() {
                    self.expr(part, st);
                }
            }
            Expr::Name(_) | Expr::Constant(_) => {}
        }
    }

    fn argument(&self, keyword: Option<&'a str>, e: &'a Expr) -> Arg<'a> {
        // `functools.partial(f, ...)` pickles `f` by reference too.
        let value = match e {
            Expr::Call(c) if self.qualify(&c.func).as_deref() == Some("functools.partial") => {
                c.args.first().and_then(|f| self.qualify(f))
            }
            _ => self.qualify(e),
        };
        Arg {
            keyword,
            expr: e,
            value,
            name: match e {
                Expr::Name(n) => Some(n.id.as_str()),
                _ => None,
            },
        }
    }

    /// Walk a comprehension's `for` clauses; the state for what runs once
    /// per item. The first iterable is evaluated once, the rest per item.
    fn comprehensions(&mut self, gens: &'a [ast::Comprehension], st: State<'a>) -> State<'a> {
        let each = State {
            in_comprehension: true,
            ..st
        };
        for (i, g) in gens.iter().enumerate() {
            self.expr(&g.iter, if i == 0 { st } else { each });
            self.exprs(&g.ifs, each);
        }
        each
    }

    /// `os.environ.update(...)`, `os.environ.setdefault(...)`, `os.putenv(...)`.
    fn env_write_call(&mut self, callee: &str, c: &'a ast::ExprCall) {
        let offset = usize::from(c.range.start());
        let mut push = |name: &str| {
            self.model.env_writes.push(EnvWrite {
                name: name.to_string(),
                offset,
            })
        };
        match callee {
            "os.environ.setdefault" | "os.putenv" => {
                if let Some(name) = c.args.first().and_then(str_const) {
                    push(name);
                }
            }
            "os.environ.update" => {
                for a in &c.args {
                    if let Expr::Dict(d) = a {
                        for k in d.keys.iter().flatten() {
                            if let Some(name) = str_const(k) {
                                push(name);
                            }
                        }
                    }
                }
                for k in &c.keywords {
                    if let Some(name) = &k.arg {
                        push(name.as_str());
                    }
                }
            }
            _ => {}
        }
    }

    /// What an expression stands for, if it comes from an import or a
    /// call of something imported. `multiprocessing.get_context("fork")`
    /// becomes `multiprocessing.get_context(fork)`; other calls `callee()`.
    fn qualify(&self, e: &Expr) -> Option<String> {
        match e {
            Expr::Name(n) => self.names.get(n.id.as_str()).cloned(),
            Expr::Attribute(a) => self.qualify(&a.value).map(|q| format!("{q}.{}", a.attr)),
            Expr::Call(c) => {
                let f = self.qualify(&c.func)?;
                match f.as_str() {
                    "multiprocessing.get_context" => {
                        let method = arg(c, 0, "method")
                            .and_then(|m| match m {
                                Expr::Name(n) => {
                                    self.strings.get(n.id.as_str()).map(String::as_str)
                                }
                                _ => str_const(m),
                            })
                            .unwrap_or("");
                        Some(format!("multiprocessing.get_context({method})"))
                    }
                    // The start method travels with the executor.
                    "concurrent.futures.ProcessPoolExecutor"
                    | "concurrent.futures.process.ProcessPoolExecutor" => {
                        let method = arg(c, 1, "mp_context")
                            .and_then(|ctx| self.qualify(ctx))
                            .and_then(|q| {
                                q.strip_prefix("multiprocessing.get_context(")
                                    .and_then(|r| r.strip_suffix(')'))
                                    .map(str::to_string)
                            })
                            .unwrap_or_default();
                        Some(format!("{f}({method})"))
                    }
                    // The backend decides what `dview` is.
                    "caiman.cluster.setup_cluster" => {
                        let backend = match arg(c, 0, "backend") {
                            None => "multiprocessing",
                            Some(b) => str_const(b).unwrap_or("?"),
                        };
                        Some(format!("{f}({backend})"))
                    }
                    _ => Some(format!("{f}()")),
                }
            }
            _ => None,
        }
    }
}

/// `if __name__ == "__main__":` → `Some(true)`; `!=` → `Some(false)`.
fn main_guard(test: &Expr) -> Option<bool> {
    let Expr::Compare(c) = test else { return None };
    let ([op], [right]) = (c.ops.as_slice(), c.comparators.as_slice()) else {
        return None;
    };
    let is_name = |e: &Expr| matches!(e, Expr::Name(n) if n.id.as_str() == "__name__");
    let is_main = |e: &Expr| str_const(e) == Some("__main__");
    if !((is_name(&c.left) && is_main(right)) || (is_main(&c.left) && is_name(right))) {
        return None;
    }
    match op {
        ast::CmpOp::Eq => Some(true),
        ast::CmpOp::NotEq => Some(false),
        _ => None,
    }
}

/// `None`, the literal.
pub(crate) fn is_none(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Constant(ast::ExprConstant {
            value: Constant::None,
            ..
        })
    )
}

/// A string literal's value.
pub(crate) fn str_const(e: &Expr) -> Option<&str> {
    match e {
        Expr::Constant(ast::ExprConstant {
            value: Constant::Str(s),
            ..
        }) => Some(s),
        _ => None,
    }
}

/// A call's argument by position or keyword.
pub(crate) fn arg<'e>(c: &'e ast::ExprCall, position: usize, keyword: &str) -> Option<&'e Expr> {
    c.keywords
        .iter()
        .find(|k| k.arg.as_ref().is_some_and(|a| a.as_str() == keyword))
        .map(|k| &k.value)
        .or_else(|| {
            // Positional arguments after a `*args` are not at a known place.
            let before_star = c.args.iter().take_while(|a| !matches!(a, Expr::Starred(_)));
            before_star.into_iter().nth(position)
        })
}

/// Does a call pass `*args` or `**kwargs` (which may hold any argument)?
pub(crate) fn splats(c: &ast::ExprCall) -> bool {
    c.args.iter().any(|a| matches!(a, Expr::Starred(_)))
        || c.keywords.iter().any(|k| k.arg.is_none())
}

/// A literal that Python treats as true (`True`, a non-zero number, a
/// non-empty string); `None` when not a literal.
pub(crate) fn truthy(e: &Expr) -> Option<bool> {
    match e {
        Expr::Constant(c) => Some(match &c.value {
            Constant::Bool(b) => *b,
            Constant::None => false,
            Constant::Str(s) => !s.is_empty(),
            Constant::Int(i) => *i != Default::default(),
            Constant::Float(f) => *f != 0.0,
            _ => true,
        }),
        _ => None,
    }
}

/// A `multiprocessing.get_context(METHOD).X` callee as `multiprocessing.X`
/// and the method (`""` for the default context).
pub(crate) fn strip_context(callee: &str) -> (String, Option<&str>) {
    if let Some(rest) = callee.strip_prefix("multiprocessing.get_context(") {
        if let Some((method, tail)) = rest.split_once(")") {
            let tail = tail.strip_prefix('.').unwrap_or(tail);
            return (format!("multiprocessing.{tail}"), Some(method));
        }
    }
    (callee.to_string(), None)
}
