//! Subscription filters: the tag grammar (`*`, `A || B`) and SQL92 over
//! message properties, compiled once and evaluated per message.
//!
//! One parser, one meaning, for the broker (which filters a pull) and the
//! client (which rechecks: tag hashes may collide, and a pull the broker
//! answers `PULL_RETRY_IMMEDIATELY` is followed by an unfiltered one).
//!
//! # Tags
//! `*`, an empty expression, or a list holding `*` match every message;
//! otherwise `A || B || ...` (each tag trimmed) matches a message whose tag
//! is one of them. A list with no tag (`||`) is refused.
//!
//! # SQL92
//! Over the message's properties (user properties, and `TAGS` / `KEYS`
//! for its tag and keys: [`crate::Message::property`]), as the feature
//! contract says:
//!
//! - comparisons `=`, `<>` (`!=`), `<`, `<=`, `>`, `>=`; `AND`, `OR`, `NOT`,
//!   parentheses; `x [NOT] IN ('a', 'b', 1)`, `x [NOT] BETWEEN 1 AND 3`,
//!   `x IS [NOT] NULL`;
//! - literals: strings in single quotes, numbers (long or double, a leading
//!   `-` allowed), `TRUE` / `FALSE`; property names as identifiers
//!   (`a`, `a.b`, or `"any name"` in double quotes).
//!
//! Property values are strings. Compared with a number (and always with
//! `<`, `<=`, `>`, `>=`, `BETWEEN`) a value is parsed as a number, with
//! `TRUE` / `FALSE` as a boolean (`true` / `false`, any case). A missing
//! property, or a value that does not parse, makes the comparison
//! *unknown*; `NOT`, `AND` and `OR` follow SQL's three-valued logic, and a
//! message matches only when the whole expression is true. So neither a
//! missing property nor a type mismatch is an error: the message does not
//! match.
//!
//! The expression is parsed by the `sqlparser` crate's expression parser;
//! anything after the expression (`a > 5; DROP TABLE t`) is refused, and
//! only the node kinds above are accepted: functions, arithmetic, `LIKE`,
//! subqueries, `CASE`, ... are refused with an error naming them, and so
//! is an expression longer than [`MAX_SQL_LEN`] bytes or deeper than
//! [`MAX_SQL_DEPTH`] levels (compiling and evaluating recurse per level:
//! the bound keeps a chain of `AND`s from exhausting a thread's stack).
//! Compiling builds a small tree of our own; evaluating it allocates
//! nothing.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};

use sqlparser::ast::{BinaryOperator, Expr, InTarget, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::tag_hash;

/// Expression type of a tag subscription (RocketMQ `ExpressionType.TAG`).
pub const TYPE_TAG: &str = "TAG";
/// Expression type of a SQL92 subscription (RocketMQ `ExpressionType.SQL92`).
pub const TYPE_SQL92: &str = "SQL92";
/// The property holding a message's tag.
pub const PROPERTY_TAGS: &str = "TAGS";
/// The property holding a message's space-separated keys.
pub const PROPERTY_KEYS: &str = "KEYS";
/// Longest SQL92 expression accepted, in bytes.
pub const MAX_SQL_LEN: usize = 4096;
/// Deepest SQL92 expression tree accepted (each `AND` / `OR` / `NOT` /
/// comparison / parenthesis is a level; an `IN` list is one).
pub const MAX_SQL_DEPTH: usize = 64;

/// Why an expression was refused. Each is one line naming the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The expression type is neither `TAG` nor `SQL92`.
    #[error("unknown expression type {0:?} (TAG or SQL92)")]
    UnknownType(String),
    /// A tag expression with no tag in it.
    #[error("bad tag expression {0:?}: no tag")]
    NoTag(String),
    /// SQL92 filtering is switched off on this broker.
    #[error(
        "the broker does not support consumer to filter message by SQL92 (enable_property_filter = false)"
    )]
    SqlDisabled,
    /// The SQL92 expression does not parse.
    #[error("bad SQL92 expression {expr:?}: {reason}")]
    Syntax {
        /// The expression.
        expr: String,
        /// What the parser said.
        reason: String,
    },
    /// The SQL92 expression parses, but uses something filters do not allow.
    #[error("bad SQL92 expression {expr:?}: {what} is not allowed in a filter")]
    NotAllowed {
        /// The expression.
        expr: String,
        /// The refused construct.
        what: String,
    },
}

/// Whether an expression type names SQL92 (else a tag expression; `None`
/// and `TAG` are tags). Unknown types are refused.
pub fn is_sql92(expression_type: Option<&str>) -> Result<bool, FilterError> {
    match expression_type.map(str::trim) {
        None | Some("") => Ok(false),
        Some(t) if t.eq_ignore_ascii_case(TYPE_TAG) => Ok(false),
        Some(t) if t.eq_ignore_ascii_case(TYPE_SQL92) => Ok(true),
        Some(t) => Err(FilterError::UnknownType(t.to_string())),
    }
}

/// A compiled subscription expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// A tag expression.
    Tag(TagExpr),
    /// A SQL92 expression.
    Sql(SqlExpr),
}

impl Filter {
    /// Compiles `expression` of `expression_type` (`None` or `TAG`: tags;
    /// `SQL92`). No expression is `*`.
    pub fn compile(
        expression: Option<&str>,
        expression_type: Option<&str>,
    ) -> Result<Filter, FilterError> {
        let expr = expression.unwrap_or("");
        if is_sql92(expression_type)? {
            SqlExpr::compile(expr).map(Filter::Sql)
        } else {
            TagExpr::parse(expr).map(Filter::Tag)
        }
    }

    /// Whether every message matches (`*`).
    pub fn is_all(&self) -> bool {
        matches!(self, Filter::Tag(t) if t.is_all())
    }

    /// The expression as sent to the broker.
    pub fn expression(&self) -> &str {
        match self {
            Filter::Tag(t) => t.expression(),
            Filter::Sql(s) => s.expression(),
        }
    }

    /// `TAG` or `SQL92`.
    pub fn expression_type(&self) -> &'static str {
        match self {
            Filter::Tag(_) => TYPE_TAG,
            Filter::Sql(_) => TYPE_SQL92,
        }
    }

    /// The tag hashes to filter the consume queue by (the broker's fast
    /// path); `None` for `*` and for SQL92.
    pub fn tag_codes(&self) -> Option<&HashSet<i64>> {
        match self {
            Filter::Tag(t) => t.codes(),
            Filter::Sql(_) => None,
        }
    }

    /// The SQL92 expression, if this is one.
    pub fn sql(&self) -> Option<&SqlExpr> {
        match self {
            Filter::Sql(s) => Some(s),
            Filter::Tag(_) => None,
        }
    }

    /// Whether a message with these properties matches (`TAGS` holds the
    /// tag).
    pub fn matches<'a>(&self, property: impl Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            Filter::Tag(t) => t.matches(property(PROPERTY_TAGS)),
            Filter::Sql(s) => s.matches(property),
        }
    }
}

/// A parsed tag expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagExpr {
    expr: String,
    /// `None` = every message.
    tags: Option<(BTreeSet<String>, HashSet<i64>)>,
}

impl TagExpr {
    /// Parses `*` / empty (everything) or `A || B || ...`.
    pub fn parse(expr: &str) -> Result<TagExpr, FilterError> {
        let all = TagExpr {
            expr: "*".into(),
            tags: None,
        };
        let trimmed = expr.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Ok(all);
        }
        let tags: BTreeSet<String> = trimmed
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if tags.is_empty() {
            return Err(FilterError::NoTag(expr.to_string()));
        }
        if tags.contains("*") {
            return Ok(all);
        }
        let codes = tags.iter().map(|t| tag_hash(t)).collect();
        Ok(TagExpr {
            expr: trimmed.to_string(),
            tags: Some((tags, codes)),
        })
    }

    /// The expression (`*` for everything).
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// Whether every message matches.
    pub fn is_all(&self) -> bool {
        self.tags.is_none()
    }

    /// The tags, sorted (empty for `*`).
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .flat_map(|(t, _)| t.iter().map(String::as_str))
    }

    /// Their [`tag_hash`](fn@crate::tag_hash)es; `None` for `*`.
    pub fn codes(&self) -> Option<&HashSet<i64>> {
        self.tags.as_ref().map(|(_, c)| c)
    }

    /// Whether a message with this tag matches.
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match &self.tags {
            None => true,
            Some((set, _)) => tag.is_some_and(|t| set.contains(t)),
        }
    }
}

/// A compiled SQL92 expression (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlExpr {
    expr: String,
    root: Node,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Long(i64),
    Double(f64),
}

impl Num {
    fn parse(s: &str) -> Option<Num> {
        if let Ok(l) = s.parse::<i64>() {
            return Some(Num::Long(l));
        }
        // Only plain decimal forms: Rust also reads "inf" and "NaN".
        if !s.bytes().any(|b| b.is_ascii_digit())
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return None;
        }
        s.parse::<f64>().ok().map(Num::Double)
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Long(l) => l as f64,
            Num::Double(d) => d,
        }
    }

    fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Long(a), Num::Long(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn neg(self) -> Num {
        match self {
            Num::Long(l) => l.checked_neg().map_or(Num::Double(-(l as f64)), Num::Long),
            Num::Double(d) => Num::Double(-d),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Num(Num),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Prop(String),
    Lit(Lit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Const(bool),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Cmp(Cmp, Operand, Operand),
    In {
        prop: String,
        list: Vec<Lit>,
        negated: bool,
    },
    Between {
        prop: String,
        low: Num,
        high: Num,
        negated: bool,
    },
    IsNull {
        prop: String,
        negated: bool,
    },
}

/// A value met while evaluating, borrowed from the message or the tree.
#[derive(Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    Num(Num),
    Bool(bool),
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn as_num(v: Val<'_>) -> Option<Num> {
    match v {
        Val::Num(n) => Some(n),
        Val::Str(s) => Num::parse(s),
        Val::Bool(_) => None,
    }
}

/// `=` of two values; `None` = unknown (type mismatch).
fn equal(l: Val<'_>, r: Val<'_>) -> Option<bool> {
    match (l, r) {
        (Val::Str(a), Val::Str(b)) => Some(a == b),
        (Val::Bool(a), Val::Bool(b)) => Some(a == b),
        (Val::Bool(b), Val::Str(s)) | (Val::Str(s), Val::Bool(b)) => parse_bool(s).map(|v| v == b),
        (Val::Num(_), _) | (_, Val::Num(_)) => Some(as_num(l)?.cmp(as_num(r)?)? == Ordering::Equal),
    }
}

fn lit_val(l: &Lit) -> Val<'_> {
    match l {
        Lit::Str(s) => Val::Str(s),
        Lit::Num(n) => Val::Num(*n),
        Lit::Bool(b) => Val::Bool(*b),
    }
}

fn and(a: Option<bool>, b: impl FnOnce() -> Option<bool>) -> Option<bool> {
    match a {
        Some(false) => Some(false),
        Some(true) => b(),
        None => match b() {
            Some(false) => Some(false),
            _ => None,
        },
    }
}

fn or(a: Option<bool>, b: impl FnOnce() -> Option<bool>) -> Option<bool> {
    match a {
        Some(true) => Some(true),
        Some(false) => b(),
        None => match b() {
            Some(true) => Some(true),
            _ => None,
        },
    }
}

impl Node {
    /// Three-valued: `None` is unknown.
    fn eval<'s, 'a: 's, F: Fn(&str) -> Option<&'a str>>(&'s self, p: &F) -> Option<bool> {
        let operand = |o: &'s Operand| -> Option<Val<'s>> {
            match o {
                Operand::Prop(name) => p(name).map(Val::Str),
                Operand::Lit(l) => Some(lit_val(l)),
            }
        };
        match self {
            Node::Const(b) => Some(*b),
            Node::And(a, b) => and(a.eval(p), || b.eval(p)),
            Node::Or(a, b) => or(a.eval(p), || b.eval(p)),
            Node::Not(a) => a.eval(p).map(|v| !v),
            Node::Cmp(op, l, r) => {
                let (l, r) = (operand(l)?, operand(r)?);
                match op {
                    Cmp::Eq => equal(l, r),
                    Cmp::Ne => equal(l, r).map(|e| !e),
                    _ => {
                        let o = as_num(l)?.cmp(as_num(r)?)?;
                        Some(match op {
                            Cmp::Lt => o == Ordering::Less,
                            Cmp::Le => o != Ordering::Greater,
                            Cmp::Gt => o == Ordering::Greater,
                            _ => o != Ordering::Less,
                        })
                    }
                }
            }
            Node::In {
                prop,
                list,
                negated,
            } => {
                let v = Val::Str(p(prop)?);
                let mut unknown = false;
                for l in list {
                    match equal(v, lit_val(l)) {
                        Some(true) => return Some(!negated),
                        Some(false) => {}
                        None => unknown = true,
                    }
                }
                (!unknown).then_some(*negated)
            }
            Node::Between {
                prop,
                low,
                high,
                negated,
            } => {
                let v = Num::parse(p(prop)?)?;
                let inside = v.cmp(*low)? != Ordering::Less && v.cmp(*high)? != Ordering::Greater;
                Some(inside != *negated)
            }
            Node::IsNull { prop, negated } => Some(p(prop).is_none() != *negated),
        }
    }
}

impl SqlExpr {
    /// Parses and checks `expr` (see the module docs).
    pub fn compile(expr: &str) -> Result<SqlExpr, FilterError> {
        let syntax = |reason: String| FilterError::Syntax {
            expr: expr.to_string(),
            reason,
        };
        if expr.trim().is_empty() {
            return Err(syntax("empty expression".into()));
        }
        if expr.len() > MAX_SQL_LEN {
            return Err(syntax(format!("longer than {MAX_SQL_LEN} bytes")));
        }
        let dialect = GenericDialect {};
        let mut parser = Parser::new(&dialect)
            .try_with_sql(expr)
            .map_err(|e| syntax(one_line(&e.to_string())))?;
        let parsed = parser
            .parse_expr()
            .map_err(|e| syntax(one_line(&e.to_string())))?;
        let next = parser.peek_token();
        if next.token != Token::EOF {
            return Err(syntax(format!(
                "unexpected {} after the expression{}",
                next.token, next.span.start
            )));
        }
        let c = Compiler { expr };
        let root = c.condition(&parsed, 0)?;
        Ok(SqlExpr {
            expr: expr.trim().to_string(),
            root,
        })
    }

    /// The expression.
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// Whether a message with these properties matches: the expression is
    /// true (unknown is no match).
    pub fn matches<'a>(&self, property: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.root.eval(&property) == Some(true)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Compiler<'e> {
    expr: &'e str,
}

impl Compiler<'_> {
    /// Compiling, evaluating and dropping the tree recurse once per
    /// level: a bound keeps a 4 KiB chain of `AND`s from exhausting a
    /// thread's stack.
    fn check_depth(&self, depth: usize) -> Result<(), FilterError> {
        if depth >= MAX_SQL_DEPTH {
            return self.refuse(format!("nesting deeper than {MAX_SQL_DEPTH} levels"));
        }
        Ok(())
    }

    fn refuse<T>(&self, what: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError::NotAllowed {
            expr: self.expr.to_string(),
            what: what.into(),
        })
    }

    /// An expression that must be true / false / unknown.
    fn condition(&self, e: &Expr, depth: usize) -> Result<Node, FilterError> {
        self.check_depth(depth)?;
        let depth = depth + 1;
        match e {
            Expr::Nested(inner) => self.condition(inner, depth),
            Expr::Value(v) => match &v.value {
                Value::Boolean(b) => Ok(Node::Const(*b)),
                _ => self.refuse(format!("the literal {v} as a condition")),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Node::Not(Box::new(self.condition(expr, depth)?))),
            Expr::BinaryOp { left, op, right } => {
                let cmp = match op {
                    BinaryOperator::And => {
                        return Ok(Node::And(
                            Box::new(self.condition(left, depth)?),
                            Box::new(self.condition(right, depth)?),
                        ));
                    }
                    BinaryOperator::Or => {
                        return Ok(Node::Or(
                            Box::new(self.condition(left, depth)?),
                            Box::new(self.condition(right, depth)?),
                        ));
                    }
                    BinaryOperator::Eq => Cmp::Eq,
                    BinaryOperator::NotEq => Cmp::Ne,
                    BinaryOperator::Lt => Cmp::Lt,
                    BinaryOperator::LtEq => Cmp::Le,
                    BinaryOperator::Gt => Cmp::Gt,
                    BinaryOperator::GtEq => Cmp::Ge,
                    other => return self.refuse(format!("the operator {other}")),
                };
                let (l, r) = (self.operand(left, depth)?, self.operand(right, depth)?);
                if !matches!(cmp, Cmp::Eq | Cmp::Ne) {
                    for o in [&l, &r] {
                        if let Operand::Lit(Lit::Str(_) | Lit::Bool(_)) = o {
                            return self.refuse(format!(
                                "comparing a string or boolean with {op} (numbers only)"
                            ));
                        }
                    }
                }
                Ok(Node::Cmp(cmp, l, r))
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => Ok(Node::IsNull {
                prop: self.property(inner, depth)?,
                negated: matches!(e, Expr::IsNotNull(_)),
            }),
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated,
                global: false,
            } => {
                let prop = self.property(expr, depth)?;
                let list = list
                    .iter()
                    .map(|l| match self.operand(l, depth)? {
                        Operand::Lit(l @ (Lit::Str(_) | Lit::Num(_))) => Ok(l),
                        _ => self.refuse(format!(
                            "{l} in an IN list (string or number literals only)"
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Node::In {
                    prop,
                    list,
                    negated: *negated,
                })
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let prop = self.property(expr, depth)?;
                let bound = |b: &Expr| match self.operand(b, depth)? {
                    Operand::Lit(Lit::Num(n)) => Ok(n),
                    _ => self.refuse(format!("{b} as a BETWEEN bound (number literals only)")),
                };
                Ok(Node::Between {
                    prop,
                    low: bound(low)?,
                    high: bound(high)?,
                    negated: *negated,
                })
            }
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => self.refuse(format!(
                "the property {e} alone as a condition (compare it)"
            )),
            other => self.refuse(describe(other)),
        }
    }

    fn property(&self, e: &Expr, depth: usize) -> Result<String, FilterError> {
        match self.operand(e, depth)? {
            Operand::Prop(p) => Ok(p),
            Operand::Lit(_) => self.refuse(format!("the literal {e} where a property is expected")),
        }
    }

    fn operand(&self, e: &Expr, depth: usize) -> Result<Operand, FilterError> {
        self.check_depth(depth)?;
        let depth = depth + 1;
        match e {
            Expr::Nested(inner) => self.operand(inner, depth),
            Expr::Identifier(id) => Ok(Operand::Prop(id.value.clone())),
            Expr::CompoundIdentifier(ids) => Ok(Operand::Prop(
                ids.iter()
                    .map(|i| i.value.as_str())
                    .collect::<Vec<_>>()
                    .join("."),
            )),
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) => Ok(Operand::Lit(Lit::Str(s.clone()))),
                Value::Boolean(b) => Ok(Operand::Lit(Lit::Bool(*b))),
                Value::Number(n, _) => match Num::parse(n) {
                    Some(n) => Ok(Operand::Lit(Lit::Num(n))),
                    None => self.refuse(format!("the number {n}")),
                },
                Value::Null => self.refuse("comparing with NULL (use IS NULL / IS NOT NULL)"),
                other => self.refuse(format!("the literal {other}")),
            },
            Expr::UnaryOp {
                op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
                expr,
            } => match self.operand(expr, depth)? {
                Operand::Lit(Lit::Num(n)) => {
                    Ok(Operand::Lit(Lit::Num(if *op == UnaryOperator::Minus {
                        n.neg()
                    } else {
                        n
                    })))
                }
                _ => self.refuse(format!("the sign {op} before {expr} (numbers only)")),
            },
            other => self.refuse(describe(other)),
        }
    }
}

/// How a refused node is named in the error.
fn describe(e: &Expr) -> String {
    match e {
        Expr::Function(f) => format!("the function {}()", f.name),
        Expr::Subquery(_) | Expr::Exists { .. } => "a subquery".into(),
        Expr::In {
            target: InTarget::Subquery(_),
            ..
        } => "a subquery".into(),
        Expr::In { target, .. } => format!("IN {target}"),
        Expr::BinaryOp { op, .. } => format!("the operator {op}"),
        Expr::UnaryOp { op, .. } => format!("the operator {op}"),
        Expr::Like { .. } | Expr::ILike { .. } => "LIKE".into(),
        Expr::Case { .. } => "CASE".into(),
        Expr::Cast { .. } => "CAST".into(),
        other => format!("`{other}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props<'a>(kv: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |k| kv.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    fn m(expr: &str, kv: &[(&str, &str)]) -> bool {
        SqlExpr::compile(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .matches(props(kv))
    }

    fn refused(expr: &str) -> String {
        let e = SqlExpr::compile(expr)
            .expect_err(&format!("{expr} must be refused"))
            .to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.contains(expr.trim()) || expr.len() > 60,
            "{e} quotes the expression"
        );
        e
    }

    #[test]
    fn tags_one_grammar() {
        let all = TagExpr::parse(" * ").unwrap();
        assert!(all.is_all() && all.matches(None) && all.matches(Some("x")));
        assert_eq!(all.codes(), None);
        let f = TagExpr::parse(" A || B ").unwrap();
        assert!(f.matches(Some("A")) && f.matches(Some("B")));
        assert!(!f.matches(Some("C")) && !f.matches(None));
        assert_eq!(f.tags().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(f.expression(), "A || B");
        assert!(f.codes().unwrap().contains(&tag_hash("A")));
        assert_eq!(f.codes().unwrap().len(), 2);
        assert!(TagExpr::parse("A || *").unwrap().is_all());
        assert!(TagExpr::parse("").unwrap().is_all());
        assert_eq!(
            TagExpr::parse("||").unwrap_err(),
            FilterError::NoTag("||".into())
        );
        // Through Filter: a tag filter reads the TAGS property.
        let f = Filter::compile(Some("A"), Some("tag")).unwrap();
        assert!(f.matches(props(&[("TAGS", "A")])));
        assert!(!f.matches(props(&[("TAGS", "B")])));
        assert!(Filter::compile(None, None).unwrap().is_all());
        assert!(matches!(
            Filter::compile(Some("a"), Some("XPATH")),
            Err(FilterError::UnknownType(_))
        ));
        let s = Filter::compile(Some("a > 1"), Some("sql92")).unwrap();
        assert_eq!((s.expression_type(), s.tag_codes()), (TYPE_SQL92, None));
    }

    #[test]
    fn comparisons() {
        let a5 = [("a", "5")];
        for (expr, want) in [
            ("a = 5", true),
            ("a = 5.0", true),
            ("a <> 5", false),
            ("a != 4", true),
            ("a < 6", true),
            ("a < 5", false),
            ("a <= 5", true),
            ("a > 4", true),
            ("a > 5", false),
            ("a >= 5", true),
            ("a > -1", true),
            ("a < 5.5", true),
            ("6 > a", true),
            ("a > 4.99e0", true),
        ] {
            assert_eq!(m(expr, &a5), want, "{expr}");
        }
        // Strings: = and <> only.
        let s = [("s", "abc")];
        assert!(m("s = 'abc'", &s));
        assert!(!m("s = 'abd'", &s));
        assert!(m("s <> 'abd'", &s));
        assert!(m("s = 'it''s'", &[("s", "it's")]));
        // Booleans.
        assert!(m("b = TRUE", &[("b", "true")]));
        assert!(m("b = true", &[("b", "TRUE")]));
        assert!(!m("b = FALSE", &[("b", "true")]));
        assert!(m("b <> FALSE", &[("b", "true")]));
        // Two properties.
        assert!(m("a = b", &[("a", "x"), ("b", "x")]));
        assert!(m("a < b", &[("a", "2"), ("b", "10")]));
        // Long against double, big longs exact.
        assert!(m("n = 9007199254740993", &[("n", "9007199254740993")]));
        assert!(!m("n = 9007199254740992", &[("n", "9007199254740993")]));
        // System properties.
        assert!(m("TAGS = 'A'", &[("TAGS", "A")]));
        assert!(m("\"my-prop\" = 'x'", &[("my-prop", "x")]));
        assert!(m("a.b = 1", &[("a.b", "1")]));
    }

    #[test]
    fn logic_in_between_null() {
        let kv = [("a", "3"), ("b", "x"), ("c", "")];
        for (expr, want) in [
            ("a = 3 AND b = 'x'", true),
            ("a = 3 AND b = 'y'", false),
            ("a = 4 OR b = 'x'", true),
            ("a = 4 OR b = 'y'", false),
            ("NOT a = 4", true),
            ("NOT (a = 3 AND b = 'x')", false),
            ("(a = 4 OR a = 3) AND NOT b = 'y'", true),
            ("TRUE", true),
            ("FALSE OR a = 3", true),
            ("b IN ('x', 'y')", true),
            ("b IN ('y')", false),
            ("b NOT IN ('y', 'z')", true),
            ("b NOT IN ('x')", false),
            ("a IN (1, 3)", true),
            ("a BETWEEN 1 AND 3", true),
            ("a BETWEEN 4 AND 9", false),
            ("a NOT BETWEEN 4 AND 9", true),
            ("a NOT BETWEEN 1 AND 3", false),
            ("a BETWEEN -1.5 AND 3.0", true),
            ("c IS NULL", false),
            ("c IS NOT NULL", true),
            ("z IS NULL", true),
            ("z IS NOT NULL", false),
            (
                "a > 5 OR b IN ('x','y') AND c IS NOT NULL AND a BETWEEN 1 AND 3",
                true,
            ),
        ] {
            assert_eq!(m(expr, &kv), want, "{expr}");
        }
    }

    #[test]
    fn missing_property_is_unknown_hence_no_match() {
        let none: [(&str, &str); 0] = [];
        for expr in [
            "z = 1",
            "z <> 1",
            "z = 'x'",
            "z <> 'x'",
            "z > 1",
            "NOT z > 1",
            "NOT z = 'x'",
            "z IN ('x')",
            "z NOT IN ('x')",
            "z BETWEEN 1 AND 2",
            "z NOT BETWEEN 1 AND 2",
            "z = 1 AND TRUE",
            "z = 1 OR FALSE",
            "NOT (z = 1 OR FALSE)",
        ] {
            assert!(!m(expr, &none), "{expr} must not match");
        }
        // Unknown OR true is true; unknown AND false is false, NOT of it true.
        assert!(m("z = 1 OR TRUE", &none));
        assert!(m("NOT (z = 1 AND FALSE)", &none));
    }

    #[test]
    fn type_mismatch_is_no_match_not_an_error() {
        let kv = [("a", "abc"), ("b", "yes"), ("e", ""), ("i", "inf")];
        for expr in [
            "a > 1",
            "a = 1",
            "a <> 1",
            "NOT a > 1",
            "NOT a = 1",
            "a BETWEEN 1 AND 2",
            "a NOT BETWEEN 1 AND 2",
            "a IN (1, 2)",
            "a NOT IN (1, 2)",
            "b = TRUE",
            "b <> TRUE",
            "e = 0",
            "i > 1",
        ] {
            assert!(!m(expr, &kv), "{expr} must not match");
        }
        // A list with one comparable element still decides.
        assert!(m("a IN (1, 'abc')", &kv));
    }

    #[test]
    fn trailing_input_refused() {
        for expr in ["a > 5; DROP TABLE t", "a > 5 b", "a = 1)", "a > 5;"] {
            let e = refused(expr);
            assert!(e.contains("after the expression"), "{e}");
        }
    }

    #[test]
    fn disallowed_nodes_refused_by_name() {
        for (expr, names) in [
            ("f(a) = 1", "function f()"),
            ("a + 1 > 2", "operator +"),
            ("a * 2 = 4", "operator *"),
            ("a LIKE 'x%'", "LIKE"),
            ("a IN (SELECT b FROM t)", "subquery"),
            ("EXISTS (SELECT 1)", "subquery"),
            ("CASE WHEN a = 1 THEN TRUE END", "CASE"),
            ("a = NULL", "IS NULL"),
            ("a > 'x'", "numbers only"),
            ("a BETWEEN 'a' AND 'b'", "BETWEEN bound"),
            ("a IN (b)", "IN list"),
            ("a", "alone"),
            ("5", "as a condition"),
            ("'x' IS NULL", "property is expected"),
            ("a IS TRUE", "IS TRUE"),
            ("a || 'x' = 'y'", "operator ||"),
        ] {
            let e = refused(expr);
            assert!(e.contains("not allowed"), "{e}");
            assert!(e.contains(names), "{expr}: {e} names {names}");
        }
        for expr in ["", "   ", "a >", "a = 'unterminated", "a = = 1", "(a = 1"] {
            let e = SqlExpr::compile(expr).unwrap_err();
            assert!(matches!(e, FilterError::Syntax { .. }), "{expr}: {e}");
            assert_eq!(e.to_string().lines().count(), 1);
        }
        let long = format!("a = '{}'", "x".repeat(MAX_SQL_LEN));
        assert!(SqlExpr::compile(&long).is_err());
        // A chain of AND (a left-deep tree: the parser loops, our
        // compiler and evaluator recurse) compiles up to the depth bound;
        // the longest one that fits in MAX_SQL_LEN is refused, no crash.
        let chain = |n: usize| format!("{}a = 1", "TRUE AND ".repeat(n));
        let ok = chain(MAX_SQL_DEPTH - 3);
        assert!(m(&ok, &[("a", "1")]) && !m(&ok, &[("a", "2")]));
        let long = chain((MAX_SQL_LEN - 5) / 9);
        assert!(long.len() <= MAX_SQL_LEN);
        let e = SqlExpr::compile(&long).unwrap_err().to_string();
        assert!(e.contains("nesting deeper than"), "{e}");
        let ors = format!("{}a = 1", "a = 1 OR ".repeat(400));
        assert!(SqlExpr::compile(&ors).is_err());
        // Deep nesting is refused by the parser's depth limit, not a crash.
        let deep = format!("{}a = 1{}", "(".repeat(500), ")".repeat(500));
        assert!(SqlExpr::compile(&deep).is_err());
    }
}
