//! The small expression language of derived columns, cohorts and derived labels, evaluated
//! by each participant on its own rows (nothing of it leaves the participant).
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | compare
//! compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
//! sum     := product (("+" | "-") product)*
//! product := unary (("*" | "/") unary)*
//! unary   := "-" unary | atom
//! atom    := number | column | column ("==" | "!=") "text" | "is_missing" "(" column ")"
//!          | "(" expr ")"
//! ```
//!
//! A column is a numeric or boolean feature of the schema (a name, or a name in backquotes
//! when it holds spaces or operators: `` `monthly avg` ``); `Home == "rent"` reads the
//! categorical feature `Home`'s one-hot column `Home=rent` (a category the schema does not
//! declare is refused). Numbers are `f64`; arithmetic on a missing value (`NaN`) is missing,
//! and so is a division by zero.
//! Conditions have three values: a comparison with a missing value is *unknown*, `and`/`or`/
//! `not` follow Kleene's logic (`false and unknown` is false), and `is_missing(x)` is never
//! unknown. A cohort keeps the rows whose condition is true; a derived label is an error on a
//! row where it is unknown; a derived column is missing where its value is not finite.
//!
//! An expression is parsed and type-checked once, against the schema's columns, into a
//! [`Compiled`] form whose column references are indices; errors name the 1-based character
//! position in the expression.

use std::fmt;

/// What an expression computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Number,
    Condition,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Number => "a number",
            Type::Condition => "a condition",
        })
    }
}

/// An expression refused: where (1-based character position) and why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{what} \"{text}\", at character {position}: {problem}")]
pub struct ExprError {
    /// What the expression is for, e.g. `derive.assets` or `cohort`.
    pub what: String,
    pub text: String,
    pub position: usize,
    pub problem: Box<Problem>,
}

/// Why an expression is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("unexpected {found}; expected {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
    },
    #[error("'{0}' is not a number")]
    BadNumber(String),
    #[error("unterminated {0}")]
    Unterminated(&'static str),
    #[error("unknown column '{name}' (columns: {available})")]
    UnknownColumn { name: String, available: String },
    #[error("'{column}' has no category \"{category}\" (categories: {available})")]
    UnknownCategory {
        column: String,
        category: String,
        available: String,
    },
    #[error("'{0}' is categorical: compare it with a category, e.g. {0} == \"…\"")]
    CategoricalAsNumber(String),
    #[error("{op} needs {expected}, got {got}")]
    Type {
        op: &'static str,
        expected: Type,
        got: Type,
    },
    #[error("the expression is {got}; {what} needs {expected}")]
    Result {
        what: &'static str,
        expected: Type,
        got: Type,
    },
    #[error("the expression is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Nesting bound (parser recursion and evaluation depth).
pub const MAX_DEPTH: usize = 64;

/// A column an expression may read: an encoded column of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// The column's name in the table (`Income`, `Home=rent`).
    pub name: String,
    /// The schema feature it comes from (`Home` for `Home=rent`).
    pub feature: String,
    /// Its category, for a categorical feature's one-hot column.
    pub category: Option<String>,
}

impl Column {
    /// Columns from a table's encoded names: `feature=category` is a one-hot column.
    pub fn from_encoded(names: &[String]) -> Vec<Column> {
        names
            .iter()
            .map(|n| match n.split_once('=') {
                Some((f, c)) => Column {
                    name: n.clone(),
                    feature: f.to_string(),
                    category: Some(c.to_string()),
                },
                None => Column {
                    name: n.clone(),
                    feature: n.clone(),
                    category: None,
                },
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// A checked expression: column references are indices into the row it is evaluated on.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Number(f64),
    Column(usize),
    Neg(Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    Compare(Cmp, Box<Node>, Box<Node>),
    /// A one-hot column equals 1 (`negate`: does not).
    IsCategory {
        column: usize,
        negate: bool,
    },
    IsMissing(usize),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
}

/// Kleene's three-valued truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    fn of(b: bool) -> Truth {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }
}

/// A parsed, type-checked expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    node: Node,
    ty: Type,
    /// Indices of the columns it reads, ascending.
    reads: Vec<usize>,
}

impl Compiled {
    /// Parses `text` (what it is for: `what`, e.g. `cohort`) against `columns` and checks that
    /// it computes `expected`.
    pub fn new(
        what: &str,
        text: &str,
        columns: &[Column],
        expected: Type,
    ) -> Result<Compiled, ExprError> {
        let err = |position: usize, problem: Problem| ExprError {
            what: what.to_string(),
            text: text.to_string(),
            position,
            problem: Box::new(problem),
        };
        let tokens = lex(text).map_err(|(p, e)| err(p, e))?;
        let mut parser = Parser {
            tokens: &tokens,
            at: 0,
            columns,
            depth: 0,
            end: text.chars().count() + 1,
        };
        let (node, ty) = parser.expr().map_err(|(p, e)| err(p, e))?;
        if let Some(t) = tokens.get(parser.at) {
            return Err(err(
                t.pos,
                Problem::Unexpected {
                    found: t.kind.describe(),
                    expected: "an operator or the end",
                },
            ));
        }
        if ty != expected {
            return Err(err(
                1,
                Problem::Result {
                    what: if expected == Type::Number {
                        "a derived column"
                    } else {
                        "a condition (cohort or label)"
                    },
                    expected,
                    got: ty,
                },
            ));
        }
        let mut reads = Vec::new();
        collect_reads(&node, &mut reads);
        reads.sort_unstable();
        reads.dedup();
        Ok(Compiled { node, ty, reads })
    }

    pub fn ty(&self) -> Type {
        self.ty
    }

    /// Indices of the columns the expression reads.
    pub fn reads(&self) -> &[usize] {
        &self.reads
    }

    /// The value of a number expression on `row` (`NaN` = missing).
    pub fn number(&self, row: &[f32]) -> f64 {
        number(&self.node, row)
    }

    /// The truth of a condition on `row`.
    pub fn truth(&self, row: &[f32]) -> Truth {
        truth(&self.node, row)
    }
}

impl Compiled {
    /// The expression in SQL (PostgreSQL and SQL-92 apart from nothing exotic): `column(c)`
    /// is the SQL of column `c`'s value as `DOUBLE PRECISION`, NULL when missing. Numbers are
    /// `DOUBLE PRECISION` with NULL for missing, as `NaN` is here; a division by zero is NULL
    /// as it is missing here (so `a / 0 > 1` is unknown in both); conditions are SQL's
    /// three-valued booleans, whose `AND`/`OR`/`NOT` are Kleene's logic as here, so `WHERE`
    /// keeps exactly the rows whose condition is true.
    pub fn to_sql(&self, column: &dyn Fn(usize) -> String) -> String {
        sql(&self.node, column)
    }
}

fn sql(n: &Node, col: &dyn Fn(usize) -> String) -> String {
    match n {
        Node::Number(v) => format!("CAST({v:?} AS DOUBLE PRECISION)"),
        Node::Column(c) => col(*c),
        Node::Neg(a) => format!("(-{})", sql(a, col)),
        Node::Arith(Arith::Div, a, b) => {
            format!("({} / NULLIF({}, 0))", sql(a, col), sql(b, col))
        }
        Node::Arith(op, a, b) => {
            let op = match op {
                Arith::Add => "+",
                Arith::Sub => "-",
                _ => "*",
            };
            format!("({} {op} {})", sql(a, col), sql(b, col))
        }
        Node::Compare(op, a, b) => {
            let op = match op {
                Cmp::Lt => "<",
                Cmp::Le => "<=",
                Cmp::Gt => ">",
                Cmp::Ge => ">=",
                Cmp::Eq => "=",
                Cmp::Ne => "<>",
            };
            format!("({} {op} {})", sql(a, col), sql(b, col))
        }
        Node::IsCategory { column, negate } => {
            format!("({} {} 1)", col(*column), if *negate { "<>" } else { "=" })
        }
        Node::IsMissing(c) => format!("({} IS NULL)", col(*c)),
        Node::Not(a) => format!("(NOT {})", sql(a, col)),
        Node::And(a, b) => format!("({} AND {})", sql(a, col), sql(b, col)),
        Node::Or(a, b) => format!("({} OR {})", sql(a, col), sql(b, col)),
    }
}

fn collect_reads(n: &Node, out: &mut Vec<usize>) {
    match n {
        Node::Number(_) => {}
        Node::Column(c) | Node::IsMissing(c) | Node::IsCategory { column: c, .. } => out.push(*c),
        Node::Neg(a) | Node::Not(a) => collect_reads(a, out),
        Node::Arith(_, a, b) | Node::Compare(_, a, b) | Node::And(a, b) | Node::Or(a, b) => {
            collect_reads(a, out);
            collect_reads(b, out);
        }
    }
}

/// A value of `row` (columns were checked against the row's width at compile time; a shorter
/// row reads as missing).
fn cell(row: &[f32], c: usize) -> f64 {
    row.get(c).map_or(f64::NAN, |&v| f64::from(v))
}

fn number(n: &Node, row: &[f32]) -> f64 {
    match n {
        Node::Number(v) => *v,
        Node::Column(c) => cell(row, *c),
        Node::Neg(a) => -number(a, row),
        Node::Arith(op, a, b) => {
            let (a, b) = (number(a, row), number(b, row));
            match op {
                Arith::Add => a + b,
                Arith::Sub => a - b,
                Arith::Mul => a * b,
                // Missing, as SQL's `a / NULLIF(b, 0)` is NULL (not ±inf, which compares).
                Arith::Div if b == 0.0 => f64::NAN,
                Arith::Div => a / b,
            }
        }
        // Conditions used as numbers do not type-check; read as missing.
        _ => f64::NAN,
    }
}

fn truth(n: &Node, row: &[f32]) -> Truth {
    match n {
        Node::Compare(op, a, b) => {
            let (a, b) = (number(a, row), number(b, row));
            if a.is_nan() || b.is_nan() {
                return Truth::Unknown;
            }
            Truth::of(match op {
                Cmp::Lt => a < b,
                Cmp::Le => a <= b,
                Cmp::Gt => a > b,
                Cmp::Ge => a >= b,
                Cmp::Eq => a == b,
                Cmp::Ne => a != b,
            })
        }
        Node::IsCategory { column, negate } => Truth::of((cell(row, *column) == 1.0) != *negate),
        Node::IsMissing(c) => Truth::of(cell(row, *c).is_nan()),
        Node::Not(a) => match truth(a, row) {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        },
        Node::And(a, b) => match (truth(a, row), truth(b, row)) {
            (Truth::False, _) | (_, Truth::False) => Truth::False,
            (Truth::True, Truth::True) => Truth::True,
            _ => Truth::Unknown,
        },
        Node::Or(a, b) => match (truth(a, row), truth(b, row)) {
            (Truth::True, _) | (_, Truth::True) => Truth::True,
            (Truth::False, Truth::False) => Truth::False,
            _ => Truth::Unknown,
        },
        // Numbers used as conditions do not type-check.
        _ => Truth::Unknown,
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Number(f64),
    Ident(String),
    Text(String),
    Op(&'static str),
    LParen,
    RParen,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Number(v) => format!("number {v}"),
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Text(s) => format!("text \"{s}\""),
            Tok::Op(o) => format!("'{o}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    kind: Tok,
    /// 1-based character position.
    pos: usize,
}

type Failure = (usize, Problem);

fn lex(text: &str) -> Result<Vec<Token>, Failure> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars.iter().skip(i).take(2).collect();
        let op = ["<=", ">=", "==", "!="]
            .into_iter()
            .find(|o| *o == two)
            .or_else(|| {
                ["<", ">", "+", "-", "*", "/"]
                    .into_iter()
                    .find(|o| o.starts_with(c))
            });
        if let Some(o) = op {
            out.push(Token {
                kind: Tok::Op(o),
                pos,
            });
            i += o.len();
            continue;
        }
        match c {
            '(' | ')' => {
                out.push(Token {
                    kind: if c == '(' { Tok::LParen } else { Tok::RParen },
                    pos,
                });
                i += 1;
            }
            '"' | '`' => {
                let end = chars.iter().skip(i + 1).position(|&d| d == c).ok_or((
                    pos,
                    Problem::Unterminated(if c == '"' { "text" } else { "quoted name" }),
                ))?;
                let s: String = chars.iter().skip(i + 1).take(end).collect();
                out.push(Token {
                    kind: if c == '"' {
                        Tok::Text(s)
                    } else {
                        Tok::Ident(s)
                    },
                    pos,
                });
                i += end + 2;
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Digits, '.', '_' separators and an exponent (`1e-5`).
                let mut len = 0;
                while let Some(&d) = chars.get(i + len) {
                    let exponent_sign = (d == '-' || d == '+')
                        && len > 0
                        && matches!(chars.get(i + len - 1), Some('e' | 'E'));
                    if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign {
                        len += 1;
                    } else {
                        break;
                    }
                }
                let s: String = chars.iter().skip(i).take(len).collect();
                let v: f64 = s
                    .replace('_', "")
                    .parse()
                    .map_err(|_| (pos, Problem::BadNumber(s.clone())))?;
                if !v.is_finite() {
                    return Err((pos, Problem::BadNumber(s)));
                }
                out.push(Token {
                    kind: Tok::Number(v),
                    pos,
                });
                i += len;
            }
            c if c.is_alphabetic() || c == '_' => {
                let len = chars
                    .iter()
                    .skip(i)
                    .take_while(|d| d.is_alphanumeric() || **d == '_' || **d == '.')
                    .count();
                let s: String = chars.iter().skip(i).take(len).collect();
                out.push(Token {
                    kind: Tok::Ident(s),
                    pos,
                });
                i += len;
            }
            other => {
                return Err((
                    pos,
                    Problem::Unexpected {
                        found: format!("'{other}'"),
                        expected: "a number, a column, an operator or a parenthesis",
                    },
                ))
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Parser and type checker
// ---------------------------------------------------------------------------------------------

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    columns: &'a [Column],
    depth: usize,
    /// Position reported for "end of expression".
    end: usize,
}

type Parsed = Result<(Node, Type), Failure>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at).map(|t| &t.kind)
    }

    fn pos(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |t| t.pos)
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(k))
    }

    fn unexpected(&self, expected: &'static str) -> Failure {
        (
            self.pos(),
            Problem::Unexpected {
                found: self.peek().map_or("the end".into(), Tok::describe),
                expected,
            },
        )
    }

    fn want(&self, op: &'static str, pos: usize, got: Type, expected: Type) -> Result<(), Failure> {
        if got == expected {
            Ok(())
        } else {
            Err((pos, Problem::Type { op, expected, got }))
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Failure>) -> Result<T, Failure> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err((self.pos(), Problem::TooDeep));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn expr(&mut self) -> Parsed {
        self.nested(|p| p.or())
    }

    fn or(&mut self) -> Parsed {
        let pos = self.pos();
        let (mut node, mut ty) = self.and()?;
        while self.keyword("or") {
            self.want("'or'", pos, ty, Type::Condition)?;
            self.at += 1;
            let rpos = self.pos();
            let (rhs, rty) = self.and()?;
            self.want("'or'", rpos, rty, Type::Condition)?;
            node = Node::Or(Box::new(node), Box::new(rhs));
            ty = Type::Condition;
        }
        Ok((node, ty))
    }

    fn and(&mut self) -> Parsed {
        let pos = self.pos();
        let (mut node, ty) = self.not()?;
        let mut ty = ty;
        while self.keyword("and") {
            self.want("'and'", pos, ty, Type::Condition)?;
            self.at += 1;
            let rpos = self.pos();
            let (rhs, rty) = self.not()?;
            self.want("'and'", rpos, rty, Type::Condition)?;
            node = Node::And(Box::new(node), Box::new(rhs));
            ty = Type::Condition;
        }
        Ok((node, ty))
    }

    fn not(&mut self) -> Parsed {
        if self.keyword("not") {
            self.at += 1;
            let pos = self.pos();
            let (a, ty) = self.nested(|p| p.not())?;
            self.want("'not'", pos, ty, Type::Condition)?;
            return Ok((Node::Not(Box::new(a)), Type::Condition));
        }
        self.compare()
    }

    fn compare(&mut self) -> Parsed {
        let pos = self.pos();
        // `column == "category"` / `column != "category"`.
        if let (Some(Tok::Ident(name)), Some(Tok::Op(op @ ("==" | "!="))), Some(Tok::Text(cat))) = (
            self.tokens.get(self.at).map(|t| &t.kind),
            self.tokens.get(self.at + 1).map(|t| &t.kind),
            self.tokens.get(self.at + 2).map(|t| &t.kind),
        ) {
            let column = self.category_column(name, cat, pos)?;
            self.at += 3;
            return Ok((
                Node::IsCategory {
                    column,
                    negate: *op == "!=",
                },
                Type::Condition,
            ));
        }
        let (lhs, lty) = self.sum()?;
        let op = match self.peek() {
            Some(Tok::Op("<")) => Cmp::Lt,
            Some(Tok::Op("<=")) => Cmp::Le,
            Some(Tok::Op(">")) => Cmp::Gt,
            Some(Tok::Op(">=")) => Cmp::Ge,
            Some(Tok::Op("==")) => Cmp::Eq,
            Some(Tok::Op("!=")) => Cmp::Ne,
            _ => return Ok((lhs, lty)),
        };
        self.want("a comparison", pos, lty, Type::Number)?;
        self.at += 1;
        let rpos = self.pos();
        let (rhs, rty) = self.sum()?;
        self.want("a comparison", rpos, rty, Type::Number)?;
        Ok((
            Node::Compare(op, Box::new(lhs), Box::new(rhs)),
            Type::Condition,
        ))
    }

    fn sum(&mut self) -> Parsed {
        let pos = self.pos();
        let (mut node, ty) = self.product()?;
        let mut first = Some(ty);
        loop {
            let op = match self.peek() {
                Some(Tok::Op("+")) => Arith::Add,
                Some(Tok::Op("-")) => Arith::Sub,
                _ => break,
            };
            if let Some(t) = first.take() {
                self.want("arithmetic", pos, t, Type::Number)?;
            }
            self.at += 1;
            let rpos = self.pos();
            let (rhs, rty) = self.product()?;
            self.want("arithmetic", rpos, rty, Type::Number)?;
            node = Node::Arith(op, Box::new(node), Box::new(rhs));
        }
        Ok((node, first.unwrap_or(Type::Number)))
    }

    fn product(&mut self) -> Parsed {
        let pos = self.pos();
        let (mut node, ty) = self.unary()?;
        let mut first = Some(ty);
        loop {
            let op = match self.peek() {
                Some(Tok::Op("*")) => Arith::Mul,
                Some(Tok::Op("/")) => Arith::Div,
                _ => break,
            };
            if let Some(t) = first.take() {
                self.want("arithmetic", pos, t, Type::Number)?;
            }
            self.at += 1;
            let rpos = self.pos();
            let (rhs, rty) = self.unary()?;
            self.want("arithmetic", rpos, rty, Type::Number)?;
            node = Node::Arith(op, Box::new(node), Box::new(rhs));
        }
        Ok((node, first.unwrap_or(Type::Number)))
    }

    fn unary(&mut self) -> Parsed {
        if matches!(self.peek(), Some(Tok::Op("-"))) {
            self.at += 1;
            let pos = self.pos();
            let (a, ty) = self.nested(|p| p.unary())?;
            self.want("'-'", pos, ty, Type::Number)?;
            return Ok((Node::Neg(Box::new(a)), Type::Number));
        }
        self.atom()
    }

    fn atom(&mut self) -> Parsed {
        let pos = self.pos();
        match self.peek().cloned() {
            Some(Tok::Number(v)) => {
                self.at += 1;
                Ok((Node::Number(v), Type::Number))
            }
            Some(Tok::LParen) => {
                self.at += 1;
                let inner = self.expr()?;
                if !matches!(self.peek(), Some(Tok::RParen)) {
                    return Err(self.unexpected("')'"));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Tok::Ident(name)) if name.eq_ignore_ascii_case("is_missing") => {
                self.at += 1;
                if !matches!(self.peek(), Some(Tok::LParen)) {
                    return Err(self.unexpected("'(' after is_missing"));
                }
                self.at += 1;
                let cpos = self.pos();
                let Some(Tok::Ident(col)) = self.peek().cloned() else {
                    return Err(self.unexpected("a column name"));
                };
                let c = self.number_column(&col, cpos)?;
                self.at += 1;
                if !matches!(self.peek(), Some(Tok::RParen)) {
                    return Err(self.unexpected("')'"));
                }
                self.at += 1;
                Ok((Node::IsMissing(c), Type::Condition))
            }
            Some(Tok::Ident(name)) => {
                let c = self.number_column(&name, pos)?;
                self.at += 1;
                Ok((Node::Column(c), Type::Number))
            }
            _ => Err(self.unexpected("a number, a column, 'is_missing(…)' or '('")),
        }
    }

    fn available(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for c in self.columns {
            if !names.contains(&c.feature.as_str()) {
                names.push(&c.feature);
            }
        }
        names.join(", ")
    }

    /// A numeric (or boolean) column by name.
    fn number_column(&self, name: &str, pos: usize) -> Result<usize, Failure> {
        if let Some(i) = self
            .columns
            .iter()
            .position(|c| c.name == name && c.category.is_none())
        {
            return Ok(i);
        }
        if self.columns.iter().any(|c| c.feature == name) {
            return Err((pos, Problem::CategoricalAsNumber(name.to_string())));
        }
        Err((
            pos,
            Problem::UnknownColumn {
                name: name.to_string(),
                available: self.available(),
            },
        ))
    }

    /// A categorical feature's one-hot column for `category`.
    fn category_column(&self, feature: &str, category: &str, pos: usize) -> Result<usize, Failure> {
        let of: Vec<(usize, &Column)> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.feature == feature && c.category.is_some())
            .collect();
        if of.is_empty() {
            return Err((
                pos,
                Problem::UnknownColumn {
                    name: feature.to_string(),
                    available: self.available(),
                },
            ));
        }
        of.iter()
            .find(|(_, c)| c.category.as_deref() == Some(category))
            .map(|(i, _)| *i)
            .ok_or_else(|| {
                (
                    pos,
                    Problem::UnknownCategory {
                        column: feature.to_string(),
                        category: category.to_string(),
                        available: of
                            .iter()
                            .filter_map(|(_, c)| c.category.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<Column> {
        Column::from_encoded(&[
            "current".into(),
            "fixed_deposit".into(),
            "wealth".into(),
            "maa".into(),
            "Home=rent".into(),
            "Home=owner".into(),
        ])
    }

    fn num(text: &str) -> Compiled {
        Compiled::new("derive.x", text, &cols(), Type::Number).unwrap()
    }

    fn cond(text: &str) -> Compiled {
        Compiled::new("cohort", text, &cols(), Type::Condition).unwrap()
    }

    fn refused(text: &str, ty: Type) -> ExprError {
        Compiled::new("cohort", text, &cols(), ty).unwrap_err()
    }

    #[test]
    fn arithmetic_precedence_and_missing_values() {
        let e = num("current + fixed_deposit * 2 - wealth / 4");
        let row = [1.0, 2.0, 8.0, 0.0, 0.0, 1.0];
        assert_eq!(e.number(&row), 1.0 + 4.0 - 2.0);
        assert_eq!(num("-(current + 1) * 2").number(&row), -4.0);
        assert_eq!(num("1_000_000 / 4").number(&row), 250_000.0);
        assert_eq!(num("2.5e-1 * 4").number(&row), 1.0);
        assert_eq!(e.reads(), &[0, 1, 2]);
        let missing = [f32::NAN, 2.0, 8.0, 0.0, 0.0, 1.0];
        assert!(e.number(&missing).is_nan());
        // a division by zero is missing (SQL's NULLIF), not an infinity that compares
        let zero = [1.0, 2.0, 0.0, 0.0, 0.0, 1.0];
        assert!(num("current / wealth").number(&zero).is_nan());
        assert_eq!(cond("current / wealth > 1").truth(&zero), Truth::Unknown);
        assert_eq!(num("current / fixed_deposit").number(&zero), 0.5);
        assert_eq!(
            num("`current` + 0").number(&row),
            1.0,
            "backquoted names read the same column"
        );
    }

    #[test]
    fn conditions_are_three_valued() {
        let c = cond("maa > 200000 and Home == \"rent\"");
        assert_eq!(c.truth(&[0.0, 0.0, 0.0, 250_000.0, 1.0, 0.0]), Truth::True);
        assert_eq!(c.truth(&[0.0, 0.0, 0.0, 250_000.0, 0.0, 1.0]), Truth::False);
        // unknown and false = false; unknown and true = unknown
        assert_eq!(c.truth(&[0.0, 0.0, 0.0, f32::NAN, 0.0, 1.0]), Truth::False);
        assert_eq!(
            c.truth(&[0.0, 0.0, 0.0, f32::NAN, 1.0, 0.0]),
            Truth::Unknown
        );
        let o = cond("is_missing(maa) or not maa <= 10");
        assert_eq!(o.truth(&[0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0]), Truth::True);
        assert_eq!(o.truth(&[0.0, 0.0, 0.0, 5.0, 0.0, 0.0]), Truth::False);
        assert_eq!(o.truth(&[0.0, 0.0, 0.0, 50.0, 0.0, 0.0]), Truth::True);
        let l = cond("maa < 0.7 * current");
        assert_eq!(l.truth(&[100.0, 0.0, 0.0, 60.0, 0.0, 0.0]), Truth::True);
        assert_eq!(cond("Home != \"owner\"").truth(&[0.0; 6]), Truth::True);
        assert_eq!(
            cond("NOT (maa >= 1) AND current == 0").truth(&[0.0; 6]),
            Truth::True
        );
    }

    #[test]
    fn errors_name_the_position_and_the_valid_names() {
        let e = refused("maa > 200000 and assets > 1", Type::Condition);
        assert_eq!(e.position, 18);
        assert!(
            matches!(&*e.problem, Problem::UnknownColumn { name, available } if name == "assets" && available.contains("fixed_deposit") && available.contains("Home")),
            "{e}"
        );
        let e = refused("Home == \"renting\"", Type::Condition);
        assert!(e.to_string().contains("categories: rent, owner"), "{e}");
        let e = refused("Home > 1", Type::Condition);
        assert!(matches!(*e.problem, Problem::CategoricalAsNumber(_)), "{e}");
        let e = refused("maa + (current > 1)", Type::Number);
        assert_eq!(e.position, 7);
        assert!(matches!(*e.problem, Problem::Type { .. }), "{e}");
        let e = refused("maa + 1", Type::Condition);
        assert!(e.to_string().contains("needs a condition"), "{e}");
        let e = refused("maa > ", Type::Condition);
        assert_eq!(e.position, 7);
        assert!(e.to_string().contains("the end"), "{e}");
        let e = refused("maa > 1 )", Type::Condition);
        assert_eq!(e.position, 9);
        let e = refused("maa # 1", Type::Condition);
        assert_eq!(e.position, 5);
        let e = refused("\"open", Type::Condition);
        assert!(matches!(*e.problem, Problem::Unterminated("text")), "{e}");
        let e = refused("1e999 > maa", Type::Condition);
        assert!(matches!(*e.problem, Problem::BadNumber(_)), "{e}");
        let deep = format!("{}maa{} > 1", "(".repeat(200), ")".repeat(200));
        assert!(matches!(
            *refused(&deep, Type::Condition).problem,
            Problem::TooDeep
        ));
        let e = refused("maa >", Type::Condition);
        assert!(
            e.to_string()
                .starts_with("cohort \"maa >\", at character 6"),
            "{e}"
        );
    }
}
