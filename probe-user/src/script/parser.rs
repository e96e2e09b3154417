//! The parser: builds a [`Program`] from tokens by recursive descent, with
//! operator precedence parsing for expressions.
//!
//! Errors never stop the parse. The parser reports a diagnostic and skips
//! to the end of the statement (a `;` or the `}` of the enclosing block)
//! or, in a probe header, to the next attach point, so that one run
//! reports several problems. Nesting deeper than [`MAX_NESTING`] levels is
//! reported once and ends the parse, which bounds the parser's recursion.

mod attach;
mod expr;
#[cfg(test)]
mod tests;

use super::ast::{
    AssignTarget, BinaryOp, Block, CDefinition, CDefinitionKind, ElseBranch, Expr, ExprKind,
    ForIterable, MapRef, Probe, Program, Statement, StatementKind, Variable,
};
use super::diagnostic::{Diagnostic, has_errors};
use super::lexer;
use super::span::{Source, Span};
use super::token::{Token, TokenKind};

/// The deepest nesting the parser accepts. Blocks, parentheses, brackets,
/// prefix operators, and each operator in a chain such as `a + b + c` or
/// `a.b.c` count as one level each, so the limit bounds both the parser's
/// recursion and the depth of the tree that later stages walk.
///
/// Real scripts nest a few levels deep. The limit keeps hostile input from
/// overflowing the stack: in a debug build one level of parentheses takes
/// about 6 KiB of the parser's stack, and threads often have only 2 MiB.
pub const MAX_NESTING: usize = 128;

/// Parses a script. Returns the program only if there is no error; the
/// diagnostics (errors and warnings, in source order) are returned either
/// way.
pub fn parse(source: &Source) -> (Option<Program>, Vec<Diagnostic>) {
    let (program, diagnostics) = parse_with_recovery(source);
    let program = (!has_errors(&diagnostics)).then_some(program);
    (program, diagnostics)
}

/// Parses a script and returns what could be parsed even when there are
/// errors. Constructs that failed to parse are left out, or replaced by
/// [`ExprKind::Error`] inside expressions.
pub fn parse_with_recovery(source: &Source) -> (Program, Vec<Diagnostic>) {
    let (tokens, mut diagnostics) = lexer::tokenize(source.text());
    let mut parser = Parser::new(source.text(), tokens);
    let program = parser.parse_program();
    diagnostics.append(&mut parser.diagnostics);
    diagnostics.sort_by_key(|diagnostic| diagnostic.span.start);
    (program, diagnostics)
}

/// Marks a parse failure whose diagnostic has already been reported.
#[derive(Debug)]
struct Reported;

type ParseResult<T> = Result<T, Reported>;

struct Parser<'a> {
    text: &'a str,
    /// Never empty: the last token is `EndOfInput`.
    tokens: Vec<Token>,
    pos: usize,
    diagnostics: Vec<Diagnostic>,
    depth: usize,
    /// Set when the nesting limit was hit: the parse then ends without
    /// further diagnostics.
    aborted: bool,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, tokens: Vec<Token>) -> Self {
        let mut tokens = tokens;
        if tokens.last().map(|token| &token.kind) != Some(&TokenKind::EndOfInput) {
            tokens.push(Token {
                kind: TokenKind::EndOfInput,
                span: Span::at(text.len()),
            });
        }
        Self {
            text,
            tokens,
            pos: 0,
            diagnostics: Vec::new(),
            depth: 0,
            aborted: false,
        }
    }

    // Token access.

    fn peek(&self) -> &TokenKind {
        &self.tokens[self.pos].kind
    }

    fn peek_nth(&self, n: usize) -> &TokenKind {
        let last = self.tokens.len() - 1;
        &self.tokens[(self.pos + n).min(last)].kind
    }

    fn span(&self) -> Span {
        self.tokens[self.pos].span
    }

    /// Returns the end of the previous token, where a missing token belongs.
    fn previous_end(&self) -> usize {
        match self.pos.checked_sub(1) {
            Some(previous) => self.tokens[previous].span.end,
            None => 0,
        }
    }

    /// Returns the span to underline in a "found ..." message: the current token,
    /// or at the end of input the position right after the last token.
    fn found_span(&self) -> Span {
        if self.at(&TokenKind::EndOfInput) {
            Span::at(self.previous_end())
        } else {
            self.span()
        }
    }

    fn at(&self, kind: &TokenKind) -> bool {
        self.peek() == kind
    }

    /// Consumes the current token, unless it is the end of input.
    fn bump(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn eat(&mut self, kind: &TokenKind) -> Option<Span> {
        if self.at(kind) {
            Some(self.bump().span)
        } else {
            None
        }
    }

    /// Returns the text of the current token as written.
    fn token_text(&self) -> &'a str {
        let span = self.span();
        self.text.get(span.start..span.end).unwrap_or("")
    }

    // Diagnostics.

    fn report(&mut self, diagnostic: Diagnostic) -> Reported {
        if !self.aborted {
            self.diagnostics.push(diagnostic);
        }
        Reported
    }

    /// Builds "expected WHAT, found TOKEN" at the current token.
    fn expected_diagnostic(&self, expectation: &str) -> Diagnostic {
        let message = format!("expected {expectation}, found {}", self.peek());
        Diagnostic::error(self.found_span(), message)
    }

    /// Reports "expected WHAT, found TOKEN" at the current token.
    fn expected(&mut self, expectation: &str) -> Reported {
        let diagnostic = self.expected_diagnostic(expectation);
        self.report(diagnostic)
    }

    /// Consumes `kind` or reports "expected `kind` CONTEXT, found ...".
    fn expect(&mut self, kind: &TokenKind, context: &str) -> ParseResult<Span> {
        match self.eat(kind) {
            Some(span) => Ok(span),
            None => {
                let symbol = kind.symbol().unwrap_or("?");
                let expectation = if context.is_empty() {
                    format!("`{symbol}`")
                } else {
                    format!("`{symbol}` {context}")
                };
                Err(self.expected(&expectation))
            }
        }
    }

    /// Consumes the `closing` delimiter that matches the one at `open`, or
    /// reports its absence with a note at `open`.
    fn expect_closing(
        &mut self,
        closing: &TokenKind,
        open: Span,
        context: &str,
    ) -> ParseResult<Span> {
        if let Some(span) = self.eat(closing) {
            return Ok(span);
        }
        let symbol = closing.symbol().unwrap_or("?");
        let message = format!("expected `{symbol}` {context}, found {}", self.peek());
        let diagnostic =
            Diagnostic::error(self.found_span(), message).with_note_at(open, "to match this");
        Err(self.report(diagnostic))
    }

    /// Enters one nesting level, or reports that the input nests too
    /// deeply and ends the parse. Each successful call is paired with
    /// [`Parser::leave`].
    ///
    /// The recursive functions call this directly rather than through a
    /// closure, because every extra frame on the recursive path costs stack
    /// at each level.
    fn enter(&mut self) -> ParseResult<()> {
        if self.depth < MAX_NESTING {
            self.depth += 1;
            return Ok(());
        }
        if !self.aborted {
            let diagnostic = Diagnostic::error(self.found_span(), "the program nests too deeply")
                .with_hint(format!(
                    "a program nests at most {MAX_NESTING} levels deep, counting blocks, parentheses, \
                     and each operator in a chain such as `a + b + c`"
                ));
            self.report(diagnostic);
            self.aborted = true;
        }
        self.pos = self.tokens.len() - 1;
        Err(Reported)
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // Program and probes.

    fn parse_program(&mut self) -> Program {
        let mut c_definitions = Vec::new();
        let mut probes = Vec::new();
        loop {
            let span = self.span();
            let start_pos = self.pos;
            match self.peek().clone() {
                TokenKind::EndOfInput => break,
                TokenKind::CPreprocessor(text) => {
                    self.bump();
                    c_definitions.push(CDefinition {
                        kind: CDefinitionKind::Preprocessor,
                        text,
                        span,
                    });
                }
                TokenKind::CDefinition(text) => {
                    self.bump();
                    c_definitions.push(CDefinition {
                        kind: CDefinitionKind::Type,
                        text,
                        span,
                    });
                }
                TokenKind::AttachPoint(_) => match self.parse_probe() {
                    Ok(probe) => probes.push(probe),
                    Err(Reported) => self.recover_to_probe(start_pos),
                },
                _ => {
                    let diagnostic = self.expected_diagnostic("an attach point").with_hint(
                        "a probe starts with an attach point such as `BEGIN` or `kprobe:vfs_read`",
                    );
                    self.report(diagnostic);
                    self.recover_to_probe(start_pos);
                }
            }
        }
        Program {
            c_definitions,
            probes,
            span: Span::new(0, self.text.len()),
        }
    }

    /// Skips to the next top-level item after an error in a probe that
    /// started at token `start_pos`.
    fn recover_to_probe(&mut self, start_pos: usize) {
        if self.pos == start_pos {
            self.bump();
        }
        while !matches!(
            self.peek(),
            TokenKind::EndOfInput
                | TokenKind::AttachPoint(_)
                | TokenKind::CPreprocessor(_)
                | TokenKind::CDefinition(_)
        ) {
            self.bump();
        }
    }

    fn parse_probe(&mut self) -> ParseResult<Probe> {
        let start = self.span().start;
        let mut attach_points = Vec::new();
        loop {
            let token = self.bump();
            if let TokenKind::AttachPoint(raw) = &token.kind {
                if let Some(attach_point) =
                    attach::parse_attach_point(raw, token.span, &mut self.diagnostics)
                {
                    attach_points.push(attach_point);
                }
            }
            if self.eat(&TokenKind::Comma).is_none() {
                break;
            }
            if !matches!(self.peek(), TokenKind::AttachPoint(_)) {
                return Err(self.expected("an attach point after `,`"));
            }
        }

        let predicate = if self.at(&TokenKind::Slash) {
            Some(self.parse_predicate()?)
        } else {
            None
        };

        if !self.at(&TokenKind::LeftBrace) {
            let diagnostic = if predicate.is_some() {
                self.expected_diagnostic("`{` after the predicate")
            } else {
                self.expected_diagnostic("a predicate `/.../` or `{` after the attach point")
                    .with_hint(
                        "separate attach points with `,`; a probe's body is a block `{ ... }`",
                    )
            };
            return Err(self.report(diagnostic));
        }
        let body = self.parse_block("")?;
        Ok(Probe {
            attach_points,
            predicate,
            span: Span::new(start, body.span.end),
            body,
        })
    }

    fn parse_predicate(&mut self) -> ParseResult<Expr> {
        let open = self.bump().span;
        if let Some(close) = self.eat(&TokenKind::PredicateEnd) {
            let span = open.to(close);
            self.report(
                Diagnostic::error(span, "empty predicate")
                    .with_hint("write a condition between the slashes, or remove them"),
            );
            return Ok(Expr {
                kind: ExprKind::Error,
                span,
            });
        }
        let condition = self.parse_condition("a predicate")?;
        if self.eat(&TokenKind::PredicateEnd).is_none() {
            let message = format!("expected `/` to end the predicate, found {}", self.peek());
            let diagnostic = Diagnostic::error(self.found_span(), message)
                .with_hint("a predicate is written `/condition/` before the probe's `{`")
                .with_note_at(open, "the predicate starts here");
            self.report(diagnostic);
            if !self.at(&TokenKind::LeftBrace) {
                return Err(Reported);
            }
        }
        Ok(condition)
    }

    /// Parses an expression used as a condition, and reports `=` in it as a
    /// likely typo for `==`.
    fn parse_condition(&mut self, context: &str) -> ParseResult<Expr> {
        let condition = self.parse_expr()?;
        if self.at(&TokenKind::Assign) {
            self.parse_assignment_in_condition(condition, context)
        } else {
            Ok(condition)
        }
    }

    /// Reports the `=` after `condition` and parses the rest as if it were
    /// `==`.
    #[cold]
    fn parse_assignment_in_condition(
        &mut self,
        condition: Expr,
        context: &str,
    ) -> ParseResult<Expr> {
        let assign = self.bump().span;
        let diagnostic = Diagnostic::error(assign, format!("unexpected `=` in {context}"))
            .with_hint("did you mean `==`?");
        self.report(diagnostic);
        let right = self.parse_expr()?;
        let span = condition.span.to(right.span);
        let kind = ExprKind::Binary {
            op: BinaryOp::Eq,
            left: Box::new(condition),
            right: Box::new(right),
        };
        Ok(Expr { kind, span })
    }

    // Blocks and statements.

    /// Parses `{ statements }`. `context` completes "expected `{` ..." when
    /// the brace is missing.
    fn parse_block(&mut self, context: &str) -> ParseResult<Block> {
        self.enter()?;
        let block = self.parse_block_inner(context);
        self.leave();
        block
    }

    fn parse_block_inner(&mut self, context: &str) -> ParseResult<Block> {
        let open = self.expect(&TokenKind::LeftBrace, context)?;
        let mut statements = Vec::new();
        loop {
            match self.peek() {
                TokenKind::RightBrace => {
                    let close = self.bump().span;
                    return Ok(Block {
                        statements,
                        span: open.to(close),
                    });
                }
                TokenKind::EndOfInput
                | TokenKind::AttachPoint(_)
                | TokenKind::CPreprocessor(_)
                | TokenKind::CDefinition(_) => {
                    self.report_unclosed_block(open);
                    return Ok(Block {
                        statements,
                        span: Span::new(open.start, self.previous_end()),
                    });
                }
                TokenKind::Semicolon => {
                    self.bump();
                }
                _ => self.parse_statement_in_block(&mut statements),
            }
        }
    }

    /// Parses one statement and its `;` into `statements`, or skips past it
    /// after an error. Always consumes at least one token.
    fn parse_statement_in_block(&mut self, statements: &mut Vec<Statement>) {
        let start_pos = self.pos;
        match self.parse_statement() {
            Ok(statement) => {
                let needs_separator = !ends_with_block(&statement.kind);
                statements.push(statement);
                if needs_separator {
                    self.parse_separator();
                }
            }
            Err(Reported) => self.recover_statement(),
        }
        if self.pos == start_pos {
            self.bump();
        }
    }

    #[cold]
    fn report_unclosed_block(&mut self, open: Span) {
        let message = format!("expected `}}` to close the block, found {}", self.peek());
        let diagnostic = Diagnostic::error(self.found_span(), message)
            .with_note_at(open, "the block starts here");
        self.report(diagnostic);
    }

    /// Consumes the `;` after a statement, or reports its absence. When the
    /// next token can start a statement, parsing goes on as if the `;` were
    /// there.
    fn parse_separator(&mut self) {
        match self.peek() {
            TokenKind::Semicolon => {
                self.bump();
            }
            TokenKind::RightBrace
            | TokenKind::EndOfInput
            | TokenKind::AttachPoint(_)
            | TokenKind::CPreprocessor(_)
            | TokenKind::CDefinition(_) => {}
            _ => {
                let message = format!(
                    "expected `;` or `}}` after statement, found {}",
                    self.peek()
                );
                self.report(
                    Diagnostic::error(self.found_span(), message)
                        .with_hint("separate statements with `;`"),
                );
                if !self.can_start_statement() {
                    self.recover_statement();
                }
            }
        }
    }

    /// Skips past the next `;`, or up to the `}` of the enclosing block.
    fn recover_statement(&mut self) {
        let mut brace_depth = 0usize;
        loop {
            match self.peek() {
                TokenKind::EndOfInput
                | TokenKind::AttachPoint(_)
                | TokenKind::CPreprocessor(_)
                | TokenKind::CDefinition(_) => return,
                TokenKind::Semicolon if brace_depth == 0 => {
                    self.bump();
                    return;
                }
                TokenKind::RightBrace if brace_depth == 0 => return,
                TokenKind::LeftBrace => brace_depth += 1,
                TokenKind::RightBrace => brace_depth -= 1,
                _ => {}
            }
            self.bump();
        }
    }

    fn can_start_statement(&self) -> bool {
        matches!(
            self.peek(),
            TokenKind::Identifier(_)
                | TokenKind::Integer(_)
                | TokenKind::String(_)
                | TokenKind::Variable(_)
                | TokenKind::Positional(_)
                | TokenKind::PositionalCount
                | TokenKind::Map(_)
                | TokenKind::If
                | TokenKind::Unroll
                | TokenKind::While
                | TokenKind::For
                | TokenKind::Return
                | TokenKind::Break
                | TokenKind::Continue
                | TokenKind::Let
                | TokenKind::True
                | TokenKind::False
                | TokenKind::Sizeof
                | TokenKind::Offsetof
                | TokenKind::LeftBrace
                | TokenKind::LeftParen
                | TokenKind::PlusPlus
                | TokenKind::MinusMinus
                | TokenKind::Bang
                | TokenKind::Tilde
                | TokenKind::Minus
                | TokenKind::Star
        )
    }

    fn parse_statement(&mut self) -> ParseResult<Statement> {
        match self.peek() {
            TokenKind::If => self.parse_if(),
            TokenKind::While => self.parse_while(),
            TokenKind::Unroll => self.parse_unroll(),
            TokenKind::For => self.parse_for(),
            TokenKind::Let => self.parse_let(),
            TokenKind::Return => self.parse_return(),
            TokenKind::Break => Ok(self.parse_keyword_statement(StatementKind::Break)),
            TokenKind::Continue => Ok(self.parse_keyword_statement(StatementKind::Continue)),
            TokenKind::LeftBrace => {
                let block = self.parse_block("")?;
                Ok(Statement {
                    span: block.span,
                    kind: StatementKind::Block(block),
                })
            }
            TokenKind::Else => Err(self.report_else_without_if()),
            _ => self.parse_expression_statement(),
        }
    }

    /// Parses a statement that is a single keyword, such as `break`.
    fn parse_keyword_statement(&mut self, kind: StatementKind) -> Statement {
        let span = self.bump().span;
        Statement { kind, span }
    }

    #[cold]
    fn report_else_without_if(&mut self) -> Reported {
        let diagnostic = Diagnostic::error(self.span(), "`else` without a preceding `if`")
            .with_hint("`else` must follow the `}` of an `if` block");
        self.report(diagnostic)
    }

    fn parse_if(&mut self) -> ParseResult<Statement> {
        self.enter()?;
        let statement = self.parse_if_inner();
        self.leave();
        statement
    }

    fn parse_if_inner(&mut self) -> ParseResult<Statement> {
        let start = self.bump().span;
        let condition = self.parse_parenthesized_condition(ConditionOf::If)?;
        let then_block = self.parse_block("after the `if` condition")?;
        let mut end = then_block.span;
        let else_branch = if self.eat(&TokenKind::Else).is_some() {
            if self.at(&TokenKind::If) {
                let statement = self.parse_if()?;
                end = statement.span;
                Some(ElseBranch::If(Box::new(statement)))
            } else {
                let block = self.parse_block("or `if` after `else`")?;
                end = block.span;
                Some(ElseBranch::Block(block))
            }
        } else {
            None
        };
        let kind = StatementKind::If {
            condition,
            then_block,
            else_branch,
        };
        Ok(Statement {
            kind,
            span: start.to(end),
        })
    }

    fn parse_while(&mut self) -> ParseResult<Statement> {
        let start = self.bump().span;
        let condition = self.parse_parenthesized_condition(ConditionOf::While)?;
        let body = self.parse_block("after the `while` condition")?;
        let span = start.to(body.span);
        Ok(Statement {
            kind: StatementKind::While { condition, body },
            span,
        })
    }

    fn parse_unroll(&mut self) -> ParseResult<Statement> {
        let start = self.bump().span;
        let open = self.expect(&TokenKind::LeftParen, "after `unroll`")?;
        let count = self.parse_expr()?;
        self.expect_closing(&TokenKind::RightParen, open, "after the `unroll` count")?;
        let body = self.parse_block("after `unroll (...)`")?;
        let span = start.to(body.span);
        Ok(Statement {
            kind: StatementKind::Unroll { count, body },
            span,
        })
    }

    /// Parses `( condition )` after `if` or `while`.
    fn parse_parenthesized_condition(&mut self, of: ConditionOf) -> ParseResult<Expr> {
        let (after_keyword, condition_name, after_condition) = match of {
            ConditionOf::If => (
                "after `if`",
                "the `if` condition",
                "after the `if` condition",
            ),
            ConditionOf::While => (
                "after `while`",
                "the `while` condition",
                "after the `while` condition",
            ),
        };
        let open = self.expect(&TokenKind::LeftParen, after_keyword)?;
        let condition = self.parse_condition(condition_name)?;
        self.expect_closing(&TokenKind::RightParen, open, after_condition)?;
        Ok(condition)
    }

    fn parse_for(&mut self) -> ParseResult<Statement> {
        let start = self.bump().span;
        let open = self.expect(&TokenKind::LeftParen, "after `for`")?;
        let variable = self.parse_variable_name("after `for (`")?;
        self.expect(&TokenKind::Colon, "after the loop variable")?;
        let first = self.parse_expr()?;
        let iterable = if self.eat(&TokenKind::DotDot).is_some() {
            let end = self.parse_expr()?;
            ForIterable::Range { start: first, end }
        } else {
            match first.kind {
                ExprKind::Map(map) if map.keys.is_empty() => ForIterable::Map(MapRef {
                    name: map.name,
                    span: map.span,
                }),
                _ => {
                    let diagnostic =
                        Diagnostic::error(first.span, "expected a map or a range to iterate over")
                            .with_hint(
                                "write `for ($kv : @map) { ... }` or `for ($i : 0..10) { ... }`",
                            );
                    return Err(self.report(diagnostic));
                }
            }
        };
        self.expect_closing(&TokenKind::RightParen, open, "after the `for` header")?;
        let body = self.parse_block("after the `for` header")?;
        let span = start.to(body.span);
        Ok(Statement {
            kind: StatementKind::For {
                variable,
                iterable,
                body,
            },
            span,
        })
    }

    fn parse_let(&mut self) -> ParseResult<Statement> {
        let start = self.bump().span;
        let variable = self.parse_variable_name("after `let`")?;
        let mut end = variable.span;
        let ty = if self.eat(&TokenKind::Colon).is_some() {
            let ty = self.parse_type()?;
            end = ty.span;
            Some(ty)
        } else {
            None
        };
        let value = if self.eat(&TokenKind::Assign).is_some() {
            let value = self.parse_expr()?;
            end = value.span;
            Some(value)
        } else {
            None
        };
        Ok(Statement {
            kind: StatementKind::Let {
                variable,
                ty,
                value,
            },
            span: start.to(end),
        })
    }

    fn parse_return(&mut self) -> ParseResult<Statement> {
        let start = self.bump().span;
        let value = match self.peek() {
            TokenKind::Semicolon | TokenKind::RightBrace | TokenKind::EndOfInput => None,
            _ => Some(self.parse_expr()?),
        };
        let span = start.to(value.as_ref().map_or(start, |value| value.span));
        Ok(Statement {
            kind: StatementKind::Return(value),
            span,
        })
    }

    fn parse_variable_name(&mut self, context: &str) -> ParseResult<Variable> {
        if let TokenKind::Variable(name) = self.peek() {
            let name = name.clone();
            let span = self.bump().span;
            return Ok(Variable { name, span });
        }
        Err(self.expected(&format!("a variable such as `$x` {context}")))
    }

    fn parse_expression_statement(&mut self) -> ParseResult<Statement> {
        let expr = self.parse_expr()?;
        let Some(op) = assignment_op(self.peek()) else {
            return Ok(Statement {
                span: expr.span,
                kind: StatementKind::Expr(expr),
            });
        };
        self.bump();
        let target = self.assign_target(expr, TargetUse::Assign);
        let value = self.parse_expr()?;
        let target = target?;
        let span = target.span().to(value.span);
        Ok(Statement {
            kind: StatementKind::Assign { target, op, value },
            span,
        })
    }

    /// Converts the left side of an assignment, `++` or `--` to what it
    /// writes to. Only variables and maps can be written.
    fn assign_target(&mut self, expr: Expr, target_use: TargetUse) -> ParseResult<AssignTarget> {
        match expr.kind {
            ExprKind::Variable(name) => Ok(AssignTarget::Variable(Variable {
                name,
                span: expr.span,
            })),
            ExprKind::Map(map) => Ok(AssignTarget::Map(map)),
            _ => Err(self.report_invalid_target(expr.span, target_use)),
        }
    }

    #[cold]
    fn report_invalid_target(&mut self, span: Span, target_use: TargetUse) -> Reported {
        let action = match target_use {
            TargetUse::Assign => "assign to",
            TargetUse::Increment => "apply `++` to",
            TargetUse::Decrement => "apply `--` to",
        };
        let diagnostic = Diagnostic::error(span, format!("cannot {action} this expression"))
            .with_hint("only variables (`$x`) and maps (`@m`, `@m[key]`) can be written");
        self.report(diagnostic)
    }
}

/// The statement a parenthesized condition belongs to, for messages.
#[derive(Clone, Copy)]
enum ConditionOf {
    If,
    While,
}

/// The kind of write to an assignment target, for messages.
#[derive(Clone, Copy)]
enum TargetUse {
    Assign,
    Increment,
    Decrement,
}

/// Returns `Some(None)` for `=`, `Some(Some(op))` for `op=`, and `None` for
/// any other token.
fn assignment_op(kind: &TokenKind) -> Option<Option<BinaryOp>> {
    let op = match kind {
        TokenKind::Assign => return Some(None),
        TokenKind::PlusAssign => BinaryOp::Add,
        TokenKind::MinusAssign => BinaryOp::Sub,
        TokenKind::StarAssign => BinaryOp::Mul,
        TokenKind::SlashAssign => BinaryOp::Div,
        TokenKind::PercentAssign => BinaryOp::Mod,
        TokenKind::AmpersandAssign => BinaryOp::BitAnd,
        TokenKind::PipeAssign => BinaryOp::BitOr,
        TokenKind::CaretAssign => BinaryOp::BitXor,
        TokenKind::ShiftLeftAssign => BinaryOp::Shl,
        TokenKind::ShiftRightAssign => BinaryOp::Shr,
        _ => return None,
    };
    Some(Some(op))
}

/// Returns true for statements that end with a block, which need no `;`
/// after them.
fn ends_with_block(kind: &StatementKind) -> bool {
    matches!(
        kind,
        StatementKind::If { .. }
            | StatementKind::Unroll { .. }
            | StatementKind::While { .. }
            | StatementKind::For { .. }
            | StatementKind::Block(_)
    )
}
