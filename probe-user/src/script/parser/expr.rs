//! Expressions and types.
//!
//! Binary operators are parsed by precedence climbing. The precedence
//! levels are C's, from lowest to highest: `?:` (right-associative), `||`,
//! `&&`, `|`, `^`, `&`, `==` `!=`, `<` `<=` `>` `>=`, `<<` `>>`, `+` `-`, and
//! `*` `/` `%`. Prefix operators (`!` `~` `-` `+` `*` `&` `++` `--`) and
//! casts bind tighter. The postfix `.field`, `->field`, `[index]`, `++` and
//! `--` bind tightest.

use super::{ParseResult, Parser, Reported, TargetUse};
use crate::script::ast::{
    BinaryOp, Expr, ExprKind, IncrementOp, IncrementPosition, MapAccess, Name, SizeofArg, TypeExpr,
    TypeKind, UnaryOp,
};
use crate::script::diagnostic::Diagnostic;
use crate::script::span::Span;
use crate::script::token::TokenKind;

impl Parser<'_> {
    pub(super) fn parse_expr(&mut self) -> ParseResult<Expr> {
        self.enter()?;
        let expr = self.parse_ternary();
        self.leave();
        expr
    }

    fn parse_ternary(&mut self) -> ParseResult<Expr> {
        let condition = self.parse_binary(1)?;
        if self.at(&TokenKind::Question) {
            self.parse_ternary_branches(condition)
        } else {
            Ok(condition)
        }
    }

    fn parse_ternary_branches(&mut self, condition: Expr) -> ParseResult<Expr> {
        self.bump();
        let then_expr = self.parse_expr()?;
        self.expect(&TokenKind::Colon, "in the conditional expression `?:`")?;
        let else_expr = self.parse_expr()?;
        let span = condition.span.to(else_expr.span);
        let kind = ExprKind::Ternary {
            condition: Box::new(condition),
            then_expr: Box::new(then_expr),
            else_expr: Box::new(else_expr),
        };
        Ok(Expr { kind, span })
    }

    /// Parses a chain of binary operators whose precedence is at least
    /// `min_precedence`. Each operator in the chain nests the tree one level
    /// deeper (`a + b + c` is `(a + b) + c`), so each counts as a nesting
    /// level until the chain ends.
    fn parse_binary(&mut self, min_precedence: u8) -> ParseResult<Expr> {
        let mut left = self.parse_unary()?;
        let mut levels = 0;
        let result = loop {
            let Some((op, precedence)) = binary_op(self.peek()) else {
                break Ok(left);
            };
            if precedence < min_precedence {
                break Ok(left);
            }
            if let Err(reported) = self.enter() {
                break Err(reported);
            }
            levels += 1;
            self.bump();
            match self.parse_binary(precedence + 1) {
                Ok(right) => left = binary(op, left, right),
                Err(reported) => break Err(reported),
            }
        };
        self.depth -= levels;
        result
    }

    fn parse_unary(&mut self) -> ParseResult<Expr> {
        let op = match self.peek() {
            TokenKind::Bang => UnaryOp::Not,
            TokenKind::Tilde => UnaryOp::BitNot,
            TokenKind::Minus => UnaryOp::Negate,
            TokenKind::Plus => UnaryOp::Plus,
            TokenKind::Star => UnaryOp::Deref,
            TokenKind::Ampersand => UnaryOp::AddressOf,
            TokenKind::PlusPlus | TokenKind::MinusMinus => return self.parse_prefix_increment(),
            TokenKind::LeftParen if self.is_type_at(1) => return self.parse_cast(),
            _ => return self.parse_postfix(),
        };
        let start = self.bump().span;
        let operand = self.parse_nested_unary()?;
        let span = start.to(operand.span);
        Ok(Expr {
            kind: ExprKind::Unary {
                op,
                operand: Box::new(operand),
            },
            span,
        })
    }

    /// Parses the operand of a prefix operator or cast, one level deeper.
    fn parse_nested_unary(&mut self) -> ParseResult<Expr> {
        self.enter()?;
        let operand = self.parse_unary();
        self.leave();
        operand
    }

    fn parse_prefix_increment(&mut self) -> ParseResult<Expr> {
        let (op, target_use) = increment_op(self.peek());
        let start = self.bump().span;
        let operand = self.parse_nested_unary()?;
        let span = start.to(operand.span);
        let target = self.assign_target(operand, target_use)?;
        Ok(Expr {
            kind: ExprKind::Increment {
                target,
                op,
                position: IncrementPosition::Prefix,
            },
            span,
        })
    }

    fn parse_cast(&mut self) -> ParseResult<Expr> {
        let open = self.bump().span;
        let ty = self.parse_type()?;
        self.expect_closing(&TokenKind::RightParen, open, "after the cast type")?;
        let operand = self.parse_nested_unary()?;
        let span = open.to(operand.span);
        Ok(Expr {
            kind: ExprKind::Cast {
                ty,
                operand: Box::new(operand),
            },
            span,
        })
    }

    /// Parses a primary expression and the postfix operators after it. Like
    /// binary operators, each postfix operator counts as a nesting level
    /// until the chain ends.
    fn parse_postfix(&mut self) -> ParseResult<Expr> {
        let mut expr = self.parse_primary()?;
        let mut levels = 0;
        let result = loop {
            if !matches!(
                self.peek(),
                TokenKind::Dot
                    | TokenKind::Arrow
                    | TokenKind::LeftBracket
                    | TokenKind::PlusPlus
                    | TokenKind::MinusMinus
            ) {
                break Ok(expr);
            }
            if let Err(reported) = self.enter() {
                break Err(reported);
            }
            levels += 1;
            let wrapped = match self.peek() {
                TokenKind::Dot | TokenKind::Arrow => self.parse_field(expr),
                TokenKind::LeftBracket => self.parse_index(expr),
                _ => self.parse_postfix_increment(expr),
            };
            match wrapped {
                Ok(wrapped) => expr = wrapped,
                Err(reported) => break Err(reported),
            }
        };
        self.depth -= levels;
        result
    }

    fn parse_field(&mut self, base: Expr) -> ParseResult<Expr> {
        let arrow = self.at(&TokenKind::Arrow);
        self.bump();
        let field = self.parse_field_name(if arrow { "`->`" } else { "`.`" })?;
        let span = base.span.to(field.span);
        Ok(Expr {
            kind: ExprKind::Field {
                base: Box::new(base),
                field,
                arrow,
            },
            span,
        })
    }

    fn parse_index(&mut self, base: Expr) -> ParseResult<Expr> {
        let open = self.bump().span;
        let index = self.parse_expr()?;
        let close = self.expect_closing(&TokenKind::RightBracket, open, "after the index")?;
        let span = base.span.to(close);
        Ok(Expr {
            kind: ExprKind::Index {
                base: Box::new(base),
                index: Box::new(index),
            },
            span,
        })
    }

    fn parse_postfix_increment(&mut self, operand: Expr) -> ParseResult<Expr> {
        let (op, target_use) = increment_op(self.peek());
        let end = self.bump().span;
        let span = operand.span.to(end);
        let target = self.assign_target(operand, target_use)?;
        Ok(Expr {
            kind: ExprKind::Increment {
                target,
                op,
                position: IncrementPosition::Postfix,
            },
            span,
        })
    }

    /// Parses the name after `.` or `->`: an identifier, or a tuple index
    /// such as the `0` in `$t.0`.
    fn parse_field_name(&mut self, after: &str) -> ParseResult<Name> {
        match self.peek() {
            TokenKind::Identifier(_) | TokenKind::Integer(_) => {
                let text = self.token_text().to_owned();
                let span = self.bump().span;
                Ok(Name { text, span })
            }
            _ => Err(self.expected(&format!("a field name after {after}"))),
        }
    }

    fn parse_primary(&mut self) -> ParseResult<Expr> {
        let kind = match self.peek() {
            TokenKind::Integer(literal) => ExprKind::Integer(*literal),
            TokenKind::String(bytes) => ExprKind::String(bytes.clone()),
            TokenKind::True => ExprKind::Bool(true),
            TokenKind::False => ExprKind::Bool(false),
            TokenKind::Variable(name) => ExprKind::Variable(name.clone()),
            TokenKind::Positional(index) => ExprKind::Positional(*index),
            TokenKind::PositionalCount => ExprKind::PositionalCount,
            TokenKind::Identifier(_) => return self.parse_identifier(),
            TokenKind::Map(_) => return self.parse_map(),
            TokenKind::LeftParen => return self.parse_parenthesized(),
            TokenKind::Sizeof => return self.parse_sizeof(),
            TokenKind::Offsetof => return self.parse_offsetof(),
            _ => return Err(self.expected("an expression")),
        };
        let span = self.bump().span;
        Ok(Expr { kind, span })
    }

    /// Parses a name, or a call when `(` follows it.
    fn parse_identifier(&mut self) -> ParseResult<Expr> {
        let token = self.bump();
        let TokenKind::Identifier(text) = token.kind else {
            return Err(self.expected("an identifier"));
        };
        if self.at(&TokenKind::LeftParen) {
            return self.parse_call(Name {
                text,
                span: token.span,
            });
        }
        Ok(Expr {
            kind: ExprKind::Identifier(text),
            span: token.span,
        })
    }

    fn parse_call(&mut self, name: Name) -> ParseResult<Expr> {
        let open = self.bump().span;
        let mut args = Vec::new();
        let close = loop {
            if let Some(close) = self.eat(&TokenKind::RightParen) {
                break close;
            }
            args.push(self.parse_expr()?);
            if self.eat(&TokenKind::Comma).is_none() {
                let context = format!("or `,` in the arguments of `{}`", name.text);
                break self.expect_closing(&TokenKind::RightParen, open, &context)?;
            }
        };
        let span = name.span.to(close);
        Ok(Expr {
            kind: ExprKind::Call { name, args },
            span,
        })
    }

    /// Parses `@name` or `@name[key, ...]`.
    fn parse_map(&mut self) -> ParseResult<Expr> {
        let token = self.bump();
        let TokenKind::Map(name) = token.kind else {
            return Err(self.expected("a map"));
        };
        let Some(open) = self.eat(&TokenKind::LeftBracket) else {
            let span = token.span;
            return Ok(Expr {
                kind: ExprKind::Map(MapAccess {
                    name,
                    keys: Vec::new(),
                    span,
                }),
                span,
            });
        };
        if self.at(&TokenKind::RightBracket) {
            return Err(self.report_empty_map_key(&name, open));
        }
        let mut keys = Vec::new();
        loop {
            keys.push(self.parse_expr()?);
            if self.eat(&TokenKind::Comma).is_none() {
                break;
            }
        }
        let close =
            self.expect_closing(&TokenKind::RightBracket, open, "or `,` after the map key")?;
        let span = token.span.to(close);
        Ok(Expr {
            kind: ExprKind::Map(MapAccess { name, keys, span }),
            span,
        })
    }

    #[cold]
    fn report_empty_map_key(&mut self, name: &str, open: Span) -> Reported {
        let diagnostic = Diagnostic::error(open.to(self.span()), "empty map key").with_hint(
            format!("write `@{name}[key]`, or `@{name}` for a map without keys"),
        );
        self.report(diagnostic)
    }

    /// Parses `(expr)` or a tuple `(a, b, ...)`; a cast was ruled out.
    fn parse_parenthesized(&mut self) -> ParseResult<Expr> {
        let open = self.bump().span;
        let first = self.parse_expr()?;
        if self.at(&TokenKind::Comma) {
            return self.parse_tuple(open, first);
        }
        let close = self.expect_closing(&TokenKind::RightParen, open, "")?;
        Ok(Expr {
            span: open.to(close),
            ..first
        })
    }

    /// Parses the rest of a tuple after its first element.
    fn parse_tuple(&mut self, open: Span, first: Expr) -> ParseResult<Expr> {
        self.bump();
        let mut elements = vec![first];
        let close = loop {
            if let Some(close) = self.eat(&TokenKind::RightParen) {
                break close;
            }
            elements.push(self.parse_expr()?);
            if self.eat(&TokenKind::Comma).is_none() {
                break self.expect_closing(&TokenKind::RightParen, open, "or `,` in the tuple")?;
            }
        };
        Ok(Expr {
            kind: ExprKind::Tuple(elements),
            span: open.to(close),
        })
    }

    fn parse_sizeof(&mut self) -> ParseResult<Expr> {
        let start = self.bump().span;
        let open = self.expect(&TokenKind::LeftParen, "after `sizeof`")?;
        let arg = self.parse_sizeof_arg()?;
        let close =
            self.expect_closing(&TokenKind::RightParen, open, "after the `sizeof` argument")?;
        Ok(Expr {
            kind: ExprKind::Sizeof(Box::new(arg)),
            span: start.to(close),
        })
    }

    fn parse_offsetof(&mut self) -> ParseResult<Expr> {
        let start = self.bump().span;
        let open = self.expect(&TokenKind::LeftParen, "after `offsetof`")?;
        let arg = self.parse_sizeof_arg()?;
        self.expect(&TokenKind::Comma, "after the `offsetof` type")?;
        let mut fields = vec![self.parse_field_name("the `,` of `offsetof`")?];
        while self.eat(&TokenKind::Dot).is_some() {
            fields.push(self.parse_field_name("`.`")?);
        }
        let close =
            self.expect_closing(&TokenKind::RightParen, open, "after the `offsetof` field")?;
        Ok(Expr {
            kind: ExprKind::Offsetof {
                arg: Box::new(arg),
                fields,
            },
            span: start.to(close),
        })
    }

    fn parse_sizeof_arg(&mut self) -> ParseResult<SizeofArg> {
        if self.is_type_at(0) {
            Ok(SizeofArg::Type(self.parse_type()?))
        } else {
            Ok(SizeofArg::Expr(self.parse_expr()?))
        }
    }

    /// Returns true if a type starts `offset` tokens ahead. A type starts
    /// with `struct`, `union`, `enum` or a builtin type name such as
    /// `uint32`. Any other name is a type only when stars and a `)` follow
    /// it, as in `(pid_t *)`, because `(pid_t)` may be a parenthesized name.
    fn is_type_at(&self, offset: usize) -> bool {
        match self.peek_nth(offset) {
            TokenKind::Struct | TokenKind::Union | TokenKind::Enum => true,
            TokenKind::Identifier(name) => {
                let next = self.peek_nth(offset + 1);
                if builtin_type(name).is_some() {
                    return matches!(
                        next,
                        TokenKind::RightParen | TokenKind::Star | TokenKind::LeftBracket
                    );
                }
                let mut ahead = offset + 1;
                while self.peek_nth(ahead) == &TokenKind::Star {
                    ahead += 1;
                }
                ahead > offset + 1 && self.peek_nth(ahead) == &TokenKind::RightParen
            }
            _ => false,
        }
    }

    /// Parses a type: a base type, then any number of `*`, then any number
    /// of `[N]`.
    pub(super) fn parse_type(&mut self) -> ParseResult<TypeExpr> {
        let start = self.span();
        let kind = match self.peek().clone() {
            keyword @ (TokenKind::Struct | TokenKind::Union | TokenKind::Enum) => {
                self.bump();
                let TokenKind::Identifier(name) = self.peek().clone() else {
                    return Err(self.expected(&format!("a name after {keyword}")));
                };
                self.bump();
                match keyword {
                    TokenKind::Struct => TypeKind::Struct(name),
                    TokenKind::Union => TypeKind::Union(name),
                    _ => TypeKind::Enum(name),
                }
            }
            TokenKind::Identifier(name) => {
                self.bump();
                builtin_type(&name).unwrap_or(TypeKind::Named(name))
            }
            _ => return Err(self.expected("a type")),
        };
        let mut ty = TypeExpr {
            kind,
            span: Span::new(start.start, self.previous_end()),
        };

        while let Some(star) = self.eat(&TokenKind::Star) {
            ty = TypeExpr {
                span: ty.span.to(star),
                kind: TypeKind::Pointer(Box::new(ty)),
            };
        }
        while let Some(open) = self.eat(&TokenKind::LeftBracket) {
            let TokenKind::Integer(literal) = self.peek().clone() else {
                return Err(self.expected("an array length"));
            };
            self.bump();
            let close =
                self.expect_closing(&TokenKind::RightBracket, open, "after the array length")?;
            let kind = TypeKind::Array {
                element: Box::new(ty.clone()),
                length: literal.value,
            };
            ty = TypeExpr {
                kind,
                span: ty.span.to(close),
            };
        }
        Ok(ty)
    }
}

/// Returns the operator for a binary operator token and its precedence,
/// from 1 (`||`) to 10 (`*`).
fn binary_op(kind: &TokenKind) -> Option<(BinaryOp, u8)> {
    let op = match kind {
        TokenKind::OrOr => (BinaryOp::LogicalOr, 1),
        TokenKind::AndAnd => (BinaryOp::LogicalAnd, 2),
        TokenKind::Pipe => (BinaryOp::BitOr, 3),
        TokenKind::Caret => (BinaryOp::BitXor, 4),
        TokenKind::Ampersand => (BinaryOp::BitAnd, 5),
        TokenKind::EqualEqual => (BinaryOp::Eq, 6),
        TokenKind::NotEqual => (BinaryOp::Ne, 6),
        TokenKind::Less => (BinaryOp::Lt, 7),
        TokenKind::LessEqual => (BinaryOp::Le, 7),
        TokenKind::Greater => (BinaryOp::Gt, 7),
        TokenKind::GreaterEqual => (BinaryOp::Ge, 7),
        TokenKind::ShiftLeft => (BinaryOp::Shl, 8),
        TokenKind::ShiftRight => (BinaryOp::Shr, 8),
        TokenKind::Plus => (BinaryOp::Add, 9),
        TokenKind::Minus => (BinaryOp::Sub, 9),
        TokenKind::Star => (BinaryOp::Mul, 10),
        TokenKind::Slash => (BinaryOp::Div, 10),
        TokenKind::Percent => (BinaryOp::Mod, 10),
        _ => return None,
    };
    Some(op)
}

/// Returns the type a builtin type name stands for.
fn builtin_type(name: &str) -> Option<TypeKind> {
    let kind = match name {
        "int8" => TypeKind::Integer {
            signed: true,
            bits: 8,
        },
        "int16" => TypeKind::Integer {
            signed: true,
            bits: 16,
        },
        "int32" => TypeKind::Integer {
            signed: true,
            bits: 32,
        },
        "int64" => TypeKind::Integer {
            signed: true,
            bits: 64,
        },
        "uint8" => TypeKind::Integer {
            signed: false,
            bits: 8,
        },
        "uint16" => TypeKind::Integer {
            signed: false,
            bits: 16,
        },
        "uint32" => TypeKind::Integer {
            signed: false,
            bits: 32,
        },
        "uint64" => TypeKind::Integer {
            signed: false,
            bits: 64,
        },
        "bool" => TypeKind::Bool,
        "void" => TypeKind::Void,
        _ => return None,
    };
    Some(kind)
}

fn binary(op: BinaryOp, left: Expr, right: Expr) -> Expr {
    let span = left.span.to(right.span);
    Expr {
        kind: ExprKind::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        },
        span,
    }
}

/// Returns the operation of a `++` or `--` token.
fn increment_op(kind: &TokenKind) -> (IncrementOp, TargetUse) {
    if kind == &TokenKind::PlusPlus {
        (IncrementOp::Increment, TargetUse::Increment)
    } else {
        (IncrementOp::Decrement, TargetUse::Decrement)
    }
}
