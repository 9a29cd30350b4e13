//! Dossier's business rules: sandboxed [Rhai](https://rhai.rs) modules and expressions.
//!
//! Analysts write decisions (prices, penalties, commissions, eligibility) as Rhai
//! functions in `rules/*.rhai`; workflows call them with JSON arguments and read a
//! JSON answer. Workflow YAML also uses single Rhai expressions for conditions and
//! assignments (`input.montant > 1000`). This crate compiles both (once per text),
//! runs them in a sandbox, converts values between JSON and Rhai exactly, and runs the
//! analysts' test tables (`rules/*.test.yaml`).
//!
//! # What a rule must not do
//!
//! A rule is a pure function of its arguments and of the time the engine passes in
//! ([`RuleContext`], seen by scripts as the constants `NOW` and `TODAY`). Therefore
//! this crate never does I/O on behalf of a script and never reads the clock:
//! - no file or network access: `import` and `eval` are refused at compile time, and
//!   there is no module resolver;
//! - no clock, no randomness: `timestamp()`, `sleep` and `exit` fail with a hint;
//! - `print`/`debug` output goes nowhere;
//! - every run is bounded ([`Limits`]): operations, call depth, expression depth,
//!   string, list and object sizes. A runaway rule returns an error quickly.
//!
//! (Only [`run_rule_tests`] reads a file: the test table it is given.)
//!
//! # Numbers
//!
//! Rhai is built with `decimal` and `no_float`: `0.1` is a [`rust_decimal::Decimal`], so
//! `0.1 + 0.2 == 0.3`, and money never goes through binary floats. JSON numbers keep
//! their exact text (serde_json `arbitrary_precision`): integers become Rhai `INT`
//! (`i64`), other numbers `Decimal`, and decimals go back to JSON with their exact
//! digits (`10.00` stays `10.00`). Beware that `7 / 2` between two integers is `3`
//! (integer division): write `7 / 2.0` or `decimal(7) / 2`.
//!
//! # Reading data
//!
//! Reading a field that does not exist (`input.montnat`) is an error, not `()`, so a
//! typo cannot silently turn into "no value"; a field that may be missing is read
//! with `input.get("remise") ?? 0`.
//!
//! Ordering a text, a boolean or `()` against a number (`"mille" < 0`, `() > 1000`)
//! is an error, where plain Rhai would answer `false` and silently skip a branch.
//! `==` and `!=` between different types still answer `false`/`true`, so
//! `x == ()` tests for "no value".
//!
//! # Dates
//!
//! Dates travel as ISO text: `YYYY-MM-DD`, or RFC 3339 date-times. The helpers
//! (`days_between`, `add_days`, `add_months`, `add_duration`, …; see [`HELPERS`])
//! answer in the form they were given.
//!
//! # Rule modules
//!
//! A module holds only functions (`fn` and `private fn`); top-level statements would
//! never run (functions are called without evaluating the module body), so they are
//! refused. Variables are checked at compile time: a function reads its parameters,
//! its `let` variables, `NOW` and `TODAY` (reserved names: a parameter called `NOW`
//! would see the clock, not its argument).

mod convert;
mod error;
mod helpers;
mod tables;
mod yaml;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, SecondsFormat, Utc};
use rhai::{CallFnOptions, Dynamic, Engine, ImmutableString, Scope, AST};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use convert::{decimal_to_json, from_dynamic, to_dynamic};
pub use error::RuleError;
pub use helpers::{HelperError, IsoDuration, When, HELPERS};
pub use tables::{
    compare_json, module_name_from_path, run_rule_tests, run_rule_tests_str, Expectation, RowArgs,
    RuleTestFile, TestFailure, TestReport, TestRow, DEFAULT_TEST_NOW,
};

/// Lowercase hex SHA-256 of a text.
pub fn content_hash(source: &str) -> String {
    hex::encode(Sha256::digest(source.as_bytes()))
}

/// Resource limits applied to every compilation and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of operations of one call or evaluation.
    pub max_operations: u64,
    /// Maximum depth of nested function calls.
    pub max_call_depth: usize,
    /// Maximum nesting depth of expressions (checked at compile time).
    pub max_expr_depth: usize,
    /// Maximum length of a string, in bytes.
    pub max_string_size: usize,
    /// Maximum number of elements of a list.
    pub max_array_size: usize,
    /// Maximum number of fields of an object.
    pub max_map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 200_000,
            max_call_depth: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
        }
    }
}

/// What the engine passes to a rule besides its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleContext {
    /// "Now" for the rule: scripts see it as `NOW` (RFC 3339) and `TODAY` (`YYYY-MM-DD`, UTC).
    pub now: DateTime<Utc>,
}

impl RuleContext {
    pub fn new(now: DateTime<Utc>) -> Self {
        RuleContext { now }
    }

    /// `NOW` as scripts see it, e.g. `2026-03-01T09:30:00Z`.
    pub fn now_text(&self) -> String {
        self.now.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// `TODAY` as scripts see it, e.g. `2026-03-01`.
    pub fn today_text(&self) -> String {
        self.now.format("%Y-%m-%d").to_string()
    }
}

/// The time values of one call, carried in Rhai's evaluation tag and read by the
/// variable resolver when a function reads `NOW` or `TODAY`.
#[derive(Debug, Clone)]
struct Clock {
    now: ImmutableString,
    today: ImmutableString,
}

impl From<&RuleContext> for Clock {
    fn from(ctx: &RuleContext) -> Self {
        Clock {
            now: ctx.now_text().into(),
            today: ctx.today_text().into(),
        }
    }
}

/// A public function of a rule module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FnSig {
    pub name: String,
    pub params: Vec<String>,
    /// 1-based line of the function's body in the module.
    pub line: usize,
}

/// A compiled rule module.
#[derive(Debug)]
pub struct RuleModule {
    /// Module name, e.g. `penalites`.
    pub name: String,
    /// Path of the source, used in error messages, e.g. `rules/penalites.rhai`.
    pub path: String,
    /// [`content_hash`] of the source.
    pub hash: String,
    /// Public functions, in source order.
    pub functions: Vec<FnSig>,
    compiled: Arc<Compiled>,
}

impl RuleModule {
    /// The first public function named `name` (Rhai allows one per arity).
    pub fn function(&self, name: &str) -> Option<&FnSig> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The compiled Rhai AST.
    pub fn ast(&self) -> &AST {
        &self.compiled.ast
    }
}

#[derive(Debug)]
struct Compiled {
    ast: AST,
    functions: Vec<FnSig>,
    private: Vec<FnSig>,
}

/// A compiled workflow expression.
#[derive(Debug)]
pub struct Expr {
    source: String,
    ast: AST,
    variables: Vec<String>,
}

impl Expr {
    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled Rhai AST.
    pub fn ast(&self) -> &AST {
        &self.ast
    }
}

/// The free variables an expression reads, in order of first appearance, without
/// `NOW` and `TODAY` (always available). `input.montant > seuil` reads `input` and
/// `seuil`.
pub fn expr_variables(expr: &Expr) -> Vec<String> {
    expr.variables.clone()
}

fn free_variables(ast: &AST) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    ast.walk(&mut |path: &[rhai::ASTNode]| {
        if let Some(rhai::ASTNode::Expr(rhai::Expr::Variable(var, _, _))) = path.last() {
            let (index, name, namespace, _) = var.as_ref();
            if index.is_none()
                && namespace.is_empty()
                && name.as_str() != "NOW"
                && name.as_str() != "TODAY"
                && !names.iter().any(|n| n == name.as_str())
            {
                names.push(name.to_string());
            }
        }
        true
    });
    names
}

#[derive(Default)]
struct Caches {
    compiled: HashMap<String, Arc<Compiled>>,
    modules: HashMap<(String, String, String), Arc<RuleModule>>,
    exprs: HashMap<String, Arc<Expr>>,
}

/// The rules engine: one sandboxed Rhai engine (plus a strict twin used to compile
/// modules) and the compilation caches. `Send + Sync`; share it in an `Arc`.
pub struct Rules {
    limits: Limits,
    /// Compiles and runs rule modules; variables are checked at compile time.
    modules: Engine,
    /// Compiles and evaluates workflow expressions, whose variables come at run time.
    exprs: Engine,
    caches: Mutex<Caches>,
    compilations: AtomicUsize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new(Limits::default())
    }
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("limits", &self.limits)
            .field("compilations", &self.compilations())
            .finish_non_exhaustive()
    }
}

fn build_engine(limits: &Limits, strict: bool) -> Engine {
    use rhai::packages::{
        BasicArrayPackage, BasicMapPackage, BasicMathPackage, CorePackage, LogicPackage,
        MoreStringPackage, Package,
    };

    // `new_raw`: no packages, no module resolver, no print/debug output. The time
    // package (timestamp) is deliberately left out.
    let mut engine = Engine::new_raw();
    for module in [
        CorePackage::new().as_shared_module(),
        LogicPackage::new().as_shared_module(),
        BasicMathPackage::new().as_shared_module(),
        BasicArrayPackage::new().as_shared_module(),
        BasicMapPackage::new().as_shared_module(),
        MoreStringPackage::new().as_shared_module(),
    ] {
        engine.register_global_module(module);
    }
    helpers::register(&mut engine);

    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine.disable_symbol("export");

    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_depth);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_modules(0);
    engine.set_fail_on_invalid_map_property(true);
    // Let the strict comparison overloads (helpers.rs) take precedence over Rhai's
    // built-in "different types compare as false".
    engine.set_fast_operators(false);
    engine.set_strict_variables(strict);

    // Functions cannot see the caller's scope, so NOW and TODAY reach them through
    // the evaluation tag set by `Rules::call`.
    #[allow(deprecated)]
    engine.on_var(|name, _, ctx| {
        if name == "NOW" || name == "TODAY" {
            if let Some(clock) = ctx.tag().read_lock::<Clock>() {
                let value = if name == "NOW" {
                    &clock.now
                } else {
                    &clock.today
                };
                return Ok(Some(Dynamic::from(value.clone())));
            }
        }
        Ok(None)
    });
    engine
}

fn lock(m: &Mutex<Caches>) -> MutexGuard<'_, Caches> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Field names found in JSON values (three levels deep), for suggestions.
fn field_names<'a>(values: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    fn walk(v: &Value, depth: usize, out: &mut Vec<String>) {
        if depth == 0 {
            return;
        }
        match v {
            Value::Object(map) => {
                for (k, item) in map {
                    if !out.contains(k) {
                        out.push(k.clone());
                    }
                    walk(item, depth - 1, out);
                }
            }
            Value::Array(items) => {
                for item in items.iter().take(10) {
                    walk(item, depth - 1, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for v in values {
        walk(v, 3, &mut out);
    }
    out
}

impl Rules {
    /// A rules engine with the given limits.
    pub fn new(limits: Limits) -> Self {
        Rules {
            modules: build_engine(&limits, true),
            exprs: build_engine(&limits, false),
            limits,
            caches: Mutex::new(Caches::default()),
            compilations: AtomicUsize::new(0),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many times a module or an expression was actually compiled (cache misses).
    pub fn compilations(&self) -> usize {
        self.compilations.load(Ordering::Relaxed)
    }

    /// Empties the compilation caches.
    pub fn clear_caches(&self) {
        *lock(&self.caches) = Caches::default();
    }

    /// Compiles a rule module, once per content hash: the same text again returns the
    /// cached module (the same `Arc` for the same name and path; a module sharing the
    /// compiled code under another name or path otherwise).
    pub fn compile_module(
        &self,
        name: &str,
        path: &str,
        source: &str,
    ) -> Result<Arc<RuleModule>, RuleError> {
        let hash = content_hash(source);
        let key = (hash.clone(), name.to_string(), path.to_string());
        let cached = {
            let caches = lock(&self.caches);
            if let Some(module) = caches.modules.get(&key) {
                return Ok(module.clone());
            }
            caches.compiled.get(&hash).cloned()
        };
        let compiled = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.compile_source(path, source)?);
                lock(&self.caches)
                    .compiled
                    .entry(hash.clone())
                    .or_insert(c)
                    .clone()
            }
        };
        let module = Arc::new(RuleModule {
            name: name.to_string(),
            path: path.to_string(),
            hash,
            functions: compiled.functions.clone(),
            compiled,
        });
        Ok(lock(&self.caches)
            .modules
            .entry(key)
            .or_insert(module)
            .clone())
    }

    fn compile_source(&self, path: &str, source: &str) -> Result<Compiled, RuleError> {
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let mut scope = Scope::new();
        // Known to the strict-variables check; not constants, so never inlined.
        scope.push("NOW", Dynamic::UNIT);
        scope.push("TODAY", Dynamic::UNIT);
        let ast = self
            .modules
            .compile_with_scope(&scope, source)
            .map_err(|e| {
                let (message, hint) =
                    error::describe_parse(e.err_type(), source, &self.limits, true);
                let (line, column) = error::line_col(e.position());
                RuleError::Compile {
                    path: path.to_string(),
                    line,
                    column,
                    message,
                    hint,
                }
            })?;

        if let Some(stmt) = ast.statements().first() {
            let (line, column) = error::line_col(stmt.position());
            return Err(RuleError::Compile {
                path: path.to_string(),
                line,
                column,
                message: "a rule module may only contain functions; this statement would never run".into(),
                hint: Some("move it into a function; a constant can be a function too: `fn taux_legal() { 0.1215 }`".into()),
            });
        }

        let mut public = Vec::new();
        let mut private = Vec::new();
        let mut with_pos: Vec<(usize, usize, bool, FnSig)> = ast
            .iter_fn_def()
            .map(|def| {
                let pos = def.body.start_position();
                let sig = FnSig {
                    name: def.name.to_string(),
                    params: def.params.iter().map(|p| p.to_string()).collect(),
                    line: pos.line().unwrap_or(0),
                };
                (
                    pos.line().unwrap_or(0),
                    pos.position().unwrap_or(0),
                    def.access == rhai::FnAccess::Private,
                    sig,
                )
            })
            .filter(|(.., sig)| !sig.name.starts_with("anon$"))
            .collect();
        with_pos.sort_by_key(|a| (a.0, a.1));
        for (.., is_private, sig) in with_pos {
            if is_private {
                private.push(sig);
            } else {
                public.push(sig);
            }
        }
        Ok(Compiled {
            ast,
            functions: public,
            private,
        })
    }

    /// Calls a public function of a module with positional JSON arguments.
    ///
    /// The module's top-level statements are not evaluated. `NOW` and `TODAY` come
    /// from `ctx`.
    pub fn call(
        &self,
        module: &RuleModule,
        function: &str,
        args: &[Value],
        ctx: &RuleContext,
    ) -> Result<Value, RuleError> {
        let qualified = format!("{}.{}", module.name, function);
        let compiled = &module.compiled;
        let subject = |variables: Vec<String>| error::Subject {
            label: format!("the rule `{qualified}`"),
            function: qualified.clone(),
            path: Some(module.path.clone()),
            limits: &self.limits,
            variables,
            functions: compiled
                .functions
                .iter()
                .chain(&compiled.private)
                .map(|f| (f.name.clone(), f.params.clone()))
                .collect(),
            fields: field_names(args),
        };
        let call_error = |message: String, hint: Option<String>| RuleError::Runtime {
            function: qualified.clone(),
            path: Some(module.path.clone()),
            line: None,
            column: None,
            message,
            hint,
        };

        let Some(sig) = compiled
            .functions
            .iter()
            .find(|f| f.name == function && f.params.len() == args.len())
        else {
            return Err(self.explain_missing(module, function, args.len(), &qualified, call_error));
        };

        let mut dyn_args = Vec::with_capacity(args.len());
        for (i, arg) in args.iter().enumerate() {
            dyn_args.push(to_dynamic(arg).map_err(|e| {
                call_error(
                    format!(
                        "argument {} (`{}`) of `{qualified}`: {}",
                        i + 1,
                        sig.params.get(i).map(String::as_str).unwrap_or("?"),
                        e.message()
                    ),
                    e.hint().map(str::to_string),
                )
            })?);
        }

        let options = CallFnOptions::new()
            .eval_ast(false)
            .rewind_scope(true)
            .with_tag(Clock::from(ctx));
        let mut scope = Scope::new();
        let result = self
            .modules
            .call_fn_with_options::<Dynamic>(options, &mut scope, &compiled.ast, function, dyn_args)
            .map_err(|e| error::runtime_error(&e, &subject(sig.params.clone())))?;
        check_size(&result, &self.limits, &format!("the rule `{qualified}`"))
            .map_err(|(message, hint)| call_error(message, Some(hint)))?;
        from_dynamic(&result).map_err(|e| {
            call_error(
                format!(
                    "`{qualified}` returned a value that is not JSON: {}",
                    e.message()
                ),
                e.hint().map(str::to_string),
            )
        })
    }

    fn explain_missing(
        &self,
        module: &RuleModule,
        function: &str,
        arity: usize,
        qualified: &str,
        call_error: impl Fn(String, Option<String>) -> RuleError,
    ) -> RuleError {
        let compiled = &module.compiled;
        let same_name: Vec<&FnSig> = compiled
            .functions
            .iter()
            .filter(|f| f.name == function)
            .collect();
        if !same_name.is_empty() {
            let shapes = same_name
                .iter()
                .map(|f| format!("{}({})", f.name, f.params.join(", ")))
                .collect::<Vec<_>>()
                .join(" or ");
            return call_error(
                format!("`{qualified}` was called with {arity} argument(s) but expects {shapes}"),
                Some("check the arguments given to the rule in the workflow".into()),
            );
        }
        if compiled.private.iter().any(|f| f.name == function) {
            return call_error(
                format!(
                    "`{qualified}` is private to the module and cannot be called from a workflow"
                ),
                Some("remove `private` before `fn` if the workflow needs it".into()),
            );
        }
        let names: Vec<&str> = compiled.functions.iter().map(|f| f.name.as_str()).collect();
        let hint = error::did_you_mean(&error::close_names(function, names.iter().copied()))
            .or_else(|| {
                (!names.is_empty())
                    .then(|| format!("the module `{}` has: {}", module.name, names.join(", ")))
            });
        call_error(
            format!("the module `{}` has no function `{function}`", module.name),
            hint,
        )
    }

    /// Compiles a single expression (conditions and assignments of workflows), cached
    /// by text. `if` expressions are allowed; statements are not.
    pub fn compile_expr(&self, source: &str) -> Result<Arc<Expr>, RuleError> {
        if let Some(expr) = lock(&self.caches).exprs.get(source) {
            return Ok(expr.clone());
        }
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let ast = self.exprs.compile_expression(source).map_err(|e| {
            let (message, hint) = error::describe_parse(e.err_type(), source, &self.limits, false);
            let (line, column) = error::line_col(e.position());
            RuleError::Expression {
                expression: source.to_string(),
                line,
                column,
                message,
                hint,
            }
        })?;
        let expr = Arc::new(Expr {
            source: source.to_string(),
            variables: free_variables(&ast),
            ast,
        });
        Ok(lock(&self.caches)
            .exprs
            .entry(source.to_string())
            .or_insert(expr)
            .clone())
    }

    /// Evaluates an expression; every top-level key of `vars` is a variable, plus
    /// `NOW` and `TODAY` from `ctx`.
    pub fn eval_expr(
        &self,
        expr: &Expr,
        vars: &serde_json::Map<String, Value>,
        ctx: &RuleContext,
    ) -> Result<Value, RuleError> {
        let mut scope = Scope::new();
        let clock = Clock::from(ctx);
        scope.push_constant("NOW", clock.now);
        scope.push_constant("TODAY", clock.today);
        // Only the variables the expression reads are converted.
        for name in &expr.variables {
            if let Some(value) = vars.get(name) {
                let value = to_dynamic(value).map_err(|e| RuleError::Runtime {
                    function: expr.source.clone(),
                    path: None,
                    line: None,
                    column: None,
                    message: format!("the variable `{name}` cannot be used: {}", e.message()),
                    hint: e.hint().map(str::to_string),
                })?;
                scope.push_dynamic(name.as_str(), value);
            }
        }
        let subject = || error::Subject {
            function: expr.source.clone(),
            label: format!("the expression `{}`", expr.source),
            path: None,
            limits: &self.limits,
            variables: vars.keys().cloned().collect(),
            functions: Vec::new(),
            fields: field_names(vars.values()),
        };
        let result = self
            .exprs
            .eval_ast_with_scope::<Dynamic>(&mut scope, &expr.ast)
            .map_err(|e| error::runtime_error(&e, &subject()))?;
        let runtime = |message: String, hint: Option<String>| RuleError::Runtime {
            function: expr.source.clone(),
            path: None,
            line: None,
            column: None,
            message,
            hint,
        };
        check_size(
            &result,
            &self.limits,
            &format!("the expression `{}`", expr.source),
        )
        .map_err(|(message, hint)| runtime(message, Some(hint)))?;
        from_dynamic(&result).map_err(|e| RuleError::Runtime {
            function: expr.source.clone(),
            path: None,
            line: None,
            column: None,
            message: format!(
                "the expression `{}` gave a value that is not JSON: {}",
                expr.source,
                e.message()
            ),
            hint: e.hint().map(str::to_string),
        })
    }

    /// Evaluates a condition: like [`Rules::eval_expr`], but the result must be a boolean.
    pub fn eval_bool(
        &self,
        expr: &Expr,
        vars: &serde_json::Map<String, Value>,
        ctx: &RuleContext,
    ) -> Result<bool, RuleError> {
        match self.eval_expr(expr, vars, ctx)? {
            Value::Bool(b) => Ok(b),
            other => Err(RuleError::Runtime {
                function: expr.source.clone(),
                path: None,
                line: None,
                column: None,
                message: format!(
                    "the condition `{}` gave {} ({}) instead of true or false",
                    expr.source,
                    short_json(&other),
                    json_kind(&other)
                ),
                hint: Some(
                    "write a comparison, e.g. `input.montant > 1000` or `x == \"oui\"`".into(),
                ),
            }),
        }
    }
}

/// Checks a result against the size limits. Rhai checks most ways of building
/// values, but not a map grown one `m[key] = value` at a time.
fn check_size(value: &Dynamic, limits: &Limits, label: &str) -> Result<(), (String, String)> {
    fn walk(value: &Dynamic, limits: &Limits) -> Option<String> {
        if let Some(map) = value.read_lock::<rhai::Map>() {
            if map.len() > limits.max_map_size {
                return Some(format!(
                    "an object with more than {} fields",
                    limits.max_map_size
                ));
            }
            return map.values().find_map(|v| walk(v, limits));
        }
        if let Some(array) = value.read_lock::<rhai::Array>() {
            if array.len() > limits.max_array_size {
                return Some(format!(
                    "a list with more than {} elements",
                    limits.max_array_size
                ));
            }
            return array.iter().find_map(|v| walk(v, limits));
        }
        if let Some(s) = value.read_lock::<ImmutableString>() {
            if s.len() > limits.max_string_size {
                return Some(format!(
                    "a text longer than {} bytes",
                    limits.max_string_size
                ));
            }
        }
        None
    }
    match walk(value, limits) {
        Some(what) => Err((
            format!("{label} built {what}, which is more than allowed"),
            "it probably grows a value in a loop without end".to_string(),
        )),
        None => Ok(()),
    }
}

/// A JSON value, shortened for messages.
pub(crate) fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
