//! Target expressions, as graphite-web's grammar defines them: a path
//! expression (`servers.*.cpu.{user,system}`), a call
//! (`alias(sumSeries(a.*), "total")`) with positional and keyword arguments,
//! or a literal: a number, a quoted string, `true`/`false`, `None`. Templates
//! (`template(a.$x, x="b")`) arrive as ordinary calls.
//!
//! A hand-written recursive-descent parser (the grammar is small and the
//! errors must name the byte position), pure over the input string.

use std::fmt;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A metric path expression, possibly with globs.
    Path(String),
    /// A function call.
    Call(Call),
    /// A number (graphite keeps ints and floats apart: `2` vs `2.0`).
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A quoted string.
    Str(String),
    /// `true` or `false`.
    Bool(bool),
    /// `None`.
    None,
}

/// A function call with its arguments in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Function name as written.
    pub name: String,
    /// Positional arguments.
    pub args: Vec<Expr>,
    /// Keyword arguments, in the order given.
    pub kwargs: Vec<(String, Expr)>,
    /// The call's text, as graphite-web uses it to name series (`pathExpression`).
    pub text: String,
}

/// A syntax error at a byte position of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 0-based byte offset.
    pub position: usize,
    /// What was expected or found.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at position {}", self.message, self.position)
    }
}

impl std::error::Error for ParseError {}

/// How deep calls may nest before the parser refuses (a bound, not a grammar rule).
pub const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    max_depth: usize,
    /// Reading a series name back: a word before `(` that cannot be a
    /// function name is a path, and the rest is ignored.
    lenient: bool,
}

/// Characters allowed in a path expression, besides letters and digits
/// (graphite's `validMetricChars` plus globs and `{}`).
fn path_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !"(),'\"|".contains(c)
}

impl<'a> Parser<'a> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            position: self.pos,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += self.peek().map_or(0, char::len_utf8);
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// An expression and any calls piped onto it: `a.b|scale(2)|alias("x")`
    /// is `alias(scale(a.b,2),"x")`.
    fn expression(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.primary()?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.peek() != Some('|') {
                self.pos = save;
                return Ok(expr);
            }
            self.pos += 1;
            self.skip_ws();
            let at = self.pos;
            match self.path_or_call()? {
                Expr::Call(mut call) => {
                    call.args.insert(0, expr);
                    expr = Expr::Call(call);
                }
                _ => {
                    self.pos = at;
                    return self.error("expected a function call after `|`");
                }
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        match self.peek() {
            None => self.error("expected an expression, found the end"),
            Some('"') | Some('\'') => self.string(),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = self.pos;
                if let Some(n) = self.number()? {
                    return Ok(n);
                }
                self.pos = start;
                self.path_or_call()
            }
            Some(c) if path_char(c) => self.path_or_call(),
            Some(c) => self.error(format!("expected an expression, found {c:?}")),
        }
    }

    fn string(&mut self) -> Result<Expr, ParseError> {
        let quote = self.peek().expect("caller saw a quote");
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return self.error("unterminated string");
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(Expr::Str(out));
                }
                // Like graphite-web's grammar, keep escapes as written (a
                // regex's `\.` must reach the function intact); a `\` only
                // stops the next quote from ending the string.
                Some('\\') => {
                    out.push('\\');
                    self.pos += 1;
                    if let Some(c) = self.peek() {
                        out.push(c);
                        self.pos += c.len_utf8();
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// A number if the next token is exactly one (not the start of a path like `1.a`).
    fn number(&mut self) -> Result<Option<Expr>, ParseError> {
        let rest = &self.src[self.pos..];
        let len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .map_or(rest.len(), |(i, _)| i);
        let token = &rest[..len];
        let next = rest[len..].chars().next();
        if next.is_some_and(|c| path_char(c) || c == '(') {
            return Ok(None);
        }
        let value = if let Ok(i) = token.parse::<i64>() {
            Expr::Int(i)
        } else if let Ok(f) = token.parse::<f64>() {
            Expr::Float(f)
        } else {
            return Ok(None);
        };
        self.pos += len;
        Ok(Some(value))
    }

    fn path_or_call(&mut self) -> Result<Expr, ParseError> {
        let start = self.pos;
        let mut braces = 0usize;
        while let Some(c) = self.peek() {
            let inside = braces > 0 && c == ',';
            if !(path_char(c) || inside) {
                break;
            }
            match c {
                '{' => braces += 1,
                '}' => braces = braces.saturating_sub(1),
                _ => {}
            }
            self.pos += c.len_utf8();
        }
        let word = &self.src[start..self.pos];
        if word.is_empty() {
            return self.error("expected a metric path or a function");
        }
        if braces > 0 {
            self.pos = start;
            return self.error("unbalanced `{` in path");
        }
        self.skip_ws();
        if self.peek() != Some('(') {
            // graphite's keywords are caseless.
            return Ok(match word.to_ascii_lowercase().as_str() {
                "true" => Expr::Bool(true),
                "false" => Expr::Bool(false),
                "none" => Expr::None,
                "inf" => Expr::Float(f64::INFINITY),
                _ => Expr::Path(word.to_string()),
            });
        }
        if !word.chars().all(|c| c.is_alphanumeric() || c == '_') {
            if self.lenient {
                return Ok(Expr::Path(word.to_string()));
            }
            self.pos = start;
            return self.error(format!("{word:?} is not a function name"));
        }
        self.depth += 1;
        if self.depth > self.max_depth {
            let max = self.max_depth;
            return self.error(format!("expression nested deeper than {max} calls"));
        }
        self.pos += 1;
        let mut call = Call {
            name: word.to_string(),
            args: Vec::new(),
            kwargs: Vec::new(),
            text: String::new(),
        };
        if !self.eat(')') {
            loop {
                self.argument(&mut call)?;
                if self.eat(')') {
                    break;
                }
                if !self.eat(',') {
                    return match self.peek() {
                        None => self.error(format!(
                            "unbalanced parentheses: `{}(` is never closed",
                            call.name
                        )),
                        Some(c) => self.error(format!("expected `,` or `)`, found {c:?}")),
                    };
                }
            }
        }
        self.depth -= 1;
        call.text = self.src[start..self.pos].to_string();
        Ok(Expr::Call(call))
    }

    fn argument(&mut self, call: &mut Call) -> Result<(), ParseError> {
        self.skip_ws();
        let save = self.pos;
        // `name=value` keyword argument?
        let ident_len = self.src[self.pos..]
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map_or(self.src.len() - self.pos, |(i, _)| i);
        if ident_len > 0 {
            let name = self.src[self.pos..self.pos + ident_len].to_string();
            self.pos += ident_len;
            self.skip_ws();
            if self.peek() == Some('=') && !self.src[self.pos..].starts_with("==") {
                self.pos += 1;
                let value = self.expression()?;
                call.kwargs.push((name, value));
                return Ok(());
            }
            self.pos = save;
        }
        if !call.kwargs.is_empty() {
            return self.error("positional argument after keyword arguments");
        }
        let value = self.expression()?;
        call.args.push(value);
        Ok(())
    }
}

/// Parses one target expression.
pub fn parse(target: &str) -> Result<Expr, ParseError> {
    parse_with_depth(target, MAX_DEPTH)
}

/// Parses the expression at the start of `text` and ignores what follows,
/// as graphite's grammar does when it reads a series name back.
pub fn parse_prefix(text: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        src: text,
        pos: 0,
        depth: 0,
        max_depth: MAX_DEPTH,
        lenient: true,
    };
    p.expression()
}

/// Parses one target expression, refusing calls nested deeper than `max_depth`.
pub fn parse_with_depth(target: &str, max_depth: usize) -> Result<Expr, ParseError> {
    let mut p = Parser {
        src: target,
        pos: 0,
        depth: 0,
        max_depth,
        lenient: false,
    };
    let expr = p.expression()?;
    p.skip_ws();
    match p.peek() {
        None => Ok(expr),
        Some(')') => p.error("unbalanced parentheses: unexpected `)`"),
        Some(c) => p.error(format!("unexpected {c:?} after the expression")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(e: &Expr) -> &Call {
        match e {
            Expr::Call(c) => c,
            other => panic!("not a call: {other:?}"),
        }
    }

    #[test]
    fn paths_and_globs() {
        assert_eq!(
            parse("servers.web1.cpu").unwrap(),
            Expr::Path("servers.web1.cpu".into())
        );
        assert_eq!(
            parse(" a.*.b{c,d}[0-9]? ").unwrap(),
            Expr::Path("a.*.b{c,d}[0-9]?".into())
        );
        assert_eq!(parse("1.a").unwrap(), Expr::Path("1.a".into()));
    }

    #[test]
    fn calls_with_every_argument_kind() {
        let e = parse(r#"alias(sumSeries(a.*.b, c), "total \"x\"")"#).unwrap();
        let c = call(&e);
        assert_eq!(c.name, "alias");
        assert_eq!(c.args[1], Expr::Str("total \\\"x\\\"".into()));
        let inner = call(&c.args[0]);
        assert_eq!(inner.text, "sumSeries(a.*.b, c)");
        assert_eq!(
            inner.args,
            vec![Expr::Path("a.*.b".into()), Expr::Path("c".into())]
        );

        let e = parse("f(x, 1, -2.5, 1e3, true, False, None, 'q', key=3, other=\"s\")").unwrap();
        let c = call(&e);
        assert_eq!(
            c.args[1..],
            [
                Expr::Int(1),
                Expr::Float(-2.5),
                Expr::Float(1000.0),
                Expr::Bool(true),
                Expr::Bool(false),
                Expr::None,
                Expr::Str("q".into())
            ]
        );
        assert_eq!(
            c.kwargs,
            vec![
                ("key".into(), Expr::Int(3)),
                ("other".into(), Expr::Str("s".into()))
            ]
        );
        assert_eq!(
            call(&parse("nonNegativeDerivative()").unwrap()).args,
            vec![]
        );
    }

    #[test]
    fn errors_name_the_position() {
        let e = |s: &str| parse(s).unwrap_err();
        assert_eq!(e("sumSeries(a.b").position, 13);
        assert!(e("sumSeries(a.b").message.contains("never closed"));
        assert_eq!(e("a.b)").position, 3);
        assert!(e("f(a,)").message.contains("expected an expression"));
        assert!(e("alias(a, \"x)").message.contains("unterminated string"));
        assert!(e("f(k=1, a)")
            .message
            .contains("positional argument after keyword"));
        assert!(e("a.{b,c").message.contains("unbalanced `{`"));
        assert!(e("a.b(x)").message.contains("not a function name"));
        let deep = "f(".repeat(MAX_DEPTH + 1) + "a" + &")".repeat(MAX_DEPTH + 1);
        assert!(e(&deep).message.contains("nested deeper"));
        assert_eq!(e("").position, 0);
    }
}
