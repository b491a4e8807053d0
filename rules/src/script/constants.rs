//! Names that stand for one literal: `N = 4` (or `N = None`), bound once
//! and never rebound, at module level or in a function, so that
//! `Pool(N)` reads as `Pool(4)`.
//!
//! Scopes are the module and each module-level function (its nested
//! functions, lambdas and class bodies counted with it, as the model
//! counts calls); a class body at module level counts with the module. A
//! name is a constant in a scope when every binding of it there assigns
//! the same literal: another value, `N += 1`, `for N in ...`, `with ... as
//! N`, `import ... as N`, a parameter `N`, `except ... as N`, `del N` or a
//! tuple target make it unknown, and so does `global N` in any function
//! (for the module's `N`). Not seen: `:=` and `match` captures.

use std::collections::HashMap;

use rustpython_parser::ast::{self, Constant, Expr, Stmt};

/// A literal a name can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Literal {
    /// A non-negative integer.
    Int(usize),
    /// `None`.
    None,
}

impl Literal {
    /// The literal an expression is written as, if any.
    pub fn of(e: &Expr) -> Option<Self> {
        match e {
            Expr::Constant(ast::ExprConstant {
                value: Constant::Int(i),
                ..
            }) => i.to_string().parse().ok().map(Self::Int),
            Expr::Constant(ast::ExprConstant {
                value: Constant::None,
                ..
            }) => Some(Self::None),
            _ => None,
        }
    }
}

/// How a scope binds a name: always to this literal, or otherwise
/// (`None`).
type Bindings<'a> = HashMap<&'a str, Option<Literal>>;

/// The names bound to literals, by scope.
#[derive(Default)]
pub(crate) struct Constants<'a> {
    module: Bindings<'a>,
    functions: HashMap<&'a str, Bindings<'a>>,
}

impl<'a> Constants<'a> {
    /// Read the bindings of a parsed module.
    pub fn build(suite: &'a [Stmt]) -> Self {
        let mut c = Self::default();
        c.stmts(suite, None);
        c
    }

    /// The literal `e` stands for in `function` (`None`: module level):
    /// a literal itself, or a name bound to one in that function or, when
    /// the function does not bind it, in the module.
    pub fn value(&self, e: &Expr, function: Option<&str>) -> Option<Literal> {
        let Expr::Name(n) = e else {
            return Literal::of(e);
        };
        let name = n.id.as_str();
        let local = function.and_then(|f| self.functions.get(f)?.get(name));
        match local {
            Some(binding) => *binding,
            None => self.module.get(name).copied().flatten(),
        }
    }

    fn scope(&mut self, function: Option<&'a str>) -> &mut Bindings<'a> {
        match function {
            Some(f) => self.functions.entry(f).or_default(),
            None => &mut self.module,
        }
    }

    /// `name` is bound to `literal` (`None`: to something else).
    fn bind(&mut self, function: Option<&'a str>, name: &'a str, literal: Option<Literal>) {
        let scope = self.scope(function);
        match scope.get(name) {
            None => {
                scope.insert(name, literal);
            }
            Some(old) if *old != literal => {
                scope.insert(name, None);
            }
            Some(_) => {}
        }
    }

    /// Every name in an assignment target is bound to something unknown,
    /// unless the target is a plain name and `literal` is given.
    fn target(&mut self, function: Option<&'a str>, t: &'a Expr, literal: Option<Literal>) {
        match t {
            Expr::Name(n) => self.bind(function, n.id.as_str(), literal),
            Expr::Tuple(ast::ExprTuple { elts, .. }) | Expr::List(ast::ExprList { elts, .. }) => {
                for e in elts {
                    self.target(function, e, None);
                }
            }
            Expr::Starred(s) => self.target(function, &s.value, None),
            _ => {}
        }
    }

    fn stmts(&mut self, body: &'a [Stmt], function: Option<&'a str>) {
        for s in body {
            self.stmt(s, function);
        }
    }

    fn stmt(&mut self, s: &'a Stmt, function: Option<&'a str>) {
        match s {
            Stmt::FunctionDef(ast::StmtFunctionDef {
                name, args, body, ..
            })
            | Stmt::AsyncFunctionDef(ast::StmtAsyncFunctionDef {
                name, args, body, ..
            }) => {
                self.bind(function, name.as_str(), None);
                let inner = Some(function.unwrap_or(name.as_str()));
                let params = args
                    .posonlyargs
                    .iter()
                    .chain(&args.args)
                    .chain(&args.kwonlyargs)
                    .map(|a| &a.def)
                    .chain(args.vararg.as_deref())
                    .chain(args.kwarg.as_deref());
                for p in params {
                    self.bind(inner, p.arg.as_str(), None);
                }
                self.stmts(body, inner);
            }
            Stmt::ClassDef(c) => {
                self.bind(function, c.name.as_str(), None);
                self.stmts(&c.body, function);
            }
            Stmt::Assign(a) => {
                let literal = Literal::of(&a.value);
                for t in &a.targets {
                    self.target(function, t, literal);
                }
            }
            Stmt::AnnAssign(a) => {
                if let Some(v) = &a.value {
                    self.target(function, &a.target, Literal::of(v));
                }
            }
            Stmt::AugAssign(a) => self.target(function, &a.target, None),
            Stmt::Delete(d) => {
                for t in &d.targets {
                    self.target(function, t, None);
                }
            }
            Stmt::Global(g) => {
                for name in &g.names {
                    self.bind(None, name.as_str(), None);
                }
            }
            Stmt::Import(i) => {
                for a in &i.names {
                    let local = match &a.asname {
                        Some(asname) => asname.as_str(),
                        None => a.name.split('.').next().unwrap_or_default(),
                    };
                    self.bind(function, local, None);
                }
            }
            Stmt::ImportFrom(i) => {
                for a in &i.names {
                    self.bind(
                        function,
                        a.asname.as_ref().unwrap_or(&a.name).as_str(),
                        None,
                    );
                }
            }
            Stmt::For(ast::StmtFor {
                target,
                body,
                orelse,
                ..
            })
            | Stmt::AsyncFor(ast::StmtAsyncFor {
                target,
                body,
                orelse,
                ..
            }) => {
                self.target(function, target, None);
                self.stmts(body, function);
                self.stmts(orelse, function);
            }
            Stmt::While(w) => {
                self.stmts(&w.body, function);
                self.stmts(&w.orelse, function);
            }
            Stmt::If(i) => {
                self.stmts(&i.body, function);
                self.stmts(&i.orelse, function);
            }
            Stmt::With(ast::StmtWith { items, body, .. })
            | Stmt::AsyncWith(ast::StmtAsyncWith { items, body, .. }) => {
                for v in items.iter().filter_map(|i| i.optional_vars.as_deref()) {
                    self.target(function, v, None);
                }
                self.stmts(body, function);
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
                self.stmts(body, function);
                for h in handlers {
                    let ast::ExceptHandler::ExceptHandler(h) = h;
                    if let Some(name) = &h.name {
                        self.bind(function, name.as_str(), None);
                    }
                    self.stmts(&h.body, function);
                }
                self.stmts(orelse, function);
                self.stmts(finalbody, function);
            }
            Stmt::Match(m) => {
                for case in &m.cases {
                    self.stmts(&case.body, function);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use rustpython_parser::{ast::Suite, Parse};

    use super::*;

    /// The literal the last statement's expression stands for, in the
    /// function it is in (or the module).
    fn value_of(src: &str, name: &str, function: Option<&str>) -> Option<Literal> {
        let suite = Suite::parse(src, "<test>").expect("parses");
        let c = Constants::build(&suite);
        let e = Expr::Name(ast::ExprName {
            range: Default::default(),
            id: name.into(),
            ctx: ast::ExprContext::Load,
        });
        c.value(&e, function)
    }

    #[test]
    fn a_name_bound_once_to_a_literal_is_a_constant() {
        assert_eq!(value_of("N = 4\n", "N", None), Some(Literal::Int(4)));
        assert_eq!(value_of("N: int = 4\n", "N", None), Some(Literal::Int(4)));
        assert_eq!(value_of("N = None\n", "N", None), Some(Literal::None));
        assert_eq!(value_of("N = M = 3\n", "M", None), Some(Literal::Int(3)));
        // The same literal twice is still that literal.
        assert_eq!(
            value_of("N = 4\nif x:\n    N = 4\n", "N", None),
            Some(Literal::Int(4))
        );
        // Module constants are seen from functions that do not bind them.
        assert_eq!(
            value_of("N = 4\ndef f():\n    pass\n", "N", Some("f")),
            Some(Literal::Int(4))
        );
        assert_eq!(
            value_of("def f():\n    n = 2\n", "n", Some("f")),
            Some(Literal::Int(2))
        );
    }

    #[test]
    fn any_other_binding_makes_a_name_unknown() {
        for src in [
            "N = 4\nN = 8\n",
            "N = 4\nN += 1\n",
            "N = 4\nfor N in range(3):\n    pass\n",
            "N = 4\nwith f() as N:\n    pass\n",
            "N = 4\nimport N\n",
            "N = 4\nfrom m import x as N\n",
            "N = 4\nN, M = 1, 2\n",
            "N = 4\ndel N\n",
            "N = 4\ntry:\n    pass\nexcept E as N:\n    pass\n",
            "N = 4\ndef g():\n    global N\n    N = 5\n",
            "N = -1\n",
            "N = 2.0\n",
            "N = int('4')\n",
            "N = 99999999999999999999999999999\n",
        ] {
            assert_eq!(value_of(src, "N", None), None, "{src}");
        }
        // A parameter or a local shadows the module's constant.
        assert_eq!(
            value_of("N = 4\ndef f(N):\n    pass\n", "N", Some("f")),
            None
        );
        assert_eq!(
            value_of("N = 4\ndef f(*, N=2):\n    pass\n", "N", Some("f")),
            None
        );
        assert_eq!(
            value_of("N = 4\ndef f():\n    N = os.cpu_count()\n", "N", Some("f")),
            None
        );
        // A function's local is not the module's.
        assert_eq!(value_of("def f():\n    N = 4\n", "N", None), None);
        assert_eq!(value_of("def f():\n    N = 4\n", "N", Some("g")), None);
    }
}
