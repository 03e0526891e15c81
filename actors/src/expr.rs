//! Expressions: the [Common Expression Language](https://cel.dev) (CEL), through the `cel`
//! crate. Vigil does not have a language of its own: conditions in the topology (a pattern
//! step's `where`, for instance) are CEL, compiled once when the topology is compiled and
//! evaluated per event. See `docs/expressions.md` for the language and the variables each
//! place provides.
//!
//! ```
//! use vigil_actors::expr::{Expr, Vars};
//!
//! let expr = Expr::compile("event.amount > 100.0 && event.customer_id == first.customer_id").unwrap();
//! assert_eq!(expr.variables(), ["event", "first"]);
//!
//! let mut vars = Vars::new();
//! vars.bind_json("event", &serde_json::json!({ "amount": 150, "customer_id": "C-1" }));
//! vars.bind_json("first", &serde_json::json!({ "customer_id": "C-1" }));
//! assert_eq!(expr.eval_bool(&vars), Ok(true));
//!
//! let error = Expr::compile("event.amount >").unwrap_err();
//! assert_eq!(error.offset, Some(14));
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{operators, EntryExpr, Expr as Node, IdedExpr, LiteralValue};
use cel::objects::Key;
use cel::{Context, Env, Program, Value as CelValue};
use serde_json::Value;

/// The standard CEL environment (functions and macros), built once.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A compiled CEL expression.
pub struct Expr {
    source: String,
    program: Program,
    /// The free variables it refers to, in name order (not those bound by macros such as
    /// `list.all(x, ...)`).
    variables: Vec<String>,
    /// Set if the expression is a [`Comparison`].
    comparison: Option<Comparison>,
}

/// A condition `a < b` (or `<=`, `>`, `>=`), each side a number literal or a field of a
/// variable (`event.amount`, `created.customer.total`), as [`Expr::comparison`] finds it.
/// The caller can decide it from the two numbers alone ([`Comparison::decide`]), where CEL's
/// interpreter needs each variable as a CEL value first: the usual pattern condition,
/// `event.amount >= created.amount`, is then a lookup of two numbers.
#[derive(Debug)]
pub struct Comparison {
    op: &'static str,
    sides: [Side; 2],
}

#[derive(Debug)]
enum Side {
    Number(CelValue),
    Field { variable: String, path: Vec<String> },
}

impl Comparison {
    fn of(expr: &IdedExpr) -> Option<Comparison> {
        let Node::Call(call) = &expr.expr else {
            return None;
        };
        let op = [
            operators::LESS,
            operators::LESS_EQUALS,
            operators::GREATER,
            operators::GREATER_EQUALS,
        ]
        .into_iter()
        .find(|op| *op == call.func_name)?;
        let [a, b] = call.args.as_slice() else {
            return None;
        };
        if call.target.is_some() {
            return None;
        }
        Some(Comparison {
            op,
            sides: [Side::of(a)?, Side::of(b)?],
        })
    }

    /// Decides the comparison with `field(variable, path)` giving the number at each field
    /// side (`Int`, `UInt` or `Float`), by CEL's rules for comparing numbers. `None` if a side
    /// is missing or not a number: evaluate the expression with [`Expr::eval_bool`] then,
    /// for CEL's own answer (an error, for a missing field).
    pub fn decide(
        &self,
        mut field: impl FnMut(&str, &[String]) -> Option<CelValue>,
    ) -> Option<bool> {
        let mut value = |side: &Side| match side {
            Side::Number(n) => Some(n.clone()),
            Side::Field { variable, path } => field(variable, path),
        };
        let (a, b) = (value(&self.sides[0])?, value(&self.sides[1])?);
        let number =
            |v: &CelValue| matches!(v, CelValue::Int(_) | CelValue::UInt(_) | CelValue::Float(_));
        if !number(&a) || !number(&b) {
            return None;
        }
        let order = a.partial_cmp(&b)?; // NaN: CEL's error
        Some(match self.op {
            operators::LESS => order.is_lt(),
            operators::LESS_EQUALS => order.is_le(),
            operators::GREATER => order.is_gt(),
            _ => order.is_ge(),
        })
    }
}

impl Side {
    fn of(expr: &IdedExpr) -> Option<Side> {
        match &expr.expr {
            Node::Literal(LiteralValue::Int(i)) => Some(Side::Number(CelValue::Int(*i.inner()))),
            Node::Literal(LiteralValue::UInt(u)) => Some(Side::Number(CelValue::UInt(*u.inner()))),
            Node::Literal(LiteralValue::Double(d)) => {
                Some(Side::Number(CelValue::Float(*d.inner())))
            }
            Node::Select(_) => {
                let mut path = Vec::new();
                let mut node = expr;
                loop {
                    match &node.expr {
                        Node::Select(select) if !select.test => {
                            path.push(select.field.clone());
                            node = &select.operand;
                        }
                        Node::Ident(variable) => {
                            path.reverse();
                            return Some(Side::Field {
                                variable: variable.clone(),
                                path,
                            });
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

/// Why an expression does not compile or could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub message: String,
    /// Byte offset in the expression's source where the problem is, when known.
    pub offset: Option<usize>,
}

impl Expr {
    /// Parses and checks `source`. Syntax errors carry the offset of the first one.
    pub fn compile(source: &str) -> Result<Expr, ExprError> {
        let program = match ENV.compile(source) {
            Ok(program) => program,
            Err(errors) => {
                let first = errors.errors.first();
                let message = first.map_or_else(
                    || "invalid expression".to_owned(),
                    |e| match e.msg.strip_prefix("Syntax error: ") {
                        Some(rest) => format!("syntax error: {rest}"),
                        None => format!("syntax error: {}", e.msg),
                    },
                );
                let offset = first.and_then(|e| offset_of(source, e.pos.0, e.pos.1));
                return Err(ExprError { message, offset });
            }
        };
        let mut variables = BTreeSet::new();
        free_variables(program.expression(), &mut Vec::new(), &mut variables);
        Ok(Expr {
            source: source.to_owned(),
            variables: variables.into_iter().collect(),
            comparison: Comparison::of(program.expression()),
            program,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the expression refers to, in name order.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// The expression as a [`Comparison`] of two numbers, if it is one.
    pub fn comparison(&self) -> Option<&Comparison> {
        self.comparison.as_ref()
    }

    /// Whether the expression refers to the variable `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.variables.iter().any(|v| v == name)
    }

    /// The fields the expression reads of the variable `name`, as the chains of static member
    /// accesses on it (`created.customer.id` reads `["customer", "id"]`, `has(event.coupon)`
    /// `["coupon"]`), in order and without repeats; `None` if it uses the variable in any other
    /// way (as a whole, indexed, as a macro's range, ...). An unused variable reads no fields.
    pub fn field_paths(&self, name: &str) -> Option<Vec<Vec<String>>> {
        self.reads(name, false)
    }

    /// The fields the expression reads of the elements of the list variable `name`, through
    /// the iteration variable of the macros over it (`failed.all(f, f.method != event.method)`
    /// reads `["method"]`); `None` if it uses the list or an element in any other way (see
    /// [`Expr::field_paths`]).
    pub fn element_paths(&self, name: &str) -> Option<Vec<Vec<String>>> {
        self.reads(name, true)
    }

    fn reads(&self, name: &str, list: bool) -> Option<Vec<Vec<String>>> {
        let mut reads = Reads {
            name,
            list,
            paths: BTreeSet::new(),
            whole: false,
        };
        reads.walk(self.program.expression(), true, &[]);
        (!reads.whole).then(|| reads.paths.into_iter().collect())
    }

    /// Evaluates the expression with `vars`.
    pub fn eval(&self, vars: &Vars) -> Result<Value, ExprError> {
        Ok(to_json(&self.eval_cel(vars)?))
    }

    /// Evaluates a condition: it must produce a boolean.
    pub fn eval_bool(&self, vars: &Vars) -> Result<bool, ExprError> {
        match self.eval_cel(vars)? {
            CelValue::Bool(b) => Ok(b),
            other => Err(ExprError {
                message: format!(
                    "`{}` must be a condition (true or false), but it gave {}",
                    self.source,
                    to_json(&other)
                ),
                offset: None,
            }),
        }
    }

    fn eval_cel(&self, vars: &Vars) -> Result<CelValue, ExprError> {
        let mut context = Context::with_env(ENV.clone());
        for (name, value) in &vars.bindings {
            context.add_variable_from_value(name.as_str(), value.clone());
        }
        self.program.execute(&context).map_err(|e| ExprError {
            message: e.to_string(),
            offset: None,
        })
    }
}

/// The variables an expression is evaluated with.
#[derive(Default, Clone)]
pub struct Vars {
    bindings: Vec<(String, CelValue)>,
}

impl Vars {
    pub fn new() -> Vars {
        Vars::default()
    }

    /// Binds `name` to a JSON value (replacing an earlier binding of the same name).
    pub fn bind_json(&mut self, name: &str, value: &Value) {
        self.bind(name, to_cel(value));
    }

    /// Binds `name` to a CEL value (cheap for maps and lists: they are shared, not copied).
    pub fn bind(&mut self, name: &str, value: CelValue) {
        match self.bindings.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.bindings.push((name.to_owned(), value)),
        }
    }
}

/// JSON → CEL: objects become maps with string keys, integers `int` (or `uint` beyond `i64`),
/// other numbers `double`.
pub fn to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            _ => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let map: HashMap<Key, CelValue> = map
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            CelValue::from(map)
        }
    }
}

/// CEL → JSON. Bytes become base64-free arrays of numbers, durations and timestamps strings;
/// values with no JSON form (functions, opaque values) become `null`.
pub fn to_json(value: &CelValue) -> Value {
    match value {
        CelValue::Null => Value::Null,
        CelValue::Bool(b) => Value::Bool(*b),
        CelValue::Int(i) => Value::from(*i),
        CelValue::UInt(u) => Value::from(*u),
        CelValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        CelValue::String(s) => Value::String(s.to_string()),
        CelValue::Bytes(b) => Value::Array(b.iter().map(|&x| Value::from(x)).collect()),
        CelValue::List(items) => Value::Array(items.iter().map(to_json).collect()),
        CelValue::Map(map) => Value::Object(
            map.map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Key::String(s) => s.to_string(),
                        Key::Int(i) => i.to_string(),
                        Key::Uint(u) => u.to_string(),
                        Key::Bool(b) => b.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        CelValue::Duration(d) => Value::String(format!("{}ms", d.num_milliseconds())),
        CelValue::Timestamp(t) => Value::String(t.to_rfc3339()),
        _ => Value::Null,
    }
}

/// Collects the identifiers of `expr` not bound by an enclosing comprehension (the macros
/// `all`, `exists`, `map`, `filter` bind their iteration variable).
fn free_variables(expr: &IdedExpr, bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
    match &expr.expr {
        Node::Unspecified | Node::Literal(_) => {}
        Node::Ident(name) => {
            if !name.starts_with('@') && !bound.contains(name) {
                out.insert(name.clone());
            }
        }
        Node::Comprehension(c) => {
            free_variables(&c.iter_range, bound, out);
            free_variables(&c.accu_init, bound, out);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            free_variables(&c.loop_cond, bound, out);
            free_variables(&c.loop_step, bound, out);
            free_variables(&c.result, bound, out);
            bound.truncate(before);
        }
        _ => {
            for operand in operands(expr) {
                free_variables(operand, bound, out);
            }
        }
    }
}

/// The subexpressions of a select, call, list, map or struct, which bind no variable (none for
/// the other nodes).
fn operands(expr: &IdedExpr) -> Vec<&IdedExpr> {
    fn entries<'e>(entries: impl Iterator<Item = &'e EntryExpr>) -> Vec<&'e IdedExpr> {
        let mut out = Vec::new();
        for entry in entries {
            match entry {
                EntryExpr::StructField(field) => out.push(&field.value),
                EntryExpr::MapEntry(e) => out.extend([&e.key, &e.value]),
            }
        }
        out
    }
    match &expr.expr {
        Node::Select(select) => vec![&select.operand],
        Node::Call(call) => call.target.iter().map(|t| &**t).chain(&call.args).collect(),
        Node::List(list) => list.elements.iter().collect(),
        Node::Map(map) => entries(map.entries.iter().map(|e| &e.expr)),
        Node::Struct(s) => entries(s.entries.iter().map(|e| &e.expr)),
        Node::Unspecified | Node::Literal(_) | Node::Ident(_) | Node::Comprehension(_) => vec![],
    }
}

/// What an expression reads of one variable (see [`Expr::field_paths`]).
struct Reads<'n> {
    name: &'n str,
    /// Whether `name` is a list whose elements are read through macros.
    list: bool,
    paths: BTreeSet<Vec<String>>,
    /// The variable (or an element of the list) is used other than through member accesses.
    whole: bool,
}

impl Reads<'_> {
    /// Walks `expr`, where `visible` tells whether `name` is not shadowed by a macro's
    /// variable, and `elements` are the macro variables bound to an element of the list.
    fn walk(&mut self, expr: &IdedExpr, visible: bool, elements: &[String]) {
        let is_name = |n: &String| visible && n == self.name;
        match &expr.expr {
            Node::Unspecified | Node::Literal(_) => {}
            Node::Ident(n) => self.whole |= is_name(n) || elements.contains(n),
            Node::Select(_) => {
                let mut path = Vec::new();
                let mut operand = expr;
                while let Node::Select(select) = &operand.expr {
                    path.push(select.field.clone());
                    operand = &select.operand;
                }
                match &operand.expr {
                    Node::Ident(n) if (is_name(n) && !self.list) || elements.contains(n) => {
                        path.reverse();
                        self.paths.insert(path);
                    }
                    _ => self.walk(operand, visible, elements),
                }
            }
            Node::Comprehension(c) => {
                let over_elements = self.list
                    && c.iter_var2.is_none()
                    && matches!(&c.iter_range.expr, Node::Ident(n) if is_name(n));
                if !over_elements {
                    self.walk(&c.iter_range, visible, elements);
                }
                self.walk(&c.accu_init, visible, elements);
                let binds = |n: &str| {
                    n == c.iter_var || c.iter_var2.as_deref() == Some(n) || n == c.accu_var
                };
                let visible = visible && !binds(self.name);
                let mut inner: Vec<String> =
                    elements.iter().filter(|e| !binds(e)).cloned().collect();
                if over_elements {
                    inner.push(c.iter_var.clone());
                }
                for part in [&c.loop_cond, &c.loop_step, &c.result] {
                    self.walk(part, visible, &inner);
                }
            }
            _ => {
                for operand in operands(expr) {
                    self.walk(operand, visible, elements);
                }
            }
        }
    }
}

/// The byte offset of a 1-based line and 0-based (character) column, clamped to the source.
fn offset_of(source: &str, line: isize, column: isize) -> Option<usize> {
    let line = usize::try_from(line).ok()?.max(1);
    let column = usize::try_from(column).ok()?;
    let mut offset = 0;
    for (i, text) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let within = text
                .char_indices()
                .nth(column)
                .map_or(text.len(), |(b, _)| b);
            return Some((offset + within).min(source.len()));
        }
        offset += text.len();
    }
    Some(source.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn eval(source: &str, event: Value) -> Result<Value, ExprError> {
        let mut vars = Vars::new();
        vars.bind_json("event", &event);
        Expr::compile(source).unwrap().eval(&vars)
    }

    #[test]
    fn conditions_on_event_fields() {
        let event = json!({"amount": 150, "price": 9.5, "country": "DE", "tags": ["a", "b"],
                           "customer": {"id": "C-1"}, "parcels": 2});
        assert_eq!(eval("event.amount > 100", event.clone()), Ok(json!(true)));
        assert_eq!(eval("event.price * 2.0", event.clone()), Ok(json!(19.0)));
        assert_eq!(
            eval("event.country in ['DE', 'AT']", event.clone()),
            Ok(json!(true))
        );
        assert_eq!(eval("size(event.tags)", event.clone()), Ok(json!(2)));
        assert_eq!(eval("event.customer.id", event.clone()), Ok(json!("C-1")));
        assert_eq!(
            eval("has(event.coupon) ? event.coupon : 'none'", event.clone()),
            Ok(json!("none"))
        );
        assert_eq!(
            eval("event.tags.exists(t, t == 'b')", event.clone()),
            Ok(json!(true))
        );
        assert!(eval("event.missing == 1", event).is_err());
    }

    #[test]
    fn mixed_int_and_double_comparisons() {
        assert_eq!(
            eval("event.amount > 100.0", json!({"amount": 150})),
            Ok(json!(true))
        );
        assert_eq!(
            eval("event.amount >= 100", json!({"amount": 99.5})),
            Ok(json!(false))
        );
    }

    #[test]
    fn free_variables_exclude_macro_bindings() {
        let expr =
            Expr::compile("failed.all(f, f.method != event.method) && x.exists(y, y > first.n)")
                .unwrap();
        assert_eq!(expr.variables(), ["event", "failed", "first", "x"]);
        assert!(expr.uses("first") && !expr.uses("f"));
    }

    #[test]
    fn field_paths_are_the_static_member_accesses() {
        let paths = |source: &str, name: &str| Expr::compile(source).unwrap().field_paths(name);
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            paths(
                "event.amount >= created.amount && event.customer.id == created.customer.id",
                "created"
            ),
            Some(vec![path(&["amount"]), path(&["customer", "id"])])
        );
        assert_eq!(
            paths("has(event.coupon) && event.coupon.size() > 2", "event"),
            Some(vec![path(&["coupon"])])
        );
        assert_eq!(paths("event.amount > 1", "created"), Some(vec![]));
        assert_eq!(
            paths("[1].all(event, event > 0) && event.a", "event"),
            Some(vec![path(&["a"])]),
            "a macro variable shadows it"
        );
        for whole in [
            "event == created",
            "created['amount'] > 1",
            "size(created) > 1",
            "created.exists(k, k == 'a')",
            "[created][0].amount > 1",
        ] {
            assert_eq!(paths(whole, "created"), None, "{whole}");
        }
    }

    #[test]
    fn element_paths_go_through_macros_over_the_list() {
        let paths = |source: &str| Expr::compile(source).unwrap().element_paths("failed");
        assert_eq!(
            paths("failed.all(f, f.method != event.method && f.card.bin != '4')"),
            Some(vec![
                vec!["card".to_string(), "bin".to_string()],
                vec!["method".to_string()]
            ])
        );
        assert_eq!(paths("event.x > 1"), Some(vec![]));
        for whole in [
            "size(failed) > 2",
            "failed[0].method == 'card'",
            "failed.all(f, f != event)",
            "failed.method == 'card'",
            "failed.all(i, v, v.method == 'card')",
            "failed.exists(f, [f].size() > 0)",
        ] {
            assert_eq!(paths(whole), None, "{whole}");
        }
    }

    #[test]
    fn syntax_errors_point_into_the_source() {
        let error = Expr::compile("event.a == ").unwrap_err();
        assert!(error.message.starts_with("syntax error"), "{error:?}");
        assert_eq!(error.offset, Some(11));
        let error = Expr::compile("event.a = 1").unwrap_err();
        assert!(error.offset.is_some());
    }

    #[test]
    fn non_boolean_conditions_are_errors() {
        let mut vars = Vars::new();
        vars.bind_json("event", &json!({"a": 1}));
        assert!(Expr::compile("event.a").unwrap().eval_bool(&vars).is_err());
    }

    #[test]
    fn json_round_trip() {
        let value = json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}});
        assert_eq!(to_json(&to_cel(&value)), value);
    }

    /// Numbers of every JSON kind, often equal across kinds (2, 2.0) and near 2^63, where
    /// an int, a uint and a double of "the same" value compare differently.
    fn number() -> impl Strategy<Value = Value> {
        const EDGE: i64 = i64::MAX - 2;
        prop_oneof![
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => (-1e12f64..1e12).prop_map(Value::from),
            3 => (-2i64..3).prop_map(Value::from),
            3 => (-2i64..3).prop_map(|i| Value::from(i as f64)),
            2 => (0u64..3).prop_map(|u| Value::from(u + u64::MAX / 2 - 1)),
            2 => (0i64..3).prop_map(|i| Value::from(EDGE + i)),
            1 => (0i64..3).prop_map(|i| Value::from((EDGE + i) as f64)),
        ]
    }

    /// A literal CEL parses as a number: non-negative (`-1` is a call of unary minus).
    fn literal() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => (0i64..i64::MAX).prop_map(|i| i.to_string()),
            1 => any::<u64>().prop_map(|u| format!("{u}u")),
            1 => (0.0f64..1e9).prop_map(|f| format!("{f:.3}")),
            3 => (0i64..3).prop_map(|i| i.to_string()),
            3 => (0i64..3).prop_map(|i| format!("{i}.0")),
            2 => (0u64..3).prop_map(|u| format!("{}u", u + u64::MAX / 2 - 1)),
            2 => (0i64..3).prop_map(|i| (i64::MAX - 2 + i).to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// A comparison decided from its two numbers gives what CEL gives, for ints, uints
        /// and doubles on either side; it declines what is not two numbers.
        #[test]
        fn comparisons_decide_as_cel_does(
            a in prop_oneof![number(), Just(json!("text")), Just(json!(null))],
            b in number(),
            op in prop::sample::select(vec!["<", "<=", ">", ">="]),
            right in prop_oneof![literal().prop_map(Some), Just(None)],
            a_missing in any::<bool>(),
        ) {
            let source = match &right {
                Some(literal) => format!("event.a {op} {literal}"),
                None => format!("event.a {op} created.x.b"),
            };
            let expr = Expr::compile(&source).unwrap();
            let comparison = expr.comparison().expect("a comparison of two numbers");
            let event = if a_missing { json!({"z": 1}) } else { json!({ "a": a }) };
            let created = json!({"x": {"b": b}});
            let mut vars = Vars::new();
            vars.bind_json("event", &event);
            vars.bind_json("created", &created);
            let decided = comparison.decide(|variable, path| {
                let root = match variable {
                    "event" => &event,
                    "created" => &created,
                    _ => return None,
                };
                path.iter().try_fold(root, |v, k| v.get(k)).map(to_cel)
            });
            let cel = expr.eval_bool(&vars);
            match decided {
                Some(result) => prop_assert_eq!(Ok(result), cel),
                None => prop_assert!(a_missing || !a.is_number(), "declined two numbers"),
            }
        }
    }

    #[test]
    fn only_number_comparisons_of_fields_and_literals_are_comparisons() {
        for source in [
            "event.amount >= created.amount",
            "event.a.b < 3",
            "2.5 > event.x",
        ] {
            assert!(
                Expr::compile(source).unwrap().comparison().is_some(),
                "{source}"
            );
        }
        for source in [
            "event.amount == 3",
            "event.amount > 1 && event.amount < 5",
            "size(event.tags) > 1",
            "event['a'] > 1",
            "has(event.a)",
        ] {
            assert!(
                Expr::compile(source).unwrap().comparison().is_none(),
                "{source}"
            );
        }
    }
}
